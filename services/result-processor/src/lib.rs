//! Kiln's `result-processor`: Stores terminal results exactly once and fans live events out through Redis.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes one consumer ([`handler`]) that projects each
//! execution's status into MongoDB ([`store`]) and appends its events to the execution's Redis
//! stream ([`stream`]).

pub mod handler;
pub mod metrics;
pub mod notify;
pub mod store;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mongodb::Database;
use redis::aio::ConnectionManager;
use shared::app::{Components, ServiceContext};
use shared::config::Config;
use shared::events::EventType;
use shared::kafka::{ConsumerSettings, EventProducer, run_consumer};
use tokio_util::sync::CancellationToken;

use crate::store::ExecutionStore;
use crate::stream::StreamWriter;

pub const SERVICE_NAME: &str = "result-processor";

/// The topics the result-processor consumes.
pub const CONSUMED: &[EventType] = &[
    EventType::ExecutionQueued,
    EventType::ExecutionScheduled,
    EventType::ExecutionStarted,
    EventType::ExecutionOutput,
    EventType::ExecutionCompleted,
    EventType::ExecutionFailed,
    EventType::ExecutionTimeout,
    EventType::ExecutionCancelled,
];

/// The processor's clients; cheap to clone.
#[derive(Debug, Clone)]
pub struct Processor {
    pub store: ExecutionStore,
    pub stream: StreamWriter,
    pub producer: EventProducer,
    pub notifier: notify::Notifier,
    /// Settles agent runs' reservations against the users' daily budgets.
    pub spend: shared::agents::SpendLedger,
    /// The consumer loop's `kafka.retry.max_attempts`: after it, a message is dead-lettered.
    pub max_attempts: u32,
}

impl Processor {
    pub fn new(
        config: &Config,
        db: &Database,
        redis: ConnectionManager,
        producer: EventProducer,
    ) -> Self {
        Self {
            store: ExecutionStore::new(db),
            stream: StreamWriter::new(redis.clone(), config.redis.key_prefix.clone()),
            producer,
            spend: shared::agents::SpendLedger::new(redis.clone(), config.redis.key_prefix.clone()),
            notifier: notify::Notifier::new(db, redis, config.redis.key_prefix.clone()),
            max_attempts: config.kafka.retry.max_attempts,
        }
    }

    /// The consumer component: runs until `shutdown`, then drains.
    pub async fn run_consumer(
        self,
        config: Config,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        let settings = ConsumerSettings::for_event_types(
            &config.services.result_processor.consumer_group,
            &config.kafka.topic_prefix,
            CONSUMED,
            SERVICE_NAME,
            drain_timeout,
        );
        let producer = self.producer.clone();
        let handler = Arc::new(handler::ResultHandler::new(self));
        run_consumer(config.kafka, settings, handler, producer, shutdown)
            .await
            .context("result consumer")
    }
}

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    notify::Notifier::ensure_indexes(&context.infra.mongo).await?;
    let processor = Processor::new(
        &context.config,
        &context.infra.mongo,
        context.infra.redis.clone(),
        context.infra.producer.clone(),
    );
    let shutdown = context.lifecycle.shutdown_token();
    let drain = context.lifecycle.drain_timeout();
    Ok(Components::default().spawn(
        "result-consumer",
        processor.run_consumer(context.config, shutdown, drain),
    ))
}
