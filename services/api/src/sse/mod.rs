//! `GET /api/v1/executions/{id}/events`: Server-Sent Events for one execution, exactly as the
//! pipeline contract says: a `snapshot` (the execution view, id `0-0`) unless `Last-Event-ID`
//! is given, then every entry of the execution's Redis stream from that id on, named by its
//! `type`, with the stream entry id as the SSE id; the stream ends after `result`.

mod limiter;
mod tail;

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{KeepAlive, Sse};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use limiter::{StreamLimiter, StreamSlot};

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::executions::routes::visible;
use crate::state::AppState;

/// The SSE id of the result sent from MongoDB when the stream has none. A client that resumes
/// from it is served from the start of the stream again, without a snapshot.
pub const MONGO_RESULT_ID: &str = "mongo";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// `Last-Event-ID`, as the stream id to read after; `None` starts with a snapshot.
fn resume_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    if value.to_str().is_ok_and(|v| v.trim() == MONGO_RESULT_ID) {
        return Ok(Some("0-0".to_owned()));
    }
    last_stream_id(headers)
}

/// `Last-Event-ID` when it is a Redis stream id (`<ms>-<seq>`).
pub(crate) fn last_stream_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let valid = value
        .split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must be an id this stream sent",
        ));
    }
    Ok(Some(value.to_owned()))
}

/// A stream slot of `user_id` (the concurrent-stream cap) and a dedicated Redis connection:
/// `XREAD BLOCK` holds its connection for the whole wait, so each stream gets its own, whose
/// response timeout must outlast the block.
pub(crate) async fn open_stream(
    state: &AppState,
    user_id: &str,
) -> Result<(StreamSlot, MultiplexedConnection), ApiError> {
    let slot = state.streams.acquire(user_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "too many open event streams; close one first",
        )
    })?;
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(tail::IDLE_BLOCK + Duration::from_secs(5)));
    let conn = state
        .redis_client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((slot, conn))
}

/// Comment heartbeats keep proxies from closing a quiet stream.
pub(crate) fn keep_alive(state: &AppState) -> KeepAlive {
    let heartbeat = Duration::from_secs(state.api.sse_heartbeat_seconds.max(1));
    KeepAlive::new().interval(heartbeat).text("heartbeat")
}

/// `text/event-stream`. Events: `snapshot` (an [`ExecutionView`], id `0-0`, only without
/// `Last-Event-ID`), `status` ({status, event_type, at}), `output` (an `ExecutionOutput`) and
/// finally `result` (an `ExecutionView`), each with its stream id as `id`; comment heartbeats.
/// Reconnect with `Last-Event-ID` to resume without a gap.
#[utoipa::path(get, path = "/api/v1/executions/{id}/events", tag = "executions",
    params(("id" = String, Path, description = "execution id"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "the event stream"), (status = "4XX", body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let doc = visible(&state, &user, &id).await?;
    let resume = resume_from(&headers)?;
    let (slot, conn) = open_stream(&state, &user.id).await?;
    let keep_alive = keep_alive(&state);
    let stream = tail::Tail::new(state, conn, doc, resume, slot).into_stream();
    Ok(Sse::new(stream).keep_alive(keep_alive))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn last_event_id_rules() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_from(&headers).unwrap(), None);
        headers.insert("last-event-id", HeaderValue::from_static("1700000000000-3"));
        assert_eq!(
            resume_from(&headers).unwrap().as_deref(),
            Some("1700000000000-3")
        );
        headers.insert("last-event-id", HeaderValue::from_static("mongo"));
        assert_eq!(resume_from(&headers).unwrap().as_deref(), Some("0-0"));
        headers.insert("last-event-id", HeaderValue::from_static("nope"));
        assert!(resume_from(&headers).is_err());
    }
}
