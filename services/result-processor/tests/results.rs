//! The result-processor against real Kafka, MongoDB and Redis: status projection, the terminal
//! result stored exactly once, `result_stored` once, and the Redis stream without duplicates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use mongodb::Database;
use mongodb::bson::{self, doc};
use result_processor::Processor;
use shared::config::Config;
use shared::events::{
    ErrorType, Event, EventMetadata, EventPayload, EventType, ExecutionFinished, ExecutionLimits,
    ExecutionOutcome, ExecutionOutput, ExecutionQueued, ExecutionRequested, ExecutionScheduled,
    ExecutionStarted, ExecutionStatus, ExecutionTimedOut, OutputStream, ResourceUsage,
    dead_letter_topic, topic_for,
};
use shared::executions::{EXECUTIONS_COLLECTION, ExecutionDoc, ExecutionView, stream};
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(45);

#[derive(Default, Clone)]
struct Collector {
    seen: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Handler for Collector {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.seen
            .lock()
            .unwrap()
            .push((message.topic.clone(), event));
        Ok(())
    }
}

impl Collector {
    fn of(&self, event_type: EventType, id: &str) -> Vec<Event> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(topic, e)| {
                !topic.ends_with("dead_letter_queue")
                    && e.event_type() == event_type
                    && e.aggregate_id == id
            })
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn dead_lettered(&self, id: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(topic, e)| topic.ends_with("dead_letter_queue") && e.aggregate_id == id)
            .count()
    }
}

struct Harness {
    config: Config,
    db: Database,
    redis: redis::aio::ConnectionManager,
    producer: EventProducer,
    collected: Collector,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    async fn new() -> Self {
        let config = shared::testing::test_config().unwrap();
        ensure_topics(&config.kafka).await.unwrap();
        let db = shared::mongo::connect(&config.mongo, "rp-test")
            .await
            .unwrap();
        let redis = shared::redis::connect(&config.redis).await.unwrap();
        let producer = EventProducer::new(&config.kafka, "rp-test").unwrap();
        let collected = Collector::default();
        let shutdown = CancellationToken::new();
        let prefix = config.kafka.topic_prefix.clone();
        let settings = ConsumerSettings {
            group_id: format!("collector-{}", uuid::Uuid::now_v7()),
            topics: vec![
                topic_for(&prefix, EventType::ResultStored),
                topic_for(&prefix, EventType::ResultFailed),
                dead_letter_topic(&prefix),
            ],
            client_id: "rp-test-collector".into(),
            drain_timeout: Duration::from_secs(5),
            fetch_wait: None,
        };
        let collector = tokio::spawn({
            let (kafka, handler, producer, shutdown) = (
                config.kafka.clone(),
                Arc::new(collected.clone()),
                producer.clone(),
                shutdown.clone(),
            );
            async move {
                run_consumer(kafka, settings, handler, producer, shutdown).await?;
                Ok(())
            }
        });
        let processor = Processor::new(&config, &db, redis.clone(), producer.clone());
        let consumer = tokio::spawn(processor.run_consumer(
            config.clone(),
            shutdown.clone(),
            Duration::from_secs(10),
        ));
        Self {
            config,
            db,
            redis,
            producer,
            collected,
            shutdown,
            tasks: vec![collector, consumer],
        }
    }

    /// Inserts the execution as the api does.
    async fn insert(&self, id: &str) -> ExecutionDoc {
        let request = ExecutionRequested {
            script: "print('héllo')".into(),
            lang: "python".into(),
            lang_version: "3.11".into(),
            stdin: None,
            priority: 0,
            limits: ExecutionLimits {
                timeout_seconds: 10,
                memory_mb: 256,
                max_processes: 64,
                max_output_bytes: 1 << 20,
                max_file_bytes: 1 << 24,
            },
            agent: None,
        };
        let mut doc = ExecutionDoc::queued(
            id.to_owned(),
            "user-1".into(),
            &request,
            None,
            bson::DateTime::now(),
        );
        // With the api's announcement mark, which the first projection drops.
        doc.outbox = Some("{}".into());
        doc.outbox_at = Some(bson::DateTime::now());
        self.db
            .collection::<ExecutionDoc>(EXECUTIONS_COLLECTION)
            .insert_one(&doc)
            .await
            .unwrap();
        doc
    }

