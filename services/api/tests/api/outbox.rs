//! The api's outbox: an accepted execution is announced even when the publish after the insert
//! never happens (a crash) or fails (Kafka refuses it).

use std::time::Duration;

use api::executions::relay;
use mongodb::bson::{Document, doc};
use serde_json::json;
use shared::events::EventType;
use shared::executions::EXECUTIONS_COLLECTION;
use shared::kafka::EventProducer;
use shared::mongo::batch::UpdateBatcher;

use crate::common::TestApp;

async fn execution(app: &TestApp, id: &str) -> Document {
    app.db
        .collection::<Document>(EXECUTIONS_COLLECTION)
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
        .unwrap()
}

/// Waits until the execution's outbox mark is gone.
async fn mark_cleared(app: &TestApp, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if !execution(app, id).await.contains_key("outbox_at") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The relay as an api replica runs it: its own producer and mark batcher.
struct Relay {
    producer: EventProducer,
    updates: UpdateBatcher,
}

impl Relay {
    fn new(app: &TestApp) -> Self {
        Self {
            producer: EventProducer::new(&app.config.kafka, "relay-test").unwrap(),
            updates: UpdateBatcher::spawn(app.db.clone(), EXECUTIONS_COLLECTION, 16),
        }
    }

    /// One scan; how many executions it announced.
    async fn once(&self, app: &TestApp) -> usize {
        relay::relay_once(&app.db, &self.producer, &self.updates)
            .await
            .unwrap()
    }
}

/// A published request keeps its mark: the result-processor's first projection drops it (no
/// write of the api's own), and the relay leaves it alone while it is young.
#[tokio::test]
async fn a_published_request_keeps_its_mark_for_the_first_projection() {
    let app = TestApp::start().await;
    let session = app.user("outbox-user").await;
    let token = app.token(&session).await;
    let (status, body) = app
        .submit(&token, json!({ "lang": "python", "script": "print(1)" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["execution_id"].as_str().unwrap();
    let events = app
        .consume(EventType::ExecutionRequested, 1, Duration::from_millis(300))
        .await;
    assert_eq!(events.len(), 1, "published once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(execution(&app, id).await.contains_key("outbox_at"));
    assert_eq!(
        Relay::new(&app).once(&app).await,
        0,
        "younger than the relay's threshold"
    );
    app.cleanup().await;
}

/// Kafka refuses the publish (the topic is gone): the request is still accepted, the execution
/// keeps its announcement, and the relay publishes that very event once Kafka takes it.
#[tokio::test]
async fn a_failed_publish_is_relayed_later_with_the_same_event() {
    let app = TestApp::start_with(|c| c.kafka.delivery_timeout_ms = 1500).await;
    let session = app.user("outbox-user").await;
    let token = app.token(&session).await;
    let prefix = app.config.kafka.topic_prefix.clone();
    shared::testing::delete_topics_with_prefix(&app.config.kafka, &prefix)
        .await
        .unwrap();
    let (status, body) = app
        .submit(&token, json!({ "lang": "python", "script": "print(2)" }))
        .await;
    assert_eq!(status, 202, "accepted although Kafka refused: {body}");
    let id = body["execution_id"].as_str().unwrap().to_owned();
    let stored = execution(&app, &id).await;
    assert!(stored.contains_key("outbox_at"), "the announcement waits");
    let stored_event =
        shared::events::Event::from_json(Some(stored.get_str("outbox").unwrap().as_bytes()))
            .unwrap();

    shared::kafka::ensure_topics_named(
        &app.config.kafka,
        &[app.topic(EventType::ExecutionRequested)],
    )
    .await
    .unwrap();
    let replica = Relay::new(&app);
    // Younger than the relay's threshold: a request may still be publishing it.
    assert_eq!(replica.once(&app).await, 0);
    tokio::time::sleep(relay::STALE_AFTER + Duration::from_millis(200)).await;
    assert_eq!(replica.once(&app).await, 1);
    assert!(mark_cleared(&app, &id).await);

    let events = app
        .consume(EventType::ExecutionRequested, 1, Duration::from_millis(300))
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, id, "keyed by the execution");
    assert_eq!(
        events[0].1.event_id, stored_event.event_id,
        "the stored event itself"
    );
    app.cleanup().await;
}
