//! The consumer loop against the real Kafka broker: at-least-once delivery, retries, the
//! dead-letter topic and its headers, backpressure, and drain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Collector, queued_event, test_config, wait_until};
use rdkafka::consumer::{BaseConsumer, Consumer};
use shared::config::Config;
use shared::events::{Event, EventType, dead_letter_topic, topic_for};
use shared::kafka::dlq::DlqHeaders;
use shared::kafka::headers::HeaderList;
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shared::kafka::KafkaError>>,
}

impl Running {
    async fn stop(mut self) -> Result<(), shared::kafka::KafkaError> {
        self.shutdown.cancel();
        (&mut self.task).await.expect("consumer task joins")
    }
}

/// A failed assertion must not leave the poll thread running: the runtime's drop would wait for
/// it forever and the test would hang instead of failing.
impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start<H: Handler>(
    config: &Config,
    group: &str,
    topics: Vec<String>,
    handler: H,
    drain: Duration,
) -> Running {
    let shutdown = CancellationToken::new();
    let producer = EventProducer::new(&config.kafka, "test-dlq").unwrap();
    let settings = ConsumerSettings {
        group_id: group.to_owned(),
        topics,
        client_id: format!("test-{group}"),
        drain_timeout: drain,
        fetch_wait: None,
    };
    let task = tokio::spawn(run_consumer(
        config.kafka.clone(),
        settings,
        Arc::new(handler),
        producer,
        shutdown.clone(),
    ));
    Running { shutdown, task }
}

