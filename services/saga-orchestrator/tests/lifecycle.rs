//! Cancels, duplicates, the sweeper, many mixed runs and a restart: no slot leaks, nothing stuck.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Harness;
use mongodb::bson::doc;
use rand::Rng;
use shared::events::{
    ErrorType, Event, EventMetadata, EventPayload, EventType, ExecutionFailed, ExecutionOutcome,
    ExecutionTimedOut,
};

fn payload_of<T>(events: &[Event], pick: impl Fn(&EventPayload) -> Option<T>) -> Vec<T> {
    events.iter().filter_map(|e| pick(&e.payload)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_while_queued_never_runs_and_cancel_while_scheduled_compensates() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 1;
    })
    .await;
    let running = h.start().await;
    let first = h.request("u", 0, 10).await.aggregate_id;
    h.eventually("first scheduled", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &first)
            .is_empty()
    })
    .await;
    let waiting = h.request("u", 0, 10).await.aggregate_id;
    h.eventually("second queued", || async {
        h.state(&waiting).await.as_deref() == Some("queued")
    })
    .await;

    // Queued: cancelled at once, never commanded.
    h.cancel(&waiting).await;
    h.eventually("queued one cancelled", || async {
        h.collected
            .for_id(EventType::ExecutionCancelled, &waiting)
            .len()
            == 1
    })
    .await;
    assert_eq!(h.state(&waiting).await.as_deref(), Some("cancelled"));
    assert!(
        h.collected
            .for_id(EventType::DeletePodCommand, &waiting)
            .is_empty()
    );

    // Scheduled: the executor is deleted, then the execution cancelled; the slot is freed.
    h.cancel(&first).await;
    h.eventually("scheduled one cancelled", || async {
        h.collected
            .for_id(EventType::ExecutionCancelled, &first)
            .len()
            == 1
    })
    .await;
    let deletes = h.collected.for_id(EventType::DeletePodCommand, &first);
    assert_eq!(deletes.len(), 1);
    let reasons = payload_of(&deletes, |p| match p {
        EventPayload::DeletePodCommand(d) => Some(d.reason.clone()),
        _ => None,
    });
    assert_eq!(reasons, ["cancelled"]);
    assert!(
        deletes[0].event_id < h.collected.for_id(EventType::ExecutionCancelled, &first)[0].event_id
    );
    assert_eq!(h.state(&first).await.as_deref(), Some("cancelled"));
    let saga = h.saga(&first).await.unwrap();
    assert_eq!(saga.get_array("compensations").unwrap().len(), 1);

    let next = h.request("u", 0, 10).await.aggregate_id;
    h.eventually("slot reused", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &next)
            .is_empty()
    })
    .await;
    // The cancelled queued execution never got a command, even once the slot was free.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.collected
            .for_id(EventType::CreatePodCommand, &waiting)
            .is_empty()
    );
    // Its own execution_cancelled came back to it and changed nothing.
    assert_eq!(
        h.collected
            .for_id(EventType::ExecutionCancelled, &first)
            .len(),
        1
    );
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_before_its_request_cancels_the_request_when_it_comes() {
    let h = Harness::new(|_| {}).await;
    let running = h.start().await;
    let request = common::request("u", 0, 10);
    let id = request.aggregate_id.clone();
    h.cancel(&id).await;
    h.eventually("marker stored", || async {
        h.state(&id).await.as_deref() == Some("cancelled")
    })
    .await;
    h.publish(&request).await;
    h.eventually("cancelled announced", || async {
        h.collected.for_id(EventType::ExecutionCancelled, &id).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        h.collected
            .for_id(EventType::CreatePodCommand, &id)
            .is_empty()
    );
    assert!(
        h.collected
            .for_id(EventType::ExecutionQueued, &id)
            .is_empty()
    );
    let saga = h.saga(&id).await.unwrap();
    assert!(
        saga.get_document("request").is_ok(),
        "the request is recorded"
    );
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_requests_and_terminal_events_change_nothing() {
    let h = Harness::new(|_| {}).await;
    let running = h.start().await;
    let request = common::request("u", 0, 10);
    let id = request.aggregate_id.clone();
    h.publish(&request).await;
    h.publish(&request).await;
    h.eventually("commanded", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &id)
            .is_empty()
    })
    .await;
    h.publish(&request).await;
    let done = common::completed(&id);
    h.publish(&done).await;
    h.publish(&done).await;
    // Topics are not ordered with each other: let the completion land first, then send a
    // second, different terminal event after it.
    h.eventually("finished", || async {
        h.state(&id).await.as_deref() == Some("finished")
    })
    .await;
    h.publish(&Event::new(
        id.as_str(),
        EventPayload::ExecutionTimeout(ExecutionTimedOut {
            timeout_seconds: 10,
            outcome: ExecutionOutcome::default(),
        }),
        EventMetadata::new("pod-monitor", None),
    ))
    .await;
    h.eventually("finished", || async {
        h.state(&id).await.as_deref() == Some("finished")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.collected.for_id(EventType::ExecutionQueued, &id).len(), 1);
    assert_eq!(
        h.collected.for_id(EventType::ExecutionScheduled, &id).len(),
        1
    );
    assert_eq!(
        h.collected.for_id(EventType::CreatePodCommand, &id).len(),
        1
    );
    assert_eq!(h.collected.for_id(EventType::SagaCompleted, &id).len(), 1);
    let saga = h.saga(&id).await.unwrap();
    assert_eq!(saga.get_str("outcome").unwrap(), "completed");
    assert_eq!(
        saga.get_array("steps").unwrap().len(),
        3,
        "queued, scheduled, completed"
    );
    assert_eq!(h.count(doc! {}).await, 1);
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_fails_an_execution_past_its_deadline() {
    let h = Harness::new(|c| {
        c.saga.executor_grace_seconds = 0;
        c.limits.global_concurrency = 1;
    })
    .await;
    let running = h.start().await;
    let lost = h.request("u", 0, 1).await.aggregate_id;
    let next = h.request("u", 0, 10).await.aggregate_id;
    h.eventually("executor_lost", || async {
        h.collected.for_id(EventType::ExecutionFailed, &lost).len() == 1
    })
    .await;
    let failed = h.collected.for_id(EventType::ExecutionFailed, &lost);
    let types = payload_of(&failed, |p| match p {
        EventPayload::ExecutionFailed(f) => Some(f.error_type),
        _ => None,
    });
    assert_eq!(types, [ErrorType::ExecutorLost]);
    let deletes = h.collected.for_id(EventType::DeletePodCommand, &lost);
    assert_eq!(deletes.len(), 1);
    assert!(
        matches!(&deletes[0].payload, EventPayload::DeletePodCommand(d) if d.reason == "executor_lost")
    );
    assert_eq!(h.state(&lost).await.as_deref(), Some("finished"));
    // Its slot went to the next one.
    h.eventually("next scheduled", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &next)
            .is_empty()
    })
    .await;
    running.stop().await;
    h.cleanup().await;
}

