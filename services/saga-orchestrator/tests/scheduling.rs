//! The orchestrator against real Kafka and MongoDB: the request flow, the caps, priority and
//! FIFO order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Harness;
use mongodb::bson::doc;
use shared::events::EventType;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_queued_scheduled_and_commanded_in_order() {
    let h = Harness::new(|_| {}).await;
    let running = h.start().await;
    let request = h.request("alice", 0, 10).await;
    let id = request.aggregate_id.clone();
    h.eventually("create_pod_command", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &id)
            .is_empty()
    })
    .await;
    let queued = h.collected.for_id(EventType::ExecutionQueued, &id);
    let scheduled = h.collected.for_id(EventType::ExecutionScheduled, &id);
    let command = h.collected.for_id(EventType::CreatePodCommand, &id);
    assert_eq!((queued.len(), scheduled.len(), command.len()), (1, 1, 1));
    assert!(queued[0].occurred_at <= scheduled[0].occurred_at);
    assert!(scheduled[0].occurred_at <= command[0].occurred_at);
    assert!(
        queued[0].event_id < scheduled[0].event_id && scheduled[0].event_id < command[0].event_id
    );
    // Same flow as the request, caused by it, on behalf of its user.
    for event in [&queued[0], &scheduled[0], &command[0]] {
        assert_eq!(event.correlation_id, request.correlation_id);
        assert_eq!(event.causation_id, Some(request.event_id));
        assert_eq!(event.metadata.user_id.as_deref(), Some("alice"));
    }
    match &command[0].payload {
        shared::events::EventPayload::CreatePodCommand(c) => {
            assert_eq!(c.saga_id, id);
            assert_eq!(c.request.script, "print('hi ✓')");
        }
        other => panic!("unexpected {other:?}"),
    }
    let saga = h.saga(&id).await.unwrap();
    assert_eq!(saga.get_str("state").unwrap(), "scheduled");
    assert!(saga.get_datetime("deadline_at").is_ok());
    let steps: Vec<&str> = saga
        .get_array("steps")
        .unwrap()
        .iter()
        .map(|s| s.as_document().unwrap().get_str("name").unwrap())
        .collect();
    assert_eq!(steps, ["queued", "scheduled"]);

    h.complete(&id).await;
    h.eventually("saga finished", || async {
        h.state(&id).await.as_deref() == Some("finished")
    })
    .await;
    h.eventually("saga_completed", || async {
        h.collected.for_id(EventType::SagaCompleted, &id).len() == 1
    })
    .await;
    // The `scheduled` outbox stayed until the end replaced it: nothing is left to publish.
    let saga = h.saga(&id).await.unwrap();
    assert!(saga.get_array("outbox").is_ok_and(|o| o.is_empty()));
    assert!(!saga.contains_key("outbox_at"));
    running.stop().await;
    h.cleanup().await;
}

