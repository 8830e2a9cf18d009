//! Kiln's `saga-orchestrator`: Queue, concurrency slots and execution sagas with their compensations.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes two components:
//! - the consumer ([`handler`]): requests, cancels and terminal events move sagas between states;
//! - the scheduler ([`scheduler`]): on the replica holding the lease ([`lease`]), grants slots,
//!   sweeps sagas whose executor was lost ([`sweeper`]) and re-publishes unsent events
//!   ([`outbox`]).
//!
//! All state lives in the `sagas` collection, so a restart picks up where the last one stopped.

pub mod events;
pub mod handler;
pub mod lease;
pub mod metrics;
pub mod outbox;
pub mod queue;
pub mod scheduler;
pub mod slots;
pub mod store;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mongodb::Database;
use shared::app::{Components, ServiceContext};
use shared::config::Config;
use shared::events::EventType;
use shared::kafka::{ConsumerSettings, EventProducer, run_consumer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::queue::ReadyQueue;
use crate::store::SagaStore;

pub const SERVICE_NAME: &str = "saga-orchestrator";

/// The topics the orchestrator consumes.
pub const CONSUMED: &[EventType] = &[
    EventType::ExecutionRequested,
    EventType::ExecutionCancelRequested,
    EventType::ExecutionCompleted,
    EventType::ExecutionFailed,
    EventType::ExecutionTimeout,
    EventType::ExecutionCancelled,
];

/// What the orchestrator takes from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub global_concurrency: usize,
    pub per_user_concurrency: usize,
    pub schedule_interval: Duration,
    pub sweep_interval: Duration,
    pub executor_grace: Duration,
    /// How long the scheduler lease lasts without renewal (a dead leader is replaced after it).
    pub lease_ttl: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        let schedule_interval = Duration::from_millis(config.saga.schedule_interval_ms.max(1));
        Self {
            global_concurrency: config.limits.global_concurrency,
            per_user_concurrency: config.limits.per_user_concurrency,
            schedule_interval,
            sweep_interval: Duration::from_millis(config.saga.sweep_interval_ms.max(1)),
            executor_grace: Duration::from_secs(config.saga.executor_grace_seconds),
            lease_ttl: (schedule_interval * 10).max(Duration::from_secs(5)),
        }
    }
}

/// The orchestrator's shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub store: SagaStore,
    pub producer: EventProducer,
    pub db: Database,
    pub settings: Settings,
    /// Wakes the scheduler when a saga was queued or released a slot.
    pub wake: Arc<Notify>,
    /// Queued sagas in scheduling order (see [`queue`]).
    pub queue: Arc<ReadyQueue>,
    /// Slots this replica's handlers freed, for the scheduler's bound (see [`slots`]).
    pub freed: Arc<slots::Freed>,
}

impl Orchestrator {
    pub fn new(db: Database, producer: EventProducer, settings: Settings) -> Self {
        Self {
            store: SagaStore::new(&db),
            producer,
            db,
            settings,
            wake: Arc::new(Notify::new()),
            queue: Arc::new(ReadyQueue::default()),
            freed: Arc::new(slots::Freed::default()),
        }
    }

    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        SagaStore::ensure_indexes(&self.db)
            .await
            .context("creating saga indexes")
    }

    /// The consumer component: runs until `shutdown`, then drains.
    pub async fn run_consumer(
        self,
        config: Config,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        let settings = ConsumerSettings::for_event_types(
            &config.services.saga_orchestrator.consumer_group,
            &config.kafka.topic_prefix,
            CONSUMED,
            SERVICE_NAME,
            drain_timeout,
        );
        let producer = self.producer.clone();
        let handler = Arc::new(handler::SagaHandler::new(self));
        run_consumer(config.kafka, settings, handler, producer, shutdown)
            .await
            .context("saga consumer")
    }

    /// The scheduler component (leader only; followers wait for the lease).
    pub async fn run_scheduler(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        scheduler::Scheduler::new(self).run(shutdown).await;
        Ok(())
    }
}

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let orchestrator = Orchestrator::new(
        context.infra.mongo.clone(),
        context.infra.producer.clone(),
        Settings::from_config(&context.config),
    );
    orchestrator.ensure_indexes().await?;
    let shutdown = context.lifecycle.shutdown_token();
    let drain = context.lifecycle.drain_timeout();
    Ok(Components::default()
        .spawn(
            "saga-consumer",
            orchestrator
                .clone()
                .run_consumer(context.config, shutdown.clone(), drain),
        )
        .spawn("saga-scheduler", orchestrator.run_scheduler(shutdown)))
}
