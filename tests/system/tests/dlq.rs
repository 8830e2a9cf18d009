//! The DLQ through the running services: a poison message on `execution_requested` is
//! dead-lettered by the consumers that read it (saga-orchestrator and event-replay's store),
//! stored once by dlq-processor, re-published on its schedule, parked, and re-driven by an admin
//! through the api.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use stack::api::Api;
use stack::{Isolation, Stack};

const LONG: Duration = Duration::from_secs(60);
const KEY: &str = "exec-poison-system";

/// Polls the admin list for the one stored message with our key until `done` holds for it.
async fn wait_for(admin: &Api, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (status, page) = admin.get("/api/v1/admin/dlq?limit=100").await;
        assert_eq!(status, 200, "{page}");
        let ours: Vec<&Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["key"] == KEY)
            .collect();
        assert!(ours.len() <= 1, "stored more than once: {page}");
        if let Some(message) = ours.first()
            && done(message)
        {
            return (*message).clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_retried_parked_and_redriven_by_an_admin() {
    let isolation = Isolation::new("dlq")
        .with("KILN__DLQ__SCAN_INTERVAL_MS", "100")
        .with("KILN__DLQ__EXECUTION_EVENTS__MAX_ATTEMPTS", "2")
        .with("KILN__DLQ__EXECUTION_EVENTS__INITIAL_BACKOFF_MS", "300")
        .with("KILN__DLQ__EXECUTION_EVENTS__MAX_BACKOFF_MS", "600");
    let topic = format!("{}execution_requested", isolation.prefix);
    let stack = Stack::start(isolation).await;
    let admin = Api::login(&stack.api(""), "admin", "admin123").await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(KEY)
                .payload("{this is not an event"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Two consumer groups dead-letter it; it is stored once, retried twice, then parked.
    let parked = wait_for(&admin, "parked", |m| m["status"] == "parked").await;
    assert_eq!(parked["attempts"], 2, "{parked}");
    assert_eq!(parked["original_topic"], topic.as_str());
    assert_eq!(parked["policy"], "execution_events");
    assert_eq!(parked["error_class"], "undecodable_event");
    let id = parked["id"].as_str().unwrap().to_owned();
    let (status, shown) = admin.get(&format!("/api/v1/admin/dlq/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["payload_text"], "{this is not an event");
    let actions: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "retried").count(),
        2,
        "{shown}"
    );

    // Users other than admins cannot touch it.
    let user = Api::login(&stack.api(""), "user", "user123").await;
    let (status, denied) = user
        .post(&format!("/api/v1/admin/dlq/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(denied["code"], "forbidden");

    // An admin re-drives it: one more re-publish; still poison, so it is parked again.
    let (status, requested) = admin
        .post(&format!("/api/v1/admin/dlq/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{requested}");
    let again = wait_for(&admin, "the manual re-publish to fail again", |m| {
        m["attempts"] == 3 && m["status"] == "parked"
    })
    .await;
    assert_eq!(again["id"], id.as_str());

    // Discarding keeps the reason.
    let (status, discarded) = admin
        .post(
            &format!("/api/v1/admin/dlq/{id}/discard"),
            json!({ "reason": "not an event; written by a test" }),
        )
        .await;
    assert_eq!(status, 200, "{discarded}");
    assert_eq!(
        discarded["discard_reason"],
        "not an event; written by a test"
    );

    // dlq-processor counted it.
    let metrics = stack.metrics("dlq-processor").await;
    for name in [
        "kiln_dlq_received_total",
        "kiln_dlq_retried_total",
        "kiln_dlq_parked_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
