//! The replay engine against real Kafka and MongoDB: what it publishes, pause/resume/cancel, a
//! restart mid-session, and that Kiln's consumers skip replayed copies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::{Env, event_at, outputs};
use event_replay::{EventStore, SkipReplays};
use shared::events::{Event, EventPayload, EventType, ExecutorRef, topic_for};
use shared::kafka::{ConsumerSettings, Handler, HandlerError, InboundMessage, run_consumer};
use shared::replay::{
    EVENTS_COLLECTION, ORIGINAL_EVENT_HEADER, ReplayFilter, ReplayState, ReplayTarget,
    SESSION_HEADER, SIDE_EFFECTS_HEADER, replay_copy, replay_headers, replayed_event_id,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(30);

fn only(execution_id: &str) -> ReplayFilter {
    ReplayFilter {
        execution_ids: vec![execution_id.into()],
        ..ReplayFilter::default()
    }
}

/// Every copy read points at a distinct original, carries the session's marker and the id
/// derived from its original; returns the originals' ids in the order read.
fn check_copies(read: &[common::Read], session_id: &str) -> Vec<String> {
    let session = Uuid::parse_str(session_id).unwrap();
    let mut originals = Vec::new();
    for copy in read {
        assert_eq!(copy.header(SESSION_HEADER), Some(session_id));
        assert_eq!(copy.header(SIDE_EFFECTS_HEADER), None);
        let original = copy.header(ORIGINAL_EVENT_HEADER).unwrap().to_owned();
        let original_id = Uuid::parse_str(&original).unwrap();
        assert_ne!(copy.event.event_id, original_id);
        assert_eq!(copy.event.event_id, replayed_event_id(session, original_id));
        assert_eq!(
            copy.header("event_id"),
            Some(copy.event.event_id.to_string().as_str())
        );
        originals.push(original);
    }
    let distinct: HashSet<&String> = originals.iter().collect();
    assert_eq!(
        distinct.len(),
        originals.len(),
        "a copy was published twice"
    );
    originals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_is_replayed_to_its_session_topic() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    let mut events = outputs("exec-a", 4, 10, base);
    events.push(event_at(
        "exec-a",
        "user-1",
        EventPayload::PodCreated(ExecutorRef {
            executor: "sandbox-a".into(),
            node: None,
        }),
        base,
        -5,
    ));
    events.extend(outputs("exec-b", 3, 10, base));
    env.store(&events).await;

    let session = env
        .running_session(only("exec-a"), ReplayTarget::SessionTopic, 0.0, false)
        .await;
    assert_eq!(session.progress.total, 5);
    let engine = env.engine("one");
    let done = env.completed(&session.id).await;
    assert_eq!(done.progress.replayed, 5);
    assert!(done.lease.is_none());
    assert!(done.finished_at.is_some());

    let read = env.read_session_topic(&session.id, 5).await;
    assert_eq!(read.len(), 5, "{read:?}");
    let originals = check_copies(&read, &session.id);
    // Same payloads, in time order (the pod event happened first), keyed by the execution.
    let mut expected: Vec<&Event> = events
        .iter()
        .filter(|e| e.aggregate_id == "exec-a")
        .collect();
    expected.sort_by_key(|e| (e.occurred_at, e.event_id));
    for ((copy, original_id), original) in read.iter().zip(&originals).zip(&expected) {
        assert_eq!(original_id, &original.event_id.to_string());
        assert_eq!(copy.event.payload, original.payload);
        assert_eq!(copy.event.aggregate_id, original.aggregate_id);
        assert_eq!(copy.event.correlation_id, original.correlation_id);
        assert_eq!(copy.event.occurred_at, original.occurred_at);
        assert_eq!(copy.key.as_deref(), Some(b"exec-a".as_slice()));
    }
    engine.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_session_stops_and_resumes_where_it_was_and_a_cancelled_one_never_runs() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    // 10 events 200 ms apart replayed at original pace: about 2 s of work.
    env.store(&outputs("exec-p", 10, 200, base)).await;
    env.store(&outputs("exec-c", 3, 0, base)).await;
    let session = env
        .running_session(only("exec-p"), ReplayTarget::SessionTopic, 1.0, false)
        .await;
    let engine = env.engine("pause");
    env.wait_for(&session.id, LONG, |s| s.progress.replayed >= 2)
        .await;
    env.set_state(&session.id, ReplayState::Paused).await;
    // The engine notices at its next save and gives the lease back.
    let paused = env.wait_for(&session.id, LONG, |s| s.lease.is_none()).await;
    assert_eq!(paused.state, ReplayState::Paused);
    assert!(paused.progress.replayed < 10, "{paused:?}");
    // Nothing moves while paused (a claim poll runs every 50 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        env.session(&session.id).await.progress,
        paused.progress,
        "a paused session went on"
    );

    env.set_state(&session.id, ReplayState::Running).await;
    assert_eq!(env.completed(&session.id).await.progress.replayed, 10);
    let read = env.read_session_topic(&session.id, 10).await;
    assert_eq!(read.len(), 10);
    check_copies(&read, &session.id);

    // Cancelled before any instance claimed it: it never runs.
    let cancelled = env
        .running_session(only("exec-c"), ReplayTarget::SessionTopic, 0.0, false)
        .await;
    env.set_state(&cancelled.id, ReplayState::Cancelled).await;
    engine.stop().await;
    let engine = env.engine("after-cancel");
    let marker = env
        .running_session(only("exec-p"), ReplayTarget::SessionTopic, 0.0, false)
        .await;
    env.completed(&marker.id).await;
    let untouched = env.session(&cancelled.id).await;
    assert_eq!(untouched.state, ReplayState::Cancelled);
    assert_eq!(untouched.progress.replayed, 0);
    engine.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_resumes_from_the_last_position_without_duplicates() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    env.store(&outputs("exec-r", 12, 150, base)).await;
    let session = env
        .running_session(only("exec-r"), ReplayTarget::SessionTopic, 1.0, false)
        .await;

    let engine = env.engine("first");
    env.wait_for(&session.id, LONG, |s| s.progress.replayed >= 3)
        .await;
    engine.stop().await;
    let handed_back = env.session(&session.id).await;
    assert_eq!(handed_back.state, ReplayState::Running);
    assert!(handed_back.lease.is_none(), "the lease was not given back");
    assert!(handed_back.progress.replayed < 12, "{handed_back:?}");

    let engine = env.engine("second");
    assert_eq!(env.completed(&session.id).await.progress.replayed, 12);
    let read = env.read_session_topic(&session.id, 12).await;
    assert_eq!(read.len(), 12, "lost or duplicated copies");
    check_copies(&read, &session.id);
    engine.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_engine_is_taken_over_after_its_lease_and_every_event_arrives() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    env.store(&outputs("exec-k", 12, 150, base)).await;
    let session = env
        .running_session(only("exec-k"), ReplayTarget::SessionTopic, 1.0, false)
        .await;
    let crashed = env.engine("crashed");
    env.wait_for(&session.id, LONG, |s| s.progress.replayed >= 3)
        .await;
    // No hand-back: the task dies mid-run, its lease stays until it expires (3 s).
    crashed.task.abort();
    let engine = env.engine("survivor");
    assert_eq!(env.completed(&session.id).await.progress.replayed, 12);
    let read = env.read_session_topic(&session.id, 12).await;
    // A copy published after the last save is published again, under the same id, so an
    // idempotent consumer sees each event once.
    let session_uuid = Uuid::parse_str(&session.id).unwrap();
    let mut by_original: HashMap<String, HashSet<Uuid>> = HashMap::new();
    for copy in &read {
        let original = copy.header(ORIGINAL_EVENT_HEADER).unwrap().to_owned();
        assert_eq!(
            copy.event.event_id,
            replayed_event_id(session_uuid, Uuid::parse_str(&original).unwrap())
        );
        by_original
            .entry(original)
            .or_default()
            .insert(copy.event.event_id);
    }
    assert_eq!(by_original.len(), 12, "an event was lost");
    assert!(by_original.values().all(|ids| ids.len() == 1));
    engine.stop().await;
    env.cleanup().await;
}

