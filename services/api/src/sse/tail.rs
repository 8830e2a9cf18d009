//! Follows one execution's Redis stream and turns its entries into SSE events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use shared::executions::{ExecutionDoc, ExecutionView, stream};
use tokio::time::Instant;

use super::{MONGO_RESULT_ID, StreamSlot};
use crate::executions::store;
use crate::state::AppState;

/// How long one `XREAD` waits while nothing happens; MongoDB is checked after each quiet wait.
pub(super) const IDLE_BLOCK: Duration = Duration::from_secs(5);
/// Once MongoDB says the execution is terminal, the stream is polled this often...
const TERMINAL_BLOCK: Duration = Duration::from_millis(250);
/// ...for at most this long: result-processor stores the result first and appends the `result`
/// entry right after, so a longer silence means the entry is not coming (e.g. the key expired).
const RESULT_GRACE: Duration = Duration::from_secs(2);
const BATCH: usize = 100;

pub(super) struct Tail {
    state: AppState,
    conn: MultiplexedConnection,
    key: String,
    execution_id: String,
    last_id: String,
    pending: VecDeque<Event>,
    done: bool,
    terminal_since: Option<Instant>,
    _slot: StreamSlot,
}

fn view_event(name: &str, id: &str, doc: &ExecutionDoc) -> Option<Event> {
    let json = serde_json::to_string(&ExecutionView::from(doc)).ok()?;
    Some(Event::default().event(name).id(id).data(json))
}

fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

impl Tail {
    pub(super) fn new(
        state: AppState,
        conn: MultiplexedConnection,
        doc: ExecutionDoc,
        resume: Option<String>,
        slot: StreamSlot,
    ) -> Self {
        let mut pending = VecDeque::new();
        if resume.is_none()
            && let Some(snapshot) = view_event("snapshot", "0-0", &doc)
        {
            pending.push_back(snapshot);
        }
        Self {
            key: stream::key(&state.redis_key_prefix, &doc.id),
            state,
            conn,
            execution_id: doc.id.clone(),
            last_id: resume.unwrap_or_else(|| "0-0".to_owned()),
            pending,
            done: false,
            // Already finished: poll briefly rather than wait a full idle block.
            terminal_since: doc.status.is_terminal().then(Instant::now),
            _slot: slot,
        }
    }

    pub(super) fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut tail| async move {
            let event = tail.next_event().await?;
            Some((Ok(event), tail))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.poll().await {
                // The client reconnects with Last-Event-ID and resumes without a gap.
                tracing::warn!(execution_id = %self.execution_id, %error, "event stream aborted");
                return None;
            }
        }
    }

    async fn poll(&mut self) -> Result<(), crate::error::ApiError> {
        let block = if self.terminal_since.is_some() {
            TERMINAL_BLOCK
        } else {
            IDLE_BLOCK
        };
        let options = StreamReadOptions::default()
            .count(BATCH)
            .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.key], &[&self.last_id], &options)
            .await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        if !entries.is_empty() {
            for entry in entries {
                if !is_stream_id(&entry.id) {
                    continue;
                }
                self.last_id.clone_from(&entry.id);
                let kind: Option<String> = entry.get(stream::TYPE_FIELD);
                let data: Option<String> = entry.get(stream::DATA_FIELD);
                let (Some(kind), Some(data)) = (kind, data) else {
                    tracing::warn!(execution_id = %self.execution_id, id = %entry.id, "stream entry without type or data skipped");
                    continue;
                };
                if ![stream::STATUS, stream::OUTPUT, stream::RESULT].contains(&kind.as_str()) {
                    tracing::warn!(execution_id = %self.execution_id, kind, "unknown stream entry type skipped");
                    continue;
                }
                // A bare CR would end an SSE line; JSON never needs one outside whitespace.
                let data = if data.contains('\r') {
                    data.replace('\r', "")
                } else {
                    data
                };
                self.pending
                    .push_back(Event::default().event(&kind).id(&entry.id).data(data));
                if kind == stream::RESULT {
                    self.done = true;
                    break;
                }
            }
            return Ok(());
        }
        self.check_mongo().await
    }

    /// After a quiet wait: if the execution is terminal and its `result` entry does not come
    /// (the stream is gone, or the grace passed), answer with the result from MongoDB.
    async fn check_mongo(&mut self) -> Result<(), crate::error::ApiError> {
        let Some(doc) = store::get(&self.state.db, &self.execution_id).await? else {
            self.done = true;
            return Ok(());
        };
        if !doc.status.is_terminal() {
            return Ok(());
        }
        let since = *self.terminal_since.get_or_insert_with(Instant::now);
        let stream_exists: bool = self.conn.exists(&self.key).await?;
        if !stream_exists || since.elapsed() >= RESULT_GRACE {
            if let Some(event) = view_event(stream::RESULT, MONGO_RESULT_ID, &doc) {
                self.pending.push_back(event);
            }
            self.done = true;
        }
        Ok(())
    }
}