/// The leader keeps a published `scheduled` outbox (the saga's next transition replaces it)
/// and must not take it for a stranded one: a long run is announced once, not every sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_run_is_commanded_once() {
    let h = Harness::new(|_| {}).await;
    let running = h.start().await;
    let id = h.request("alice", 0, 30).await.aggregate_id;
    h.eventually("commanded", || async {
        h.collected.deliveries(EventType::CreatePodCommand, &id) > 0
    })
    .await;
    let saga = h.saga(&id).await.unwrap();
    assert_eq!(
        saga.get_array("outbox").unwrap().len(),
        3,
        "kept after publish"
    );
    // Past the re-publisher's staleness (2 s) with a sweep every 200 ms.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.collected.deliveries(EventType::CreatePodCommand, &id), 1);
    assert_eq!(
        h.collected.deliveries(EventType::ExecutionScheduled, &id),
        1
    );
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_global_cap_holds_until_slots_are_released() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 3;
        c.limits.per_user_concurrency = 10;
    })
    .await;
    let running = h.start().await;
    for i in 0..10 {
        h.request(&format!("user-{i}"), 0, 10).await;
    }
    h.eventually("10 queued", || async {
        h.collected.ids(EventType::ExecutionQueued).len() == 10
    })
    .await;
    h.eventually("3 commands", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 3
    })
    .await;
    // Give the scheduler many passes: still 3.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.collected.ids(EventType::CreatePodCommand).len(), 3);
    assert_eq!(h.active().await, 3);

    let first = h.collected.ids(EventType::CreatePodCommand);
    for id in &first {
        h.complete(id).await;
    }
    h.eventually("6 commands", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.collected.ids(EventType::CreatePodCommand).len(), 6);
    assert!(h.active().await <= 3);
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_at_the_cap_does_not_block_others() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 10;
        c.limits.per_user_concurrency = 2;
    })
    .await;
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(h.request("user-a", 0, 10).await.aggregate_id);
    }
    let b = h.request("user-b", 0, 10).await.aggregate_id;
    // Start after everything is published, so all six wait in the queue, A's first.
    let running = h.start().await;
    h.eventually("B scheduled", || async {
        !h.collected
            .for_id(EventType::CreatePodCommand, &b)
            .is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let commanded = h.collected.ids(EventType::CreatePodCommand);
    let a_commanded: Vec<_> = commanded.iter().filter(|id| a.contains(id)).collect();
    assert_eq!(a_commanded.len(), 2, "A is held at its cap: {commanded:?}");
    // Which two of A run depends on which requests were consumed before the first scheduling
    // pass (two partitions are read in parallel); FIFO itself is the priority test's subject.
    assert_eq!(
        h.count(doc! { "user_id": "user-a", "state": "queued" })
            .await,
        3
    );
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_first_then_fifo() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 1;
        c.limits.per_user_concurrency = 10;
    })
    .await;
    let running = h.start().await;
    let blocker = h.request("u", 0, 10).await.aggregate_id;
    h.eventually("blocker scheduled", || async {
        h.state(&blocker).await.as_deref() == Some("scheduled")
    })
    .await;
    let low1 = h.request("u", 0, 10).await.aggregate_id;
    let high1 = h.request("u", 5, 10).await.aggregate_id;
    let low2 = h.request("u", 0, 10).await.aggregate_id;
    let high2 = h.request("u", 5, 10).await.aggregate_id;
    let mid = h.request("u", 3, 10).await.aggregate_id;
    h.eventually("5 queued", || async {
        h.count(doc! { "state": "queued" }).await == 5
    })
    .await;
    let expected = vec![
        blocker.clone(),
        high1.clone(),
        high2.clone(),
        mid.clone(),
        low1.clone(),
        low2.clone(),
    ];
    // Complete each execution as its command arrives; the next one follows.
    for n in 1..=expected.len() {
        h.eventually("next command", || async {
            h.collected.ids(EventType::CreatePodCommand).len() >= n
        })
        .await;
        let ids = h.collected.ids(EventType::CreatePodCommand);
        assert_eq!(ids.len(), n, "one slot only");
        h.complete(&ids[n - 1]).await;
    }
    assert_eq!(h.collected.ids(EventType::CreatePodCommand), expected);
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ended_runs_give_their_user_slots_back_within_the_cap() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 10;
        c.limits.per_user_concurrency = 2;
    })
    .await;
    let running = h.start().await;
    for _ in 0..6 {
        h.request("user-a", 0, 10).await;
    }
    h.eventually("2 commands", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 2
    })
    .await;
    // Ended with the user named, as pod-monitor's events are: the scheduler frees the user's
    // slots from what its own handler ended, without waiting for a recount.
    for id in h.collected.ids(EventType::CreatePodCommand) {
        let mut ended = common::completed(&id);
        ended.metadata.user_id = Some("user-a".into());
        h.publish(&ended).await;
    }
    h.eventually("4 commands", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.collected.ids(EventType::CreatePodCommand).len(), 4);
    assert_eq!(h.active().await, 2);
    running.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_saga_ended_early_frees_no_slot() {
    let h = Harness::new(|c| {
        c.limits.global_concurrency = 1;
        c.limits.per_user_concurrency = 10;
    })
    .await;
    let running = h.start().await;
    h.request("user-a", 0, 10).await;
    h.eventually("1 command", || async {
        h.collected.ids(EventType::CreatePodCommand).len() == 1
    })
    .await;
    h.request("user-b", 0, 10).await;
    let early = h.request("user-c", 0, 10).await.aggregate_id;
    h.eventually("3 queued", || async {
        h.collected.ids(EventType::ExecutionQueued).len() == 3
    })
    .await;
    let mut ended = common::completed(&early);
    ended.metadata.user_id = Some("user-c".into());
    h.publish(&ended).await;
    h.eventually("the queued saga finished", || async {
        h.state(&early).await.as_deref() == Some("finished")
    })
    .await;
    // It held no slot, so the first run still holds the only one: nothing else may start.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.collected.ids(EventType::CreatePodCommand).len(), 1);
    assert_eq!(h.active().await, 1);
    running.stop().await;
    h.cleanup().await;
}