/// Counts the create commands a consumer's handler ran, by execution.
#[derive(Default)]
struct Creates(Mutex<Vec<String>>);

impl Handler for Creates {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.0.lock().unwrap().push(event.aggregate_id);
        Ok(())
    }
}

fn create_pod_command(execution_id: &str, saga: &str) -> Event {
    let payload: EventPayload = serde_json::from_value(serde_json::json!({
        "event_type": "create_pod_command",
        "payload": {
            "saga_id": saga,
            "request": {
                "script": "print(1)", "lang": "python", "lang_version": "3.12",
                "limits": { "timeout_seconds": 5, "memory_mb": 128, "max_processes": 16,
                            "max_output_bytes": 65536, "max_file_bytes": 65536 }
            }
        }
    }))
    .unwrap();
    event_at(execution_id, "user-1", payload, Utc::now(), 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_skip_replayed_commands_unless_the_session_allows_side_effects() {
    let env = Env::new().await;
    let topic = topic_for(&env.config.kafka.topic_prefix, EventType::CreatePodCommand);
    let original = create_pod_command("exec-s", "saga-1");
    env.producer.publish(&original).await.unwrap();
    env.store(std::slice::from_ref(&original)).await;

    // A consumer like k8s-worker's, through the same consumer layer.
    let creates = Arc::new(Creates::default());
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        env.config.kafka.clone(),
        ConsumerSettings {
            group_id: format!("{}k8s-like", env.config.kafka.topic_prefix),
            topics: vec![topic.clone()],
            client_id: "replay-guard-test".into(),
            drain_timeout: Duration::from_secs(5),
            fetch_wait: None,
        },
        Arc::clone(&creates),
        env.producer.clone(),
        shutdown.clone(),
    ));
    let count = |creates: &Creates, id: &str| {
        creates
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.as_str() == id)
            .count()
    };

    let engine = env.engine("guard");
    let plain = env
        .running_session(only("exec-s"), ReplayTarget::OriginalTopics, 0.0, false)
        .await;
    env.completed(&plain.id).await;
    // A later command for the same execution lands on the same partition after the copy: once
    // the handler has seen it, the copy has been consumed.
    let sentinel = create_pod_command("exec-s", "sentinel");
    env.producer.publish(&sentinel).await.unwrap();
    assert!(
        shared::testing::wait_until(LONG, || count(&creates, "exec-s") >= 2).await,
        "the consumer never got the sentinel"
    );
    assert_eq!(
        count(&creates, "exec-s"),
        2,
        "a replayed create_pod_command ran the handler"
    );

    let allowed = env
        .running_session(only("exec-s"), ReplayTarget::OriginalTopics, 0.0, true)
        .await;
    env.completed(&allowed.id).await;
    assert!(
        shared::testing::wait_until(LONG, || count(&creates, "exec-s") >= 3).await,
        "a session allowing side effects did not reach the handler"
    );
    engine.stop().await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_store_keeps_no_replayed_copies() {
    let env = Env::new().await;
    let original = outputs("exec-x", 1, 0, Utc::now()).remove(0);
    let session = Uuid::now_v7();
    let copy = replay_copy(&original, session);
    let message = |event: &Event, headers: Vec<(String, Vec<u8>)>| InboundMessage {
        topic: topic_for(&env.config.kafka.topic_prefix, event.event_type()),
        partition: 0,
        offset: 0,
        key: Some(event.aggregate_id.clone().into_bytes()),
        payload: Some(event.to_json().unwrap()),
        headers,
        timestamp_ms: None,
    };
    // Even a copy that may run side effects reaches the store's handler, which must skip it.
    let store = SkipReplays(Arc::new(EventStore::new(&env.db)));
    let headers = replay_headers(&session.to_string(), &original, &copy, true);
    store.handle(&message(&copy, headers.0)).await.unwrap();
    store.handle(&message(&original, vec![])).await.unwrap();
    let ids: Vec<String> = env
        .db
        .collection::<mongodb::bson::Document>(EVENTS_COLLECTION)
        .distinct("_id", mongodb::bson::doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [original.event_id.to_string()]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speed_multiplier_keeps_the_original_gaps_shortened() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    // Five events spread over 2 s, replayed four times faster: at least 500 ms.
    env.store(&outputs("exec-v", 5, 500, base)).await;
    let engine = env.engine("speed");
    let started = std::time::Instant::now();
    let session = env
        .running_session(only("exec-v"), ReplayTarget::SessionTopic, 4.0, false)
        .await;
    assert_eq!(env.completed(&session.id).await.progress.replayed, 5);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(480), "took only {took:?}");
    engine.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_runs_several_sessions_at_once() {
    let env = Env::new().await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    // Two sessions of about 2 s each at original pace.
    env.store(&outputs("exec-1", 10, 200, base)).await;
    env.store(&outputs("exec-2", 10, 200, base)).await;
    let first = env
        .running_session(only("exec-1"), ReplayTarget::SessionTopic, 1.0, false)
        .await;
    let second = env
        .running_session(only("exec-2"), ReplayTarget::SessionTopic, 1.0, false)
        .await;
    let engine = env.engine("parallel");
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let (a, b) = (env.session(&first.id).await, env.session(&second.id).await);
        if a.progress.replayed >= 1 && b.progress.replayed >= 1 {
            assert!(
                a.state == ReplayState::Running && b.state == ReplayState::Running,
                "the sessions ran one after the other"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.completed(&first.id).await.progress.replayed, 10);
    assert_eq!(env.completed(&second.id).await.progress.replayed, 10);
    engine.stop().await;
    env.cleanup().await;
}
