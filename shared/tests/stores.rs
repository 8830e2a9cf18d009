//! MongoDB and Redis plumbing against the real servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::test_config;
use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use redis::AsyncCommands;
use secrecy::SecretString;

#[tokio::test]
async fn mongo_connects_creates_indexes_idempotently_and_enforces_them() {
    let config = test_config();
    let db = shared::mongo::connect(&config.mongo, "stores-test")
        .await
        .unwrap();
    shared::mongo::ping(&db).await.unwrap();
    let unique = || {
        vec![
            IndexModel::builder()
                .keys(doc! { "event_id": 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("event_id_unique".to_owned())
                        .build(),
                )
                .build(),
        ]
    };
    shared::mongo::ensure_indexes(&db, "events", unique())
        .await
        .unwrap();
    shared::mongo::ensure_indexes(&db, "events", unique())
        .await
        .unwrap();

    let events = db.collection::<Document>("events");
    events
        .insert_one(doc! { "event_id": "e-1", "n": 1 })
        .await
        .unwrap();
    let duplicate = events.insert_one(doc! { "event_id": "e-1", "n": 2 }).await;
    assert!(
        duplicate.is_err(),
        "the unique index must reject a second e-1"
    );
    let stored = events
        .find_one(doc! { "event_id": "e-1" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_i32("n").unwrap(), 1);
    db.drop().await.unwrap();
}

#[tokio::test]
async fn mongo_ping_fails_clearly_when_the_server_is_unreachable() {
    let mut config = test_config();
    config.mongo.uri = SecretString::from("mongodb://127.0.0.1:1/?directConnection=true");
    config.mongo.server_selection_timeout_ms = 300;
    let db = shared::mongo::connect(&config.mongo, "stores-test")
        .await
        .unwrap();
    let error = shared::mongo::ping(&db).await.unwrap_err();
    assert!(
        matches!(error, shared::mongo::MongoError::Ping(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn redis_connects_and_round_trips_values_and_pubsub() {
    let config = test_config();
    let mut conn = shared::redis::connect(&config.redis).await.unwrap();
    shared::redis::ping(&conn).await.unwrap();
    let key = format!("{}test:{}", config.redis.key_prefix, uuid::Uuid::now_v7());
    let _: () = conn.set_ex(&key, "héllo", 60).await.unwrap();
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "héllo");
    let _: () = conn.del(&key).await.unwrap();

    let client =
        redis::Client::open(secrecy::ExposeSecret::expose_secret(&config.redis.url)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&key).await.unwrap();
    let receivers: i64 = conn.publish(&key, "chunk-1").await.unwrap();
    assert_eq!(receivers, 1);
    let mut stream = pubsub.on_message();
    let message = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures::StreamExt::next(&mut stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "chunk-1");
}

#[tokio::test]
async fn redis_connect_fails_clearly_when_the_server_is_unreachable() {
    let mut config = test_config();
    config.redis.url = SecretString::from("redis://127.0.0.1:1/");
    config.redis.response_timeout_ms = 300;
    let error = shared::redis::connect(&config.redis).await.unwrap_err();
    assert!(
        matches!(error, shared::redis::RedisError::Connect(_)),
        "{error:?}"
    );
}