/// Plays k8s-worker and pod-monitor: ends every commanded execution in a random way, and cancels
/// some queued ones, until `ids` are all ended.
async fn drive_to_the_end(h: &Harness, ids: &[String], seed: u64) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut handled: HashSet<String> = HashSet::new();
    let mut cancelled_early: HashSet<String> = HashSet::new();
    for id in ids {
        if rng.random_ratio(1, 10) {
            h.cancel(id).await;
            cancelled_early.insert(id.clone());
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ended = h
            .count(doc! { "_id": { "$in": ids }, "state": { "$in": ["finished", "cancelled"] } })
            .await;
        if ended == ids.len() as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ended} of {} ended",
            ids.len()
        );
        for id in h.collected.ids(EventType::CreatePodCommand) {
            if !ids.contains(&id) || !handled.insert(id.clone()) {
                continue;
            }
            match rng.random_range(0..4) {
                0 => h.cancel(&id).await,
                1 => {
                    h.publish(&Event::new(
                        id.as_str(),
                        EventPayload::ExecutionFailed(ExecutionFailed {
                            error_type: ErrorType::SystemError,
                            message: "boom".into(),
                            outcome: None,
                        }),
                        EventMetadata::new("k8s-worker", None),
                    ))
                    .await
                }
                2 => {
                    h.publish(&Event::new(
                        id.as_str(),
                        EventPayload::ExecutionTimeout(ExecutionTimedOut {
                            timeout_seconds: 1,
                            outcome: ExecutionOutcome::default(),
                        }),
                        EventMetadata::new("pod-monitor", None),
                    ))
                    .await
                }
                _ => h.complete(&id).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_mixed_runs_leak_no_slot() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 5;
        c.limits.per_user_concurrency = 2;
    })
    .await;
    let running = h.start().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let priority = (i % 3) as u8;
        ids.push(
            h.request(&format!("user-{}", i % 7), priority, 10)
                .await
                .aggregate_id,
        );
    }
    drive_to_the_end(&h, &ids, 7).await;
    assert_eq!(h.active().await, 0, "no slot leaked");
    assert_eq!(h.count(doc! { "state": "queued" }).await, 0);
    assert_eq!(
        h.count(doc! { "state": { "$in": ["finished", "cancelled"] } })
            .await,
        100
    );
    // Every saga ended exactly once, and at most the cap ever held a slot at a time is implied
    // by the command count matching scheduled sagas.
    let commanded = h.collected.ids(EventType::CreatePodCommand).len() as u64;
    assert_eq!(
        commanded,
        h.count(doc! { "scheduled_at": { "$ne": null } }).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.count(doc! { "outbox.0": { "$exists": true } }).await,
        0,
        "every event published"
    );
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_run_leaves_nothing_stuck() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 2;
        c.limits.per_user_concurrency = 2;
    })
    .await;
    let first = h.start().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            h.request(&format!("user-{}", i % 3), 0, 10)
                .await
                .aggregate_id,
        );
    }
    h.eventually("2 commanded", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 2
    })
    .await;
    first.stop().await;
    // While it is down: a completion and a cancel arrive.
    let commanded = h.collected.ids(EventType::CreatePodCommand);
    h.complete(&commanded[0]).await;
    let queued_one = ids
        .iter()
        .find(|id| !commanded.contains(id))
        .unwrap()
        .clone();
    h.cancel(&queued_one).await;

    let second = h.start().await;
    drive_to_the_end(&h, &ids, 11).await;
    assert_eq!(h.active().await, 0);
    assert_eq!(h.state(&queued_one).await.as_deref(), Some("cancelled"));
    assert!(
        h.collected
            .for_id(EventType::CreatePodCommand, &queued_one)
            .is_empty()
    );
    second.stop().await;
    h.cleanup().await;
}

