//! The at-least-once consumer loop.
//!
//! A dedicated thread polls librdkafka and hands each message to the worker task of its
//! partition through a small bounded queue. A worker handles its partition's messages one at a
//! time, in order (so per-execution order holds), retrying retryable failures with backoff and
//! dead-lettering poison or exhausted ones. Only then does it store the message's offset, so the
//! auto-commit can only ever commit work that is durably done.
//!
//! Backpressure: when a partition's queue is full the partition is paused (polling goes on, so
//! the group session and rebalances stay healthy) and resumed when its worker catches up.
//!
//! Drain: on revocation, the revoked partitions' workers finish their in-flight message (bounded
//! by `kafka.revoke_drain_timeout_ms`) and offsets are committed before the partitions go. On
//! shutdown, every worker finishes its in-flight message (bounded by the caller's drain
//! deadline), offsets are committed and the consumer leaves the group. Queued messages that were
//! not started are simply not committed and will be delivered again.

mod context;
mod poll;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{EventProducer, Handler, KafkaError};
use crate::config::KafkaConfig;

/// What one consumer group consumes and how long it may take to stop.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub group_id: String,
    pub topics: Vec<String>,
    /// Used as the librdkafka client id and in logs.
    pub client_id: String,
    /// How long in-flight handlers may run after shutdown is requested.
    pub drain_timeout: Duration,
    /// For a consumer off the latency path: the broker holds each fetch up to this long to
    /// fill it, so a busy group fetches a few times a second instead of once per message
    /// (each fetch of a group subscribed to many partitions costs the broker CPU). `None`:
    /// fetches return as soon as a message is there.
    pub fetch_wait: Option<Duration>,
}

impl ConsumerSettings {
    /// A group consuming the topics of `event_types` under `topic_prefix`.
    pub fn for_event_types(
        group_id: &str,
        topic_prefix: &str,
        event_types: &[crate::events::EventType],
        client_id: &str,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            group_id: group_id.to_owned(),
            topics: event_types
                .iter()
                .map(|t| crate::events::topic_for(topic_prefix, *t))
                .collect(),
            client_id: client_id.to_owned(),
            drain_timeout,
            fetch_wait: None,
        }
    }
}

/// Runs a consumer group until `shutdown` is cancelled, then drains and returns.
///
/// A fatal handler error cancels `shutdown` itself (the process cannot go on) and is returned.
pub async fn run_consumer<H: Handler>(
    cfg: KafkaConfig,
    settings: ConsumerSettings,
    handler: Arc<H>,
    producer: EventProducer,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let runtime = tokio::runtime::Handle::current();
    let fatal = Arc::new(std::sync::Mutex::new(None::<String>));
    let fatal_seen = Arc::clone(&fatal);
    let group = settings.group_id.clone();
    let poll_result = tokio::task::spawn_blocking(move || {
        poll::poll_loop(
            cfg, settings, handler, producer, shutdown, fatal_seen, runtime,
        )
    })
    .await
    .map_err(KafkaError::PollThread)?;
    poll_result?;
    let fatal_message = fatal.lock().map(|guard| guard.clone()).unwrap_or_default();
    match fatal_message {
        Some(message) => Err(KafkaError::HandlerFatal { group, message }),
        None => Ok(()),
    }
}