    async fn get(&self, id: &str) -> Option<ExecutionDoc> {
        self.db
            .collection::<ExecutionDoc>(EXECUTIONS_COLLECTION)
            .find_one(doc! { "_id": id })
            .await
            .unwrap()
    }

    async fn publish(&self, event: &Event) {
        self.producer.publish(event).await.unwrap();
    }

    /// The stream's entries as (type, data).
    async fn entries(&self, id: &str) -> Vec<(String, serde_json::Value)> {
        let mut conn = self.redis.clone();
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream::key(&self.config.redis.key_prefix, id))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        raw.into_iter()
            .map(|(_, fields)| {
                let kind = fields[fields.iter().position(|f| f == "type").unwrap() + 1].clone();
                let data = &fields[fields.iter().position(|f| f == "data").unwrap() + 1];
                (kind, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    async fn eventually<F, Fut>(&self, what: &str, mut condition: F)
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

    /// Publishes `event` and waits until the stream has `len` entries.
    async fn step(&self, event: &Event, id: &str, len: usize) {
        self.publish(event).await;
        self.eventually(&format!("{len} stream entries"), || async {
            self.entries(id).await.len() >= len
        })
        .await;
    }

    async fn cleanup(mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            task.await.unwrap().unwrap();
        }
        self.db.drop().await.ok();
        let prefix = self.config.kafka.topic_prefix.clone();
        shared::testing::delete_topics_with_prefix(&self.config.kafka, &prefix)
            .await
            .ok();
    }
}

/// A failed assertion must not leave the consumers' poll threads running: the runtime's drop
/// would wait for them and the test would hang instead of failing.
impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn event(id: &str, payload: EventPayload) -> Event {
    Event::new(
        id,
        payload,
        EventMetadata::new("test", Some("user-1".into())),
    )
}

fn output(id: &str, seq: u64, data: &str) -> Event {
    event(
        id,
        EventPayload::ExecutionOutput(ExecutionOutput {
            stream: OutputStream::Stdout,
            seq,
            data: data.into(),
        }),
    )
}

fn outcome() -> ExecutionOutcome {
    ExecutionOutcome {
        stdout: "héllo wörld ✓ 🎉\n".into(),
        stderr: "warn: ünïcode\n".into(),
        stdout_truncated: false,
        stderr_truncated: true,
        exit_code: Some(3),
        resource_usage: ResourceUsage {
            wall_ms: 120,
            cpu_ms: 80,
            peak_memory_kb: 9000,
        },
        agent: None,
    }
}

fn timeout_event(id: &str) -> Event {
    event(
        id,
        EventPayload::ExecutionTimeout(ExecutionTimedOut {
            timeout_seconds: 10,
            outcome: ExecutionOutcome::default(),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_is_projected_stored_once_and_streamed_in_order() {
    let h = Harness::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    h.insert(&id).await;

    h.step(
        &event(
            &id,
            EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
        ),
        &id,
        1,
    )
    .await;
    h.step(
        &event(
            &id,
            EventPayload::ExecutionScheduled(ExecutionScheduled {
                saga_id: id.clone(),
            }),
        ),
        &id,
        2,
    )
    .await;
    let started_at = Utc::now();
    h.step(
        &event(
            &id,
            EventPayload::ExecutionStarted(ExecutionStarted {
                executor: format!("executor-{id}"),
                started_at,
            }),
        ),
        &id,
        3,
    )
    .await;
    // The running projection may follow its stream entry by the projections' linger.
    h.eventually("the running projection", || async {
        h.get(&id)
            .await
            .is_some_and(|doc| doc.status == ExecutionStatus::Running)
    })
    .await;
    let projected = h.get(&id).await.unwrap();
    assert!(
        projected.outbox.is_none() && projected.outbox_at.is_none(),
        "the projection drops the api's announcement mark"
    );
    let doc = h.get(&id).await.unwrap();
    assert!(doc.scheduled_at.is_some());
    assert_eq!(
        doc.started_at.unwrap().timestamp_millis(),
        started_at.timestamp_millis()
    );

    h.step(&output(&id, 0, "héllo "), &id, 4).await;
    // A redelivered chunk (same seq, even as a new message) must not appear twice.
    let chunk = output(&id, 1, "wörld ✓ 🎉\n");
    h.step(&chunk, &id, 5).await;
    h.publish(&chunk).await;
    h.publish(&output(&id, 1, "wörld ✓ 🎉\n")).await;
    // A late `scheduled` must not move the status back.
    h.publish(&event(
        &id,
        EventPayload::ExecutionScheduled(ExecutionScheduled {
            saga_id: id.clone(),
        }),
    ))
    .await;

    let completed = event(
        &id,
        EventPayload::ExecutionCompleted(ExecutionFinished { outcome: outcome() }),
    );
    h.step(&completed, &id, 7).await;
    h.eventually("result_stored", || async {
        h.collected.of(EventType::ResultStored, &id).len() == 1
    })
    .await;

    let doc = h.get(&id).await.unwrap();
    assert_eq!(doc.status, ExecutionStatus::Completed);
    assert_eq!(doc.stdout, "héllo wörld ✓ 🎉\n");
    assert_eq!(doc.stderr, "warn: ünïcode\n");
    assert!(doc.stderr_truncated && !doc.stdout_truncated);
    assert_eq!(doc.exit_code, Some(3));
    assert_eq!(doc.resource_usage.as_ref().unwrap().peak_memory_kb, 9000);
    assert_eq!(
        doc.result_event_id.as_deref(),
        Some(completed.event_id.to_string().as_str())
    );
    assert_eq!(
        doc.finished_at.unwrap().timestamp_millis(),
        completed.occurred_at.timestamp_millis()
    );

    // Duplicates and a late second terminal event change nothing.
    h.publish(&completed).await;
    h.publish(&timeout_event(&id)).await;
    h.publish(&output(&id, 2, "late")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        h.get(&id).await.unwrap(),
        doc,
        "the stored result is untouched"
    );
    assert_eq!(h.collected.of(EventType::ResultStored, &id).len(), 1);
    match &h.collected.of(EventType::ResultStored, &id)[0].payload {
        EventPayload::ResultStored(stored) => assert_eq!(stored.status, ExecutionStatus::Completed),
        other => panic!("unexpected {other:?}"),
    }

    let entries = h.entries(&id).await;
    let kinds: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "status", "status", "status", "output", "output", "status", "result"
        ],
        "{entries:?}"
    );
    let statuses: Vec<&str> = entries
        .iter()
        .filter(|(k, _)| k == "status")
        .map(|(_, d)| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "scheduled", "running", "completed"]);
    assert_eq!(entries[0].1["event_type"], "execution_queued");
    assert_eq!(
        entries[3].1,
        serde_json::json!({"stream": "stdout", "seq": 0, "data": "héllo "})
    );
    assert_eq!(entries[4].1["data"], "wörld ✓ 🎉\n");
    let view: ExecutionView = serde_json::from_value(entries[6].1.clone()).unwrap();
    assert_eq!(view, ExecutionView::from(&doc));

    let mut conn = h.redis.clone();
    let ttl: i64 = redis::cmd("TTL")
        .arg(stream::key(&h.config.redis.key_prefix, &id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= stream::TTL_SECONDS, "ttl {ttl}");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_terminal_events_store_exactly_one_result() {
    let h = Harness::new().await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = uuid::Uuid::now_v7().to_string();
        h.insert(&id).await;
        let completed = event(
            &id,
            EventPayload::ExecutionCompleted(ExecutionFinished { outcome: outcome() }),
        );
        let failed = event(
            &id,
            EventPayload::ExecutionFailed(shared::events::ExecutionFailed {
                error_type: ErrorType::ExecutorLost,
                message: "lost".into(),
                outcome: None,
            }),
        );
        tokio::join!(h.publish(&completed), h.publish(&failed));
        ids.push((id, completed.event_id, failed.event_id));
    }
    for (id, _, _) in &ids {
        h.eventually("result entry", || async {
            h.entries(id).await.iter().any(|(k, _)| k == "result")
        })
        .await;
        h.eventually("result_stored", || async {
            !h.collected.of(EventType::ResultStored, id).is_empty()
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (id, completed, failed) in &ids {
        let doc = h.get(id).await.unwrap();
        let winner = doc.result_event_id.clone().unwrap();
        let expected = if winner == completed.to_string() {
            assert_eq!(doc.status, ExecutionStatus::Completed);
            assert_eq!(doc.error_type, None);
            ExecutionStatus::Completed
        } else {
            assert_eq!(winner, failed.to_string());
            assert_eq!(doc.status, ExecutionStatus::Failed);
            assert_eq!(doc.error_type, Some(ErrorType::ExecutorLost));
            assert_eq!(doc.stdout, "", "the loser's output is not mixed in");
            ExecutionStatus::Failed
        };
        let stored = h.collected.of(EventType::ResultStored, id);
        assert_eq!(stored.len(), 1);
        assert!(
            matches!(&stored[0].payload, EventPayload::ResultStored(s) if s.status == expected)
        );
        let entries = h.entries(id).await;
        assert_eq!(entries.iter().filter(|(k, _)| k == "result").count(), 1);
        assert_eq!(entries.iter().filter(|(k, _)| k == "status").count(), 1);
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_after_a_crash_repairs_the_stream() {
    let h = Harness::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    h.insert(&id).await;
    let completed = event(
        &id,
        EventPayload::ExecutionCompleted(ExecutionFinished { outcome: outcome() }),
    );
    // As if a previous attempt wrote MongoDB and crashed before Redis and Kafka.
    h.db.collection::<bson::Document>(EXECUTIONS_COLLECTION)
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": {
                "status": "completed", "stdout": "x", "finished_at": bson::DateTime::now(),
                "result_event_id": completed.event_id.to_string(),
            } },
        )
        .await
        .unwrap();
    h.publish(&completed).await;
    h.eventually("result entry", || async {
        h.entries(&id).await.iter().any(|(k, _)| k == "result")
    })
    .await;
    h.eventually("result_stored", || async {
        h.collected.of(EventType::ResultStored, &id).len() == 1
    })
    .await;
    h.publish(&completed).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.collected.of(EventType::ResultStored, &id).len(), 1);
    let entries = h.entries(&id).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1].1["stdout"], "x");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_for_a_missing_execution_fails_and_is_dead_lettered() {
    let h = Harness::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    h.publish(&timeout_event(&id)).await;
    h.eventually("result_failed", || async {
        h.collected.of(EventType::ResultFailed, &id).len() == 1
    })
    .await;
    h.eventually("dead-lettered", || async {
        h.collected.dead_lettered(&id) == 1
    })
    .await;
    assert!(h.get(&id).await.is_none());
    h.cleanup().await;
}

/// After a backlog the terminal event can be handled before `execution_started` (they travel on
/// different topics): the result stays, and the start time is recorded all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_handled_after_the_result_still_records_its_time() {
    let h = Harness::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    h.insert(&id).await;
    h.publish(&event(
        &id,
        EventPayload::ExecutionCompleted(ExecutionFinished { outcome: outcome() }),
    ))
    .await;
    h.eventually("result_stored", || async {
        !h.collected.of(EventType::ResultStored, &id).is_empty()
    })
    .await;
    h.publish(&event(
        &id,
        EventPayload::ExecutionStarted(ExecutionStarted {
            executor: format!("executor-{id}"),
            started_at: Utc::now(),
        }),
    ))
    .await;
    h.eventually("the start time", || async {
        h.get(&id).await.is_some_and(|doc| doc.started_at.is_some())
    })
    .await;
    assert_eq!(h.get(&id).await.unwrap().status, ExecutionStatus::Completed);
    h.cleanup().await;
}
