//! Set-up shared by the replay tests: an isolated config, stored events, sessions, the engine,
//! and a reader of what a replay published.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_replay::{EVENTS_COLLECTION, EventStore, ReplayEngine};
use mongodb::Database;
use mongodb::bson::doc;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use shared::config::Config;
use shared::events::{Event, EventMetadata, EventPayload};
use shared::kafka::{EventProducer, Handler, InboundMessage, ensure_topics};
use shared::replay::{
    ReplayFilter, ReplaySession, ReplayState, ReplayTarget, SESSIONS_COLLECTION, state_bson,
};
use shared::testing::test_config;
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub config: Config,
    pub db: Database,
    pub producer: EventProducer,
}

impl Env {
    pub async fn new() -> Env {
        let mut config = test_config().unwrap();
        config.event_store.replay_lease_seconds = 3;
        config.event_store.replay_poll_interval_ms = 50;
        config.event_store.replay_batch_size = 3;
        ensure_topics(&config.kafka).await.unwrap();
        let db = shared::mongo::connect(&config.mongo, "replay-test")
            .await
            .unwrap();
        shared::mongo::ensure_indexes(&db, EVENTS_COLLECTION, EventStore::indexes(1))
            .await
            .unwrap();
        let producer = EventProducer::new(&config.kafka, "replay-test").unwrap();
        Env {
            config,
            db,
            producer,
        }
    }

    /// Stores `events` through the real event store handler, as if consumed from Kafka.
    pub async fn store(&self, events: &[Event]) {
        let store = EventStore::new(&self.db);
        for (offset, event) in events.iter().enumerate() {
            let message = InboundMessage {
                topic: shared::events::topic_for(
                    &self.config.kafka.topic_prefix,
                    event.event_type(),
                ),
                partition: 0,
                offset: offset as i64,
                key: Some(event.aggregate_id.clone().into_bytes()),
                payload: Some(event.to_json().unwrap()),
                headers: vec![],
                timestamp_ms: None,
            };
            store.handle(&message).await.unwrap();
        }
    }

    /// A session in state `running`, as the admin API leaves it after `start`.
    pub async fn running_session(
        &self,
        filter: ReplayFilter,
        target: ReplayTarget,
        speed: f64,
        allow_side_effects: bool,
    ) -> ReplaySession {
        let total = self
            .db
            .collection::<mongodb::bson::Document>(EVENTS_COLLECTION)
            .count_documents(filter.to_query())
            .await
            .unwrap();
        let mut session = ReplaySession::new(
            filter,
            target,
            speed,
            allow_side_effects,
            "admin".into(),
            total,
            Utc::now(),
        );
        session.state = ReplayState::Running;
        self.db
            .collection::<mongodb::bson::Document>(SESSIONS_COLLECTION)
            .insert_one(session.to_document().unwrap())
            .await
            .unwrap();
        session
    }

    pub fn sessions(&self) -> mongodb::Collection<ReplaySession> {
        self.db.collection(SESSIONS_COLLECTION)
    }

    pub async fn session(&self, id: &str) -> ReplaySession {
        self.sessions()
            .find_one(doc! { "_id": id })
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn set_state(&self, id: &str, state: ReplayState) {
        self.sessions()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "state": state_bson(state) } },
            )
            .await
            .unwrap();
    }

    /// Starts an engine with its own owner name.
    pub fn engine(&self, name: &str) -> Engine {
        let engine = ReplayEngine::new(
            &self.db,
            self.producer.clone(),
            self.config.kafka.clone(),
            &self.config.event_store,
            format!("{name}-{}", uuid::Uuid::now_v7()),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(engine.run(stop.clone()));
        Engine { stop, task }
    }

    pub async fn completed(&self, id: &str) -> ReplaySession {
        self.wait_for(id, Duration::from_secs(30), |s| {
            s.state == ReplayState::Completed
        })
        .await
    }

    /// What session `id` published to its own topic.
    pub async fn read_session_topic(&self, id: &str, expected: usize) -> Vec<Read> {
        let topic = shared::replay::session_topic(&self.config.kafka.topic_prefix, id);
        read_topic(&self.config, &topic, expected).await
    }

    /// Waits until the session satisfies `done`, then returns it.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&ReplaySession) -> bool,
    ) -> ReplaySession {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let session = self.session(id).await;
            if done(&session) {
                return session;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session never reached the expected state: {session:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn cleanup(self) {
        self.db.drop().await.unwrap();
        shared::testing::delete_topics_with_prefix(
            &self.config.kafka,
            &self.config.kafka.topic_prefix,
        )
        .await
        .unwrap();
    }
}

pub struct Engine {
    stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Engine {
    /// Shuts the engine down as SIGTERM would, and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// One event of execution `execution_id`, `offset_ms` after `base`.
pub fn event_at(
    execution_id: &str,
    user: &str,
    payload: EventPayload,
    base: DateTime<Utc>,
    offset_ms: i64,
) -> Event {
    let mut event = Event::new(
        execution_id,
        payload,
        EventMetadata::new("test", Some(user.into())),
    );
    event.occurred_at = base + chrono::Duration::milliseconds(offset_ms);
    event
}

/// `n` output events of one execution, `gap_ms` apart.
pub fn outputs(execution_id: &str, n: u64, gap_ms: i64, base: DateTime<Utc>) -> Vec<Event> {
    (0..n)
        .map(|seq| {
            event_at(
                execution_id,
                "user-1",
                EventPayload::ExecutionOutput(shared::events::ExecutionOutput {
                    stream: shared::events::OutputStream::Stdout,
                    seq,
                    data: format!("line {seq}\n"),
                }),
                base,
                gap_ms * seq as i64,
            )
        })
        .collect()
}

/// A message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub event: Event,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Read {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads `topic` from the start until `expected` messages arrived and nothing more comes for
/// a short while (so duplicates would be seen), or `timeout` passes.
pub async fn read_topic(config: &Config, topic: &str, expected: usize) -> Vec<Read> {
    let consumer: StreamConsumer =
        shared::kafka::base_client_config(&config.kafka, "replay-reader")
            .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Once the expected count is in, linger briefly: a duplicate would arrive meanwhile.
        let wait = if read.len() >= expected {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                read.push(Read {
                    key: message.key().map(<[u8]>::to_vec),
                    event: Event::from_json(message.payload()).unwrap(),
                    headers,
                });
            }
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => return read,
        }
    }
}
