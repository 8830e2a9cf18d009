//! dlq-processor against real Kafka and MongoDB: a poison message is dead-lettered once, stored
//! once (also when its dead-letter copy is delivered again), re-published on its schedule with its
//! original key, parked after its last attempt, and delivered after a manual retry once the
//! consumer accepts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlq_processor::Processor;
use dlq_processor::scheduler::Scheduler;
use mongodb::Database;
use mongodb::bson::{self, doc};
use shared::config::{Config, DlqPolicy};
use shared::dlq::{self, DlqMessage, DlqStatus, DlqStore, HistoryAction};
use shared::events::{Event, EventType, dead_letter_topic, topic_for};
use shared::kafka::dlq::{DlqHeaders, ERROR_CLASS};
use shared::kafka::headers::HeaderList;
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use shared::testing::{test_config, wait_until_async};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: u32 = 2;

/// A consumer that rejects every message as poison until it is "fixed".
#[derive(Default, Clone)]
struct Picky {
    fixed: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<InboundMessage>>>,
    accepted: Arc<Mutex<Vec<InboundMessage>>>,
}

impl Handler for Picky {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(message.clone());
        if self.fixed.load(Ordering::SeqCst) {
            self.accepted.lock().unwrap().push(message.clone());
            return Ok(());
        }
        message.decode_event().map(|_| ())
    }
}

/// Collects the `dlq_message_*` events.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Handler for Events {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(message.decode_event()?);
        Ok(())
    }
}

impl Events {
    fn count(&self, event_type: EventType, dlq_id: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event_type() == event_type && e.aggregate_id == dlq_id)
            .count()
    }
}

struct Harness {
    config: Config,
    db: Database,
    store: DlqStore,
    scheduler: Scheduler,
    producer: EventProducer,
    picky: Picky,
    events: Events,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn consumer<H: Handler>(
    config: &Config,
    topics: Vec<String>,
    handler: H,
    producer: &EventProducer,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let settings = ConsumerSettings {
        group_id: format!("dlq-test-{}", uuid::Uuid::now_v7()),
        topics,
        client_id: "dlq-test".into(),
        drain_timeout: Duration::from_secs(5),
        fetch_wait: None,
    };
    let (kafka, producer, shutdown) = (config.kafka.clone(), producer.clone(), shutdown.clone());
    tokio::spawn(async move {
        run_consumer(kafka, settings, Arc::new(handler), producer, shutdown).await?;
        Ok(())
    })
}

/// A failed assertion must not leave the consumers' poll threads running: the runtime would wait
/// for them forever instead of reporting the failure.
impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    /// The first re-publish waits `initial_backoff_ms` (jittered), then twice that.
    async fn new(initial_backoff_ms: u64) -> Self {
        let mut config = test_config().unwrap();
        let policy = DlqPolicy {
            max_attempts: MAX_ATTEMPTS,
            initial_backoff_ms,
            max_backoff_ms: initial_backoff_ms * 2,
            max_age_seconds: 600,
        };
        config.dlq.results = policy.clone();
        config.dlq.default = policy;
        config.dlq.scan_interval_ms = 100;
        ensure_topics(&config.kafka).await.unwrap();
        let db = shared::mongo::connect(&config.mongo, "dlq-test")
            .await
            .unwrap();
        let producer = EventProducer::new(&config.kafka, "dlq-test").unwrap();
        let shutdown = CancellationToken::new();
        let prefix = config.kafka.topic_prefix.clone();
        let picky = Picky::default();
        let events = Events::default();
        let processor = Processor::new(config.clone(), &db, producer.clone());
        processor.ensure_indexes().await.unwrap();
        let scheduler = processor.scheduler();
        let tasks = vec![
            consumer(
                &config,
                vec![topic_for(&prefix, EventType::ResultStored)],
                picky.clone(),
                &producer,
                &shutdown,
            ),
            consumer(
                &config,
                [
                    EventType::DlqMessageReceived,
                    EventType::DlqMessageRetried,
                    EventType::DlqMessageParked,
                ]
                .iter()
                .map(|t| topic_for(&prefix, *t))
                .collect(),
                events.clone(),
                &producer,
                &shutdown,
            ),
            tokio::spawn(scheduler.clone().run(shutdown.clone())),
            tokio::spawn(processor.run_consumer(shutdown.clone(), Duration::from_secs(5))),
        ];
        Self {
            config,
            store: DlqStore::new(&db),
            db,
            scheduler,
            producer,
            picky,
            events,
            shutdown,
            tasks,
        }
    }

    fn topic(&self, event_type: EventType) -> String {
        topic_for(&self.config.kafka.topic_prefix, event_type)
    }

    /// The one stored message from the `result_stored` topic with this key.
    async fn only_message(&self, key: &str) -> Option<DlqMessage> {
        let query = dlq::DlqQuery {
            original_topic: Some(self.topic(EventType::ResultStored)),
            ..Default::default()
        };
        let mut found = self
            .store
            .list(&query, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.key.as_ref().is_some_and(|k| k.bytes == key.as_bytes()));
        let first = found.next();
        assert!(found.next().is_none(), "{key} is stored more than once");
        first
    }

