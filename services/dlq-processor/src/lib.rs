//! Kiln's `dlq-processor`: retries, parks and re-drives dead-lettered messages.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes three components: the dead-letter topic's consumer
//! ([`receive`]), which stores each failed message once in `dlq_messages`; the [`scheduler`],
//! which re-publishes due messages to their original topic and parks exhausted ones; and a gauge
//! of messages per status. Admins list, retry and discard through the api (`shared::dlq`).

pub mod announce;
pub mod receive;
pub mod scheduler;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mongodb::Database;
use shared::app::{Components, ServiceContext};
use shared::config::Config;
use shared::dlq::DlqStore;
use shared::events::dead_letter_topic;
use shared::kafka::{ConsumerSettings, EventProducer, run_consumer};
use tokio_util::sync::CancellationToken;

use crate::receive::DeadLetterHandler;
use crate::scheduler::Scheduler;
use crate::store::ProcessorStore;

pub const SERVICE_NAME: &str = "dlq-processor";

/// The processor's clients; cheap to clone.
#[derive(Debug, Clone)]
pub struct Processor {
    pub config: Config,
    pub store: ProcessorStore,
    pub producer: EventProducer,
}

impl Processor {
    pub fn new(config: Config, db: &Database, producer: EventProducer) -> Self {
        Self {
            config,
            store: ProcessorStore::new(DlqStore::new(db)),
            producer,
        }
    }

    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        self.store
            .shared
            .ensure_indexes()
            .await
            .context("dlq_messages indexes")
    }

    pub fn scheduler(&self) -> Scheduler {
        Scheduler {
            store: self.store.clone(),
            producer: self.producer.clone(),
            config: self.config.dlq.clone(),
        }
    }

    /// The dead-letter topic's consumer: runs until `shutdown`, then drains.
    pub async fn run_consumer(
        self,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut kafka = self.config.kafka.clone();
        // Only MongoDB failures are retryable here, and they are retried until MongoDB is back:
        // dead-lettering a message of the dead-letter topic would loop it into itself.
        kafka.retry.max_attempts = u32::MAX;
        let settings = ConsumerSettings {
            group_id: self.config.services.dlq_processor.consumer_group.clone(),
            topics: vec![dead_letter_topic(&kafka.topic_prefix)],
            client_id: SERVICE_NAME.to_owned(),
            drain_timeout,
            fetch_wait: None,
        };
        let handler = Arc::new(DeadLetterHandler {
            store: self.store.clone(),
            producer: self.producer.clone(),
            config: self.config.dlq.clone(),
            topic_prefix: kafka.topic_prefix.clone(),
        });
        run_consumer(kafka, settings, handler, self.producer, shutdown)
            .await
            .context("dead-letter consumer")
    }
}

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let processor = Processor::new(
        context.config.clone(),
        &context.infra.mongo,
        context.infra.producer.clone(),
    );
    processor.ensure_indexes().await?;
    let shutdown = context.lifecycle.shutdown_token();
    let drain = context.lifecycle.drain_timeout();
    let scheduler = processor.scheduler();
    Ok(Components::default()
        .spawn("dlq-scheduler", scheduler.clone().run(shutdown.clone()))
        .spawn("dlq-gauge", scheduler.run_gauge(shutdown.clone()))
        .spawn("dlq-consumer", processor.run_consumer(shutdown, drain)))
}
