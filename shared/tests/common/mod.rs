//! Helpers for tests against the real Kafka, MongoDB and Redis started by `./deploy.sh infra`.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::{Arc, Mutex};

use shared::config::Config;
use shared::events::{Event, EventMetadata, EventPayload, ExecutionQueued};
use shared::kafka::{Handler, HandlerError, InboundMessage};

pub fn test_config() -> Config {
    shared::testing::test_config().expect("config.toml loads")
}

pub fn queued_event(aggregate: &str) -> Event {
    Event::new(
        aggregate,
        EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
        EventMetadata::new("test", Some("user-1".into())),
    )
}

pub use shared::testing::wait_until;

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