/// A crash between a transition's write and its publish leaves the events in the outbox; the
/// scheduler leader finds the saga by its pending mark and publishes them, then clears both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outbox_left_by_a_crash_is_published_by_the_leader() {
    let h = Harness::new(|_| {}).await;
    let id = uuid::Uuid::now_v7().to_string();
    let stranded = Event::new(
        &id,
        EventPayload::ExecutionQueued(shared::events::ExecutionQueued { position: None }),
        EventMetadata::new("saga-orchestrator", Some("user-1".into())),
    );
    let written_at = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 10_000,
    );
    h.db.collection::<mongodb::bson::Document>("sagas")
        .insert_one(doc! {
            "_id": &id,
            "user_id": "user-1",
            "state": "finished",
            "steps": [],
            "compensations": [],
            "outbox": [ { "id": stranded.event_id.to_string(),
                          "event": String::from_utf8(stranded.to_json().unwrap()).unwrap() } ],
            "outbox_at": written_at,
            "updated_at": written_at,
        })
        .await
        .unwrap();
    let running = h.start().await;
    h.eventually("the stranded event is published", || async {
        h.collected
            .for_id(EventType::ExecutionQueued, &id)
            .iter()
            .any(|e| e.event_id == stranded.event_id)
    })
    .await;
    h.eventually("the outbox and its mark are cleared", || async {
        h.saga(&id).await.is_some_and(|saga| {
            saga.get_array("outbox").is_ok_and(|o| o.is_empty()) && !saga.contains_key("outbox_at")
        })
    })
    .await;
    running.stop().await;
    h.cleanup().await;
}

/// `queued` and `saga_completed` are not kept in an outbox: a crash after the transition's
/// write and before its publish is repaired by the redelivered message, which finds the
/// transition done and publishes the same event (same derived id) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_announces_what_a_crash_left_unannounced() {
    let h = Harness::new(|c| c.limits.global_concurrency = 1).await;
    // A run that holds the only slot, so the next request stays queued.
    let running = h.start().await;
    let blocker = h.request("a", 0, 30).await.aggregate_id;
    h.eventually("the blocker holds the slot", || async {
        h.state(&blocker).await.as_deref() == Some("scheduled")
    })
    .await;
    running.stop().await;

    // What a saga looks like when its handler stopped right after the insert or the final update.
    let request = common::request("u", 0, 10);
    let queued_id = request.aggregate_id.clone();
    let EventPayload::ExecutionRequested(payload) = &request.payload else {
        unreachable!()
    };
    let now = mongodb::bson::DateTime::now();
    let sagas = h.db.collection::<mongodb::bson::Document>("sagas");
    sagas
        .insert_one(doc! {
            "_id": &queued_id, "user_id": "u", "state": "queued", "priority": 0,
            "enqueued_at": now, "request": mongodb::bson::to_bson(payload).unwrap(),
            "steps": [ { "name": "queued", "status": "completed", "at": now } ],
            "compensations": [], "outbox": [], "updated_at": now,
        })
        .await
        .unwrap();
    let done = common::completed(&uuid::Uuid::now_v7().to_string());
    sagas
        .insert_one(doc! {
            "_id": &done.aggregate_id, "user_id": "u", "state": "finished", "outcome": "completed",
            "steps": [ { "name": "completed", "status": "completed", "at": now } ],
            "compensations": [], "outbox": [], "finished_at": now, "updated_at": now,
        })
        .await
        .unwrap();

    let running = h.start().await;
    h.publish(&request).await;
    h.publish(&done).await;
    h.eventually("both announced", || async {
        let queued = h.collected.for_id(EventType::ExecutionQueued, &queued_id);
        let completed = h
            .collected
            .for_id(EventType::SagaCompleted, &done.aggregate_id);
        queued.len() == 1 && completed.len() == 1
    })
    .await;
    let queued = h.collected.for_id(EventType::ExecutionQueued, &queued_id);
    assert_eq!(
        queued[0].event_id,
        shared::events::derived_event_id(request.event_id, EventType::ExecutionQueued),
        "the id the first run would have published"
    );
    assert_eq!(h.state(&queued_id).await.as_deref(), Some("queued"));
    running.stop().await;
    h.cleanup().await;
}
