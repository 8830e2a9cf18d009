//! Helpers for tests against the real Kafka, MongoDB and Redis started by `./deploy.sh infra`.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::config::Config;
use shared::events::{Event, EventMetadata, EventPayload, ExecutionQueued};
use shared::kafka::{Handler, HandlerError, InboundMessage};
use uuid::Uuid;

/// The repository's `config.toml` plus `KILN__*` overrides, isolated for one test: its own topic
/// prefix (fresh topics), 2 partitions, and fast retries.
pub fn test_config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let mut config = Config::load(&path).expect("config.toml loads");
    // A child process of a test inherits its parent's prefix and database through these.
    config.kafka.topic_prefix = std::env::var("KILN_TEST_PREFIX")
        .unwrap_or_else(|_| format!("t{}_", Uuid::now_v7().simple()));
    config.kafka.partitions = 2;
    config.kafka.session_timeout_ms = 6_000;
    config.kafka.revoke_drain_timeout_ms = 2_000;
    config.kafka.retry.initial_backoff_ms = 10;
    config.kafka.retry.max_backoff_ms = 50;
    config.kafka.retry.max_attempts = 5;
    config.mongo.database = std::env::var("KILN_TEST_DATABASE")
        .unwrap_or_else(|_| format!("kiln_test_{}", Uuid::now_v7().simple()));
    config
}

pub fn queued_event(aggregate: &str) -> Event {
    Event::new(
        aggregate,
        EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
        EventMetadata::new("test", Some("user-1".into())),
    )
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// A handler that records every message it sees.
#[derive(Default, Clone)]
pub struct Collector {
    pub seen: Arc<Mutex<Vec<InboundMessage>>>,
}

impl Collector {
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn messages(&self) -> Vec<InboundMessage> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for Collector {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(message.clone());
        Ok(())
    }
}