async fn setup() -> (Config, EventProducer, String) {
    let config = test_config();
    ensure_topics(&config.kafka).await.expect("topics created");
    let producer = EventProducer::new(&config.kafka, "test-producer").unwrap();
    let topic = topic_for(&config.kafka.topic_prefix, EventType::ExecutionQueued);
    (config, producer, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_with_the_configured_partitions() {
    let config = test_config();
    let created = ensure_topics(&config.kafka).await.unwrap();
    // A second call finds them all existing and succeeds.
    assert_eq!(ensure_topics(&config.kafka).await.unwrap(), created);
    let probe: BaseConsumer = shared::kafka::base_client_config(&config.kafka, "probe")
        .create()
        .unwrap();
    let metadata = probe.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let by_name: HashMap<&str, usize> = metadata
        .topics()
        .iter()
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    for topic in &created {
        assert_eq!(by_name.get(topic.as_str()), Some(&2), "{topic}");
    }
    assert!(created.contains(&format!("{}execution_requested", config.kafka.topic_prefix)));
    assert!(created.contains(&dead_letter_topic(&config.kafka.topic_prefix)));
}

/// Fails each event's first two attempts, then succeeds.
#[derive(Clone, Default)]
struct FlakyHandler {
    attempts: Arc<Mutex<HashMap<uuid::Uuid, u32>>>,
    done: Arc<Mutex<Vec<Event>>>,
}

impl Handler for FlakyHandler {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(event.event_id).or_default();
            *n += 1;
            *n
        };
        if attempt <= 2 {
            return Err(HandlerError::retryable(
                "store_unavailable",
                std::io::Error::other("simulated outage"),
            ));
        }
        self.done.lock().unwrap().push(event);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handlers_are_retried_and_nothing_is_lost_or_reordered() {
    let (config, producer, topic) = setup().await;
    let mut sent = Vec::new();
    for i in 0..24 {
        let event = queued_event(&format!("exec-{}", i % 4));
        producer.publish(&event).await.unwrap();
        sent.push(event);
    }
    let handler = FlakyHandler::default();
    let dlq = Collector::default();
    let group = format!("{}flaky", config.kafka.topic_prefix);
    let consumer = start(&config, &group, vec![topic], handler.clone(), WAIT);
    let dlq_consumer = start(
        &config,
        &format!("{group}-dlq"),
        vec![dead_letter_topic(&config.kafka.topic_prefix)],
        dlq.clone(),
        WAIT,
    );
    assert!(wait_until(WAIT, || handler.done.lock().unwrap().len() >= sent.len()).await);
    consumer.stop().await.unwrap();

    let done = handler.done.lock().unwrap().clone();
    let ids: HashSet<_> = done.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, sent.iter().map(|e| e.event_id).collect::<HashSet<_>>());
    assert!(handler.attempts.lock().unwrap().values().all(|n| *n == 3));
    // Per aggregate (= per key = per partition), events are handled in publish order.
    for aggregate in ["exec-0", "exec-1", "exec-2", "exec-3"] {
        let expected: Vec<_> = sent
            .iter()
            .filter(|e| e.aggregate_id == aggregate)
            .map(|e| e.event_id)
            .collect();
        let actual: Vec<_> = done
            .iter()
            .filter(|e| e.aggregate_id == aggregate)
            .map(|e| e.event_id)
            .collect();
        assert_eq!(actual, expected, "order of {aggregate}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    dlq_consumer.stop().await.unwrap();
    assert_eq!(dlq.len(), 0, "transient failures must not be dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_once_with_all_headers() {
    let (config, producer, topic) = setup().await;
    let mut headers = HeaderList::default();
    headers.push(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let poison = producer
        .send(&topic, Some(b"exec-poison"), Some(b"{not json"), &headers)
        .await
        .unwrap();
    let good = queued_event("exec-poison");
    producer.publish(&good).await.unwrap();

    let collected = Collector::default();
    let decoding = DecodingCollector(collected.clone());
    let dlq = Collector::default();
    let group = format!("{}poison", config.kafka.topic_prefix);
    let consumer = start(&config, &group, vec![topic.clone()], decoding, WAIT);
    let dlq_consumer = start(
        &config,
        &format!("{group}-dlq"),
        vec![dead_letter_topic(&config.kafka.topic_prefix)],
        dlq.clone(),
        WAIT,
    );
    assert!(wait_until(WAIT, || dlq.len() >= 1 && collected.len() >= 1).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.stop().await.unwrap();
    dlq_consumer.stop().await.unwrap();

    // The valid message behind the poison one was handled: the partition is not blocked.
    assert_eq!(
        collected.messages()[0].decode_event().unwrap().event_id,
        good.event_id
    );
    let dead = dlq.messages();
    assert_eq!(dead.len(), 1, "dead-lettered exactly once");
    let dead = &dead[0];
    assert_eq!(
        dead.payload.as_deref(),
        Some(&b"{not json"[..]),
        "payload unchanged"
    );
    assert_eq!(
        dead.key.as_deref(),
        Some(&b"exec-poison"[..]),
        "key unchanged"
    );
    let parsed = DlqHeaders::parse(dead).expect("all DLQ headers present");
    assert_eq!(parsed.original_topic, topic);
    assert_eq!(parsed.original_partition, poison.partition);
    assert_eq!(parsed.original_offset, poison.offset);
    assert_eq!(parsed.original_key.as_deref(), Some(&b"exec-poison"[..]));
    assert_eq!(parsed.error_class, "undecodable_event");
    assert_eq!(parsed.error_kind, "poison");
    assert!(
        parsed.error_message.contains("not a valid event"),
        "{}",
        parsed.error_message
    );
    assert_eq!(parsed.attempt, 1);
    assert_eq!(parsed.consumer_group, group);
    assert!((chrono::Utc::now() - parsed.failed_at).num_seconds() < 60);
    assert_eq!(
        dead.header_str("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "trace context kept"
    );
}

/// Records only messages that decode as events; poison surfaces through `decode_event`.
#[derive(Clone)]
struct DecodingCollector(Collector);

impl Handler for DecodingCollector {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        message.decode_event()?;
        self.0.handle(message).await
    }
}

/// Always fails retryably.
struct AlwaysFailing(Arc<AtomicU32>);

impl Handler for AlwaysFailing {
    async fn handle(&self, _message: &InboundMessage) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::retryable(
            "store_unavailable",
            std::io::Error::other("down for good"),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_lettered_with_the_attempt_count() {
    let (config, producer, topic) = setup().await;
    let event = queued_event("exec-exhausted");
    producer.publish(&event).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let dlq = Collector::default();
    let group = format!("{}exhausted", config.kafka.topic_prefix);
    let consumer = start(
        &config,
        &group,
        vec![topic.clone()],
        AlwaysFailing(calls.clone()),
        WAIT,
    );
    let dlq_consumer = start(
        &config,
        &format!("{group}-dlq"),
        vec![dead_letter_topic(&config.kafka.topic_prefix)],
        dlq.clone(),
        WAIT,
    );
    assert!(wait_until(WAIT, || dlq.len() >= 1).await);
    consumer.stop().await.unwrap();
    dlq_consumer.stop().await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        config.kafka.retry.max_attempts
    );
    let dead = &dlq.messages()[0];
    let headers = DlqHeaders::parse(dead).unwrap();
    assert_eq!(headers.error_kind, "retries_exhausted");
    assert_eq!(headers.error_class, "store_unavailable");
    assert_eq!(headers.attempt, config.kafka.retry.max_attempts);
    assert!(
        headers.error_message.contains("down for good"),
        "{}",
        headers.error_message
    );
    assert_eq!(
        Event::from_json(dead.payload.as_deref()).unwrap().event_id,
        event.event_id
    );
}

/// Blocks forever on every message, after saying so.
struct Stuck(tokio::sync::mpsc::Sender<uuid::Uuid>);

impl Handler for Stuck {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.0.send(event.event_id).await.ok();
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_handler_never_finished_is_delivered_again() {
    let (config, producer, topic) = setup().await;
    let event = queued_event("exec-stuck");
    producer.publish(&event).await.unwrap();
    let group = format!("{}stuck", config.kafka.topic_prefix);

    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let first = start(
        &config,
        &group,
        vec![topic.clone()],
        Stuck(tx),
        Duration::from_millis(500),
    );
    let received = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, event.event_id);
    // Shut down while the side effect is still in flight: the drain deadline passes, the handler
    // is abandoned, and its offset must not be committed.
    first.stop().await.unwrap();

    let collected = Collector::default();
    let second = start(&config, &group, vec![topic], collected.clone(), WAIT);
    assert!(
        wait_until(WAIT, || collected.len() >= 1).await,
        "message was lost"
    );
    second.stop().await.unwrap();
    assert_eq!(
        collected.messages()[0].decode_event().unwrap().event_id,
        event.event_id
    );
}

/// Sleeps a little per message so the one-slot partition queue fills and the partition pauses.
#[derive(Clone)]
struct Slow(Collector, Duration);

impl Slow {
    fn new(delay_ms: u64) -> Self {
        Self(Collector::default(), Duration::from_millis(delay_ms))
    }
}

impl Handler for Slow {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        tokio::time::sleep(self.1).await;
        self.0.handle(message).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_queue_pauses_and_resumes_without_loss() {
    let (mut config, producer, topic) = setup().await;
    config.kafka.partition_queue_capacity = 1;
    let mut sent = Vec::new();
    for _ in 0..60 {
        let event = queued_event("exec-backpressure");
        producer.publish(&event).await.unwrap();
        sent.push(event.event_id);
    }
    let slow = Slow::new(5);
    let group = format!("{}slow", config.kafka.topic_prefix);
    let consumer = start(&config, &group, vec![topic], slow.clone(), WAIT);
    assert!(wait_until(WAIT, || slow.0.len() >= sent.len()).await);
    consumer.stop().await.unwrap();
    let got: Vec<_> = slow
        .0
        .messages()
        .iter()
        .map(|m| m.decode_event().unwrap().event_id)
        .collect();
    assert_eq!(got, sent, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_of_the_group() {
    let (config, producer, topic) = setup().await;
    let group = format!("{}restart", config.kafka.topic_prefix);
    let first_batch: Vec<_> = (0..10)
        .map(|i| queued_event(&format!("exec-{i}")))
        .collect();
    for event in &first_batch {
        producer.publish(event).await.unwrap();
    }
    let first = Collector::default();
    let consumer = start(&config, &group, vec![topic.clone()], first.clone(), WAIT);
    assert!(wait_until(WAIT, || first.len() >= 10).await);
    consumer.stop().await.unwrap();

    let second_batch: Vec<_> = (0..5).map(|i| queued_event(&format!("exec-{i}"))).collect();
    for event in &second_batch {
        producer.publish(event).await.unwrap();
    }
    let second = Collector::default();
    let consumer = start(&config, &group, vec![topic], second.clone(), WAIT);
    assert!(wait_until(WAIT, || second.len() >= 5).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.stop().await.unwrap();
    let ids: HashSet<_> = second
        .messages()
        .iter()
        .map(|m| m.decode_event().unwrap().event_id)
        .collect();
    assert_eq!(
        ids,
        second_batch.iter().map(|e| e.event_id).collect(),
        "a clean stop commits what was done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_drains_revoked_partitions_so_nothing_is_lost_or_redone() {
    let (mut config, producer, topic) = setup().await;
    // Enough partitions that the second member takes some over from the first.
    config.kafka.partitions = 4;
    let topic = {
        let name = format!("{topic}_rebalance");
        shared::kafka::ensure_topics_named(&config.kafka, std::slice::from_ref(&name))
            .await
            .unwrap();
        name
    };
    let mut sent = HashSet::new();
    for i in 0..120 {
        let event = queued_event(&format!("exec-{}", i % 16));
        let payload = event.to_json().unwrap();
        producer
            .send(
                &topic,
                Some(event.aggregate_id.as_bytes()),
                Some(&payload),
                &HeaderList::default(),
            )
            .await
            .unwrap();
        sent.insert(event.event_id);
    }
    let group = format!("{}rebalance", config.kafka.topic_prefix);
    let seen_a = Slow::new(60);
    let seen_b = Slow::new(60);
    let a = start(&config, &group, vec![topic.clone()], seen_a.clone(), WAIT);
    assert!(wait_until(WAIT, || seen_a.0.len() >= 10).await);
    // The second member joins mid-run: the first must finish its in-flight messages and commit
    // before its partitions move.
    let b = start(&config, &group, vec![topic], seen_b.clone(), WAIT);
    let total = || seen_a.0.len() + seen_b.0.len();
    assert!(
        wait_until(Duration::from_secs(60), || total() >= sent.len()).await,
        "lost messages"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let ids: Vec<_> = seen_a
        .0
        .messages()
        .iter()
        .chain(seen_b.0.messages().iter())
        .map(|m| m.decode_event().unwrap().event_id)
        .collect();
    assert!(
        seen_b.0.len() > 0,
        "the second member never received a partition"
    );
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), sent);
    assert_eq!(ids.len(), sent.len(), "a drained rebalance redoes nothing");
}
