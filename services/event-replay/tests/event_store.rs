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
    EventStore::prepare(&db, 1).await.unwrap();
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
            fetch_wait: None,
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

/// A database created by an earlier release (five secondary indexes, the TTL on `stored_at`)
/// starts with the current two: the retired ones are dropped, the clashing key is recreated with
/// its TTL, and a second start changes nothing.
#[tokio::test]
async fn an_earlier_releases_indexes_are_replaced() {
    let config = test_config().unwrap();
    let db = shared::mongo::connect(&config.mongo, "event-store-test")
        .await
        .unwrap();
    let events = db.collection::<Document>(EVENTS_COLLECTION);
    let plain = |keys: Document| mongodb::IndexModel::builder().keys(keys).build();
    events
        .create_indexes([
            plain(doc! { "aggregate_id": 1, "occurred_at": 1 }),
            plain(doc! { "event_type": 1, "occurred_at": 1 }),
            plain(doc! { "occurred_at": 1 }),
            plain(doc! { "user_id": 1, "occurred_at": 1 }),
            mongodb::IndexModel::builder()
                .keys(doc! { "stored_at": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("retention".to_owned())
                        .expire_after(Duration::from_secs(86_400))
                        .build(),
                )
                .build(),
        ])
        .await
        .unwrap();

    for _ in 0..2 {
        EventStore::prepare(&db, 7).await.unwrap();
        let mut names = events.list_index_names().await.unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "_id_",
                "aggregate_id_1_occurred_at_1",
                "retention_by_occurred_at"
            ]
        );
    }
    let ttl: Vec<_> = events
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let retention = ttl
        .iter()
        .find(|index| index.keys == doc! { "occurred_at": 1 })
        .unwrap();
    assert_eq!(
        retention.options.as_ref().unwrap().expire_after,
        Some(Duration::from_secs(7 * 86_400))
    );
}
