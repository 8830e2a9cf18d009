//! A harness for the orchestrator against the real Kafka and MongoDB: isolated topics and
//! database, the orchestrator's components in-process, and a collector of its output events.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Document, doc};
use saga_orchestrator::{Orchestrator, Settings};
use shared::config::Config;
use shared::events::{
    Event, EventMetadata, EventPayload, EventType, ExecutionCancelRequested, ExecutionFinished,
    ExecutionLimits, ExecutionOutcome, ExecutionRequested, topic_for,
};
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(45);

/// The orchestrator's output topics the tests watch.
const WATCHED: &[EventType] = &[
    EventType::ExecutionQueued,
    EventType::ExecutionScheduled,
    EventType::ExecutionCancelled,
    EventType::ExecutionFailed,
    EventType::CreatePodCommand,
    EventType::DeletePodCommand,
    EventType::SagaCompleted,
];

#[derive(Default, Clone)]
pub struct Collector {
    pub seen: Arc<Mutex<Vec<Event>>>,
    /// Every delivery, duplicates included: (type, execution id).
    pub deliveries: Arc<Mutex<Vec<(EventType, String)>>>,
}

impl Handler for Collector {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.deliveries
            .lock()
            .unwrap()
            .push((event.event_type(), event.aggregate_id.clone()));
        // Consumers de-duplicate on event_id (at-least-once): so does this one.
        let mut seen = self.seen.lock().unwrap();
        if !seen.iter().any(|e| e.event_id == event.event_id) {
            seen.push(event);
        }
        Ok(())
    }
}

impl Collector {
    pub fn of(&self, event_type: EventType) -> Vec<Event> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event_type() == event_type)
            .cloned()
            .collect()
    }

    pub fn for_id(&self, event_type: EventType, id: &str) -> Vec<Event> {
        self.of(event_type)
            .into_iter()
            .filter(|e| e.aggregate_id == id)
            .collect()
    }

    /// How many times an event of this type for this execution was delivered.
    pub fn deliveries(&self, event_type: EventType, id: &str) -> usize {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, i)| *t == event_type && i == id)
            .count()
    }

    /// Distinct executions with an event of this type, in arrival order.
    pub fn ids(&self, event_type: EventType) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for event in self.of(event_type) {
            if !ids.contains(&event.aggregate_id) {
                ids.push(event.aggregate_id);
            }
        }
        ids
    }
}

pub struct Running {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Harness {
    pub config: Config,
    pub db: Database,
    pub producer: EventProducer,
    pub collected: Collector,
    collector: Option<Running>,
}

impl Harness {
    pub async fn new(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = shared::testing::test_config().unwrap();
        config.saga.schedule_interval_ms = 100;
        config.saga.sweep_interval_ms = 200;
        tweak(&mut config);
        ensure_topics(&config.kafka).await.unwrap();
        let db = shared::mongo::connect(&config.mongo, "saga-test")
            .await
            .unwrap();
        let producer = EventProducer::new(&config.kafka, "saga-test").unwrap();
        let collected = Collector::default();
        let shutdown = CancellationToken::new();
        let settings = ConsumerSettings {
            group_id: format!("collector-{}", uuid::Uuid::now_v7()),
            topics: WATCHED
                .iter()
                .map(|t| topic_for(&config.kafka.topic_prefix, *t))
                .collect(),
            client_id: "saga-test-collector".into(),
            drain_timeout: Duration::from_secs(5),
            fetch_wait: None,
        };
        let task = tokio::spawn({
            let (config, collected, producer, shutdown) = (
                config.kafka.clone(),
                collected.clone(),
                producer.clone(),
                shutdown.clone(),
            );
            async move {
                run_consumer(config, settings, Arc::new(collected), producer, shutdown).await?;
                Ok(())
            }
        });
        Self {
            config,
            db,
            producer,
            collected,
            collector: Some(Running {
                shutdown,
                tasks: vec![task],
            }),
        }
    }

    /// Starts the orchestrator's consumer and scheduler, as `build` does.
    pub async fn start(&self) -> Running {
        let orchestrator = Orchestrator::new(
            self.db.clone(),
            self.producer.clone(),
            Settings::from_config(&self.config),
        );
        orchestrator.ensure_indexes().await.unwrap();
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(orchestrator.clone().run_consumer(
            self.config.clone(),
            shutdown.clone(),
            Duration::from_secs(10),
        ));
        let scheduler = tokio::spawn(orchestrator.run_scheduler(shutdown.clone()));
        Running {
            shutdown,
            tasks: vec![consumer, scheduler],
        }
    }

    pub async fn publish(&self, event: &Event) {
        self.producer.publish(event).await.unwrap();
    }

    /// Publishes a request and returns it (its aggregate id is the execution id).
    pub async fn request(&self, user: &str, priority: u8, timeout_seconds: u64) -> Event {
        let event = request(user, priority, timeout_seconds);
        self.publish(&event).await;
        event
    }

    pub async fn cancel(&self, id: &str) {
        let event = Event::new(
            id,
            EventPayload::ExecutionCancelRequested(ExecutionCancelRequested {
                requested_by: "user-x".into(),
            }),
            EventMetadata::new("api", Some("user-x".into())),
        );
        self.publish(&event).await;
    }

    pub async fn complete(&self, id: &str) {
        self.publish(&completed(id)).await;
    }

    pub async fn saga(&self, id: &str) -> Option<Document> {
        self.db
            .collection::<Document>("sagas")
            .find_one(doc! { "_id": id })
            .await
            .unwrap()
    }

    pub async fn state(&self, id: &str) -> Option<String> {
        self.saga(id)
            .await
            .map(|d| d.get_str("state").unwrap().to_owned())
    }

    pub async fn count(&self, filter: Document) -> u64 {
        self.db
            .collection::<Document>("sagas")
            .count_documents(filter)
            .await
            .unwrap()
    }

    pub async fn active(&self) -> u64 {
        self.count(doc! { "state": { "$in": ["scheduled", "running"] } })
            .await
    }

    /// Polls an async condition every 50 ms until it holds or `WAIT` passes.
    pub async fn eventually<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if condition().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    pub async fn cleanup(mut self) {
        if let Some(collector) = self.collector.take() {
            collector.stop().await;
        }
        self.db.drop().await.ok();
        let prefix = self.config.kafka.topic_prefix.clone();
        shared::testing::delete_topics_with_prefix(&self.config.kafka, &prefix)
            .await
            .ok();
    }
}

pub fn request(user: &str, priority: u8, timeout_seconds: u64) -> Event {
    let id = uuid::Uuid::now_v7().to_string();
    Event::new(
        id,
        EventPayload::ExecutionRequested(ExecutionRequested {
            script: "print('hi ✓')".into(),
            lang: "python".into(),
            lang_version: "3.11".into(),
            stdin: None,
            priority,
            limits: ExecutionLimits {
                timeout_seconds,
                memory_mb: 256,
                max_processes: 64,
                max_output_bytes: 1 << 20,
                max_file_bytes: 1 << 24,
            },
            agent: None,
        }),
        EventMetadata::new("api", Some(user.to_owned())),
    )
}

pub fn completed(id: &str) -> Event {
    Event::new(
        id,
        EventPayload::ExecutionCompleted(ExecutionFinished {
            outcome: ExecutionOutcome {
                stdout: "hi\n".into(),
                exit_code: Some(0),
                ..ExecutionOutcome::default()
            },
        }),
        EventMetadata::new("pod-monitor", None),
    )
}