    async fn wait_for(&self, what: &str, key: &str, check: impl Fn(&DlqMessage) -> bool) {
        let held = wait_until_async(WAIT, || async {
            self.only_message(key).await.is_some_and(|m| check(&m))
        })
        .await;
        assert!(
            held,
            "timed out waiting for {what}: {:#?}",
            self.only_message(key).await
        );
    }

    fn deliveries(&self, key: &str) -> Vec<InboundMessage> {
        self.picky
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.key.as_deref() == Some(key.as_bytes()))
            .cloned()
            .collect()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            task.await.unwrap().unwrap();
        }
        // Best effort: a leftover test topic or database is harmless.
        shared::testing::delete_topics_with_prefix(
            &self.config.kafka,
            &self.config.kafka.topic_prefix,
        )
        .await
        .ok();
        self.db.drop().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_is_retried_parked_and_redriven_after_a_fix() {
    let h = Harness::new(300).await;
    let key = "exec-poison";
    let topic = h.topic(EventType::ResultStored);
    let mut original = HeaderList::default();
    original.push(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    h.producer
        .send(
            &topic,
            Some(key.as_bytes()),
            Some(b"{not an event"),
            &original,
        )
        .await
        .unwrap();

    // Stored once, with the original key, payload and headers, under the results policy.
    h.wait_for("the message to be stored", key, |_| true).await;
    let stored = h.only_message(key).await.unwrap();
    assert_eq!(stored.original_topic, topic);
    assert_eq!(stored.payload.as_ref().unwrap().bytes, b"{not an event");
    assert_eq!(stored.event_type.as_deref(), Some("result_stored"));
    assert_eq!(stored.policy, "results");
    assert_eq!(stored.error_class, "undecodable_event");
    assert!(stored.headers.iter().any(|h| h.name == "traceparent"));
    assert!(stored.headers.iter().any(|h| h.name == ERROR_CLASS));

    // Re-published MAX_ATTEMPTS times on its schedule, then parked.
    h.wait_for("the message to be parked", key, |m| {
        m.status == DlqStatus::Parked
    })
    .await;
    let parked = h.only_message(key).await.unwrap();
    assert_eq!(parked.attempts, MAX_ATTEMPTS);
    let actions: Vec<(HistoryAction, u32)> = parked
        .history
        .iter()
        .map(|e| (e.action, e.attempt))
        .collect();
    assert_eq!(
        actions,
        vec![
            (HistoryAction::Failed, 0),
            (HistoryAction::Retried, 1),
            (HistoryAction::Failed, 1),
            (HistoryAction::Retried, 2),
            (HistoryAction::Failed, 2),
        ],
        "{parked:#?}"
    );
    // The original delivery plus one per attempt, each with the original key and trace context
    // and the attempt number.
    let deliveries = h.deliveries(key);
    assert_eq!(deliveries.len(), 1 + MAX_ATTEMPTS as usize);
    for (n, delivery) in deliveries.iter().enumerate().skip(1) {
        assert_eq!(
            delivery.header_str(dlq::ATTEMPT_HEADER),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            delivery.header_str(dlq::ID_HEADER),
            Some(parked.id.as_str())
        );
        assert!(delivery.header("traceparent").is_some());
        assert!(delivery.header(ERROR_CLASS).is_none());
    }
    // Retries are spaced by the backoff (at least half the 300 ms initial wait).
    let gaps: Vec<i64> = parked
        .history
        .windows(2)
        .filter(|w| w[1].action == HistoryAction::Retried)
        .map(|w| w[1].at.timestamp_millis() - w[0].at.timestamp_millis())
        .collect();
    assert!(gaps.iter().all(|g| *g >= 150), "{gaps:?}");

    // The first dead-letter copy delivered again is not stored a second time. A later message
    // with the same key (so the same dead-letter partition) proves the copy was consumed.
    let first_copy: Vec<(String, Vec<u8>)> = parked
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.bytes.clone()))
        .collect();
    let dlq_topic = dead_letter_topic(&h.config.kafka.topic_prefix);
    h.producer
        .send(
            &dlq_topic,
            Some(key.as_bytes()),
            Some(b"{not an event"),
            &HeaderList(first_copy.clone()),
        )
        .await
        .unwrap();
    let mut marker = DlqHeaders::parse(&InboundMessage {
        topic: dlq_topic.clone(),
        partition: 0,
        offset: 0,
        key: None,
        payload: None,
        headers: first_copy,
        timestamp_ms: None,
    })
    .unwrap();
    marker.original_topic = h.topic(EventType::ResultFailed);
    h.producer
        .send(
            &dlq_topic,
            Some(key.as_bytes()),
            Some(b"marker"),
            &marker.apply(&[]),
        )
        .await
        .unwrap();
    let marker_stored = wait_until_async(WAIT, || async {
        h.store
            .list(
                &dlq::DlqQuery {
                    original_topic: Some(h.topic(EventType::ResultFailed)),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert!(marker_stored);
    let still = h
        .store
        .list(
            &dlq::DlqQuery {
                original_topic: Some(topic.clone()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(still.len(), 1);
    assert_eq!(
        still[0].version, parked.version,
        "redelivery changed the document"
    );

    // The fix ships; an admin retries; the consumer now accepts it.
    h.picky.fixed.store(true, Ordering::SeqCst);
    let requested = h.store.retry_now(&parked.id, "admin").await.unwrap();
    assert_eq!(requested.status, DlqStatus::Pending);
    h.wait_for("the manual retry", key, |m| {
        m.status == DlqStatus::Retried && m.attempts == MAX_ATTEMPTS + 1
    })
    .await;
    let accepted = wait_until_async(WAIT, || async {
        h.picky
            .accepted
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.key.as_deref() == Some(key.as_bytes()))
    })
    .await;
    assert!(accepted, "the re-driven message was not delivered");
    let accepted = h.picky.accepted.lock().unwrap()[0].clone();
    assert_eq!(
        accepted.header_str(dlq::ATTEMPT_HEADER),
        Some((MAX_ATTEMPTS + 1).to_string().as_str())
    );

    // Each step was announced.
    let id = parked.id.clone();
    let announced = wait_until_async(WAIT, || async {
        h.events.count(EventType::DlqMessageReceived, &id) == 1
            && h.events.count(EventType::DlqMessageRetried, &id) == MAX_ATTEMPTS as usize + 1
            && h.events.count(EventType::DlqMessageParked, &id) == 1
    })
    .await;
    assert!(announced, "dlq events missing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discarding_keeps_the_reason_and_stops_retries() {
    // The first re-publish is a minute away, so the admin acts on a pending message.
    let h = Harness::new(60_000).await;
    let key = "exec-discard";
    h.producer
        .send(
            &h.topic(EventType::ResultStored),
            Some(key.as_bytes()),
            Some(b"garbage"),
            &HeaderList::default(),
        )
        .await
        .unwrap();
    h.wait_for("the message to be stored", key, |_| true).await;
    let stored = h.only_message(key).await.unwrap();
    let discarded = h
        .store
        .discard(&stored.id, "payload from a retired client", "root")
        .await
        .unwrap();
    assert_eq!(discarded.status, DlqStatus::Discarded);
    assert_eq!(
        discarded.discard_reason.as_deref(),
        Some("payload from a retired client")
    );
    let last = discarded.history.last().unwrap();
    assert_eq!(last.action, HistoryAction::Discarded);
    assert_eq!(last.by.as_deref(), Some("root"));
    // A discarded message can be neither retried nor discarded again.
    assert!(matches!(
        h.store.retry_now(&stored.id, "root").await,
        Err(dlq::ActionError::WrongStatus(DlqStatus::Discarded))
    ));
    assert!(matches!(
        h.store.retry_now("no-such-id", "root").await,
        Err(dlq::ActionError::NotFound)
    ));
    // Even when its time comes, a discarded message is not re-published.
    h.store
        .collection
        .update_one(
            doc! { "_id": &stored.id },
            doc! { "$set": { "next_attempt_at": bson::DateTime::now() } },
        )
        .await
        .unwrap();
    h.scheduler
        .drain_due(&CancellationToken::new())
        .await
        .unwrap();
    let after = h.only_message(key).await.unwrap();
    assert_eq!(after.status, DlqStatus::Discarded);
    assert_eq!(after.attempts, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_without_dead_letter_headers_is_parked_and_never_looped_back() {
    let h = Harness::new(300).await;
    let dlq_topic = dead_letter_topic(&h.config.kafka.topic_prefix);
    h.producer
        .send(
            &dlq_topic,
            Some(b"stray".as_slice()),
            Some(b"who sent this"),
            &HeaderList::default(),
        )
        .await
        .unwrap();
    let query = dlq::DlqQuery {
        original_topic: Some(dlq_topic.clone()),
        ..Default::default()
    };
    let stored = wait_until_async(WAIT, || async {
        h.store.list(&query, 10).await.unwrap().len() == 1
    })
    .await;
    assert!(stored, "the stray message was not stored");
    let stray = h.store.list(&query, 10).await.unwrap().remove(0);
    assert_eq!(stray.status, DlqStatus::Parked);
    assert_eq!(stray.error_class, "malformed_dead_letter");
    assert_eq!(stray.payload.as_ref().unwrap().bytes, b"who sent this");

    // A manual retry has nowhere to send it: it is parked again instead of re-published.
    h.store.retry_now(&stray.id, "root").await.unwrap();
    let parked_again = wait_until_async(WAIT, || async {
        let m = h.store.get(&stray.id).await.unwrap().unwrap();
        m.status == DlqStatus::Parked
            && m.history
                .last()
                .is_some_and(|e| e.action == HistoryAction::Parked)
            && m.history
                .iter()
                .any(|e| e.action == HistoryAction::RetryRequested)
    })
    .await;
    let after = h.store.get(&stray.id).await.unwrap().unwrap();
    assert!(parked_again, "{after:#?}");
    assert_eq!(after.attempts, 0);
    assert_eq!(h.store.list(&query, 10).await.unwrap().len(), 1);
    h.stop().await;
}
