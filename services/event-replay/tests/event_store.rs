//! The event store against real Kafka and MongoDB: every event once, even when redelivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use event_replay::{EVENTS_COLLECTION, EventStore};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use shared::events::{Event, EventMetadata, EventPayload, EventType, ExecutionQueued, topic_for};
use shared::kafka::headers::HeaderList;
use shared::kafka::{ConsumerSettings, EventProducer, ensure_topics, run_consumer};
use shared::testing::test_config;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_stored_once_even_when_delivered_twice() {
    let config = test_config().unwrap();
    ensure_topics(&config.kafka).await.unwrap();
    let db = shared::mongo::connect(&config.mongo, "event-store-test")
        .await
        .unwrap();
    shared::mongo::ensure_indexes(&db, EVENTS_COLLECTION, EventStore::indexes(1))
        .await
        .unwrap();
    let producer = EventProducer::new(&config.kafka, "event-store-test").unwrap();
    let event = Event::new(
        "exec-42",
        EventPayload::ExecutionQueued(ExecutionQueued { position: Some(2) }),
        EventMetadata::new("test", Some("user-9".into())),
    );
    producer.publish(&event).await.unwrap();
    // The same event again, as a redelivery or a producer retry would bring it.
    let topic = topic_for(&config.kafka.topic_prefix, EventType::ExecutionQueued);
    producer
        .send(
            &topic,
            Some(b"exec-42"),
            Some(&event.to_json().unwrap()),
            &HeaderList::default(),
        )
        .await
        .unwrap();
    let other = Event::new(
        "exec-43",
        EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
        EventMetadata::new("test", None),
    );
    producer.publish(&other).await.unwrap();

    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        config.kafka.clone(),
        ConsumerSettings {
            group_id: format!("{}event-store", config.kafka.topic_prefix),
            topics: vec![topic],
            client_id: "event-store-test".into(),
            drain_timeout: Duration::from_secs(5),
        },
        Arc::new(EventStore::new(&db)),
        producer,
        shutdown.clone(),
    ));
    let events = db.collection::<Document>(EVENTS_COLLECTION);
    for _ in 0..300 {
        if events.count_documents(doc! {}).await.unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    let all: Vec<Document> = events
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "stored once each: {all:?}");
    let first = all
        .iter()
        .find(|d| d.get_str("aggregate_id").unwrap() == "exec-42")
        .unwrap();
    assert_eq!(first.get_str("_id").unwrap(), event.event_id.to_string());
    assert_eq!(first.get_str("event_type").unwrap(), "execution_queued");
    assert_eq!(first.get_str("user_id").unwrap(), "user-9");
    assert_eq!(
        first
            .get_document("event")
            .unwrap()
            .get_document("payload")
            .unwrap()
            .get_i64("position")
            .unwrap_or(2),
        2
    );
    db.drop().await.unwrap();
}
