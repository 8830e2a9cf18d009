//! `GET /api/v1/notifications/stream`: first an `unread` event (`{count}`), then every new
//! notification as a `notification` event whose `id` is its entry id in the user's Redis stream,
//! so a client reconnecting with `Last-Event-ID` gets exactly what it missed (as long as the
//! stream still holds it; the list endpoint has the rest). The stream never ends by itself.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use shared::notifications::stream as user_stream;

use super::{UnreadCount, unread_count};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::sse::{StreamSlot, keep_alive, last_stream_id, open_stream};
use crate::state::AppState;

/// How long one `XREAD` blocks; heartbeats are sent meanwhile by the SSE layer.
const BLOCK_MS: usize = 5_000;
const BATCH: usize = 100;

/// Events: `unread` (`{count}`, no id), then `notification` (a `Notification`, `id` = its
/// stream id); comment heartbeats. Reconnect with `Last-Event-ID` to resume without a gap.
/// A user may hold a bounded number of streams open at once (429 `too_many_streams`).
#[utoipa::path(get, path = "/api/v1/notifications/stream", tag = "notifications",
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "the event stream"), (status = "4XX", body = ErrorBody)))]
pub(super) async fn notification_stream(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let resume = last_stream_id(&headers)?;
    let (slot, mut conn) = open_stream(&state, &user.id).await?;
    let key = user_stream::key(&state.redis_key_prefix, &user.id);
    // Where to start when not resuming: after the newest entry, read before the count, so a
    // notification arriving in between is counted and also sent (never lost).
    let last_id = match resume {
        Some(id) => id,
        None => {
            let newest: StreamRangeReply = conn.xrevrange_count(&key, "+", "-", 1).await?;
            newest
                .ids
                .first()
                .map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone())
        }
    };
    let count = unread_count(&state, &user.id).await?;
    let unread = serde_json::to_string(&UnreadCount { count }).map_err(ApiError::internal)?;
    let follower = Follower {
        conn,
        key,
        last_id,
        pending: VecDeque::from([Event::default().event("unread").data(unread)]),
        _slot: slot,
    };
    Ok(Sse::new(follower.into_stream()).keep_alive(keep_alive(&state)))
}

struct Follower {
    conn: MultiplexedConnection,
    key: String,
    last_id: String,
    pending: VecDeque<Event>,
    _slot: StreamSlot,
}

impl Follower {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut follower| async move {
            let event = follower.next_event().await?;
            Some((Ok(event), follower))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if let Err(error) = self.poll().await {
                // The client reconnects with Last-Event-ID and resumes without a gap.
                tracing::warn!(%error, "notification stream aborted");
                return None;
            }
        }
    }

    async fn poll(&mut self) -> Result<(), redis::RedisError> {
        let options = StreamReadOptions::default().count(BATCH).block(BLOCK_MS);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.key], &[&self.last_id], &options)
            .await?;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            self.last_id.clone_from(&entry.id);
            let Some(data) = entry.get::<String>(user_stream::DATA_FIELD) else {
                continue;
            };
            // A bare CR would end an SSE line; JSON never needs one outside whitespace.
            let data = data.replace('\r', "");
            self.pending.push_back(
                Event::default()
                    .event("notification")
                    .id(&entry.id)
                    .data(data),
            );
        }
        Ok(())
    }
}
