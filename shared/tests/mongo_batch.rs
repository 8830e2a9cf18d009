//! The write batchers against the real MongoDB-wire server: each caller gets its own outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use mongodb::bson::{Document, doc};
use secrecy::ExposeSecret;
use shared::mongo::batch::{BatchError, InsertBatcher, Inserted, Matched, UpdateBatcher};

async fn database() -> mongodb::Database {
    let config = common::test_config();
    shared::mongo::connect(&config.mongo, "mongo-batch-test")
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_inserts_each_learn_whether_they_were_new() {
    let db = database().await;
    let collection = db.collection::<Document>("batched_inserts");
    let batcher = InsertBatcher::spawn(collection.clone(), 64);
    // 200 writers at once, ids 0..100 twice: exactly one of each pair is new.
    let writes = (0..200).map(|i| {
        let batcher = batcher.clone();
        async move {
            let id = i % 100;
            (id, batcher.insert(doc! { "_id": id, "n": i }).await)
        }
    });
    let outcomes = join_all(writes).await;
    let mut new = [0u32; 100];
    for (id, outcome) in outcomes {
        match outcome.unwrap() {
            Inserted::New => new[usize::try_from(id).unwrap()] += 1,
            Inserted::Duplicate => {}
        }
    }
    assert!(
        new.iter().all(|n| *n == 1),
        "each id inserted once: {new:?}"
    );
    assert_eq!(collection.count_documents(doc! {}).await.unwrap(), 100);
}

#[tokio::test]
async fn updates_keep_their_order_and_report_their_own_failure() {
    let db = database().await;
    let collection = db.collection::<Document>("batched_updates");
    collection
        .insert_many([
            doc! { "_id": "a", "n": 0 },
            doc! { "_id": "b", "s": "text" },
        ])
        .await
        .unwrap();
    let batcher = UpdateBatcher::spawn(db.clone(), "batched_updates", 64);
    let increments = (0..50).map(|_| {
        let batcher = batcher.clone();
        async move {
            batcher
                .update_one(doc! { "_id": "a" }, doc! { "$inc": { "n": 1 } })
                .await
        }
    });
    for outcome in join_all(increments).await {
        assert!(matches!(outcome, Ok(Matched(_))), "{outcome:?}");
    }
    let a = collection
        .find_one(doc! { "_id": "a" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.get_i32("n").unwrap(), 50);

    // $inc on a string fails that statement only (it is alone in its batch here).
    let failed = batcher
        .update_one(doc! { "_id": "b" }, doc! { "$inc": { "s": 1 } })
        .await;
    assert!(
        matches!(failed, Err(BatchError::Write { .. })),
        "{failed:?}"
    );
    let missing = batcher
        .update_one(doc! { "_id": "nope" }, doc! { "$set": { "x": 1 } })
        .await
        .unwrap();
    assert_eq!(missing, Matched(false));
    let hit = batcher
        .update_one(doc! { "_id": "a" }, doc! { "$set": { "x": 1 } })
        .await
        .unwrap();
    assert_eq!(hit, Matched(true));
}

/// A database handle that counts the `update` commands it sends.
async fn counting_updates() -> (mongodb::Database, Arc<AtomicUsize>) {
    let config = common::test_config();
    let updates = Arc::new(AtomicUsize::new(0));
    let mut options = mongodb::options::ClientOptions::parse(config.mongo.uri.expose_secret())
        .await
        .unwrap();
    options.command_event_handler = Some(mongodb::event::EventHandler::callback({
        let updates = Arc::clone(&updates);
        move |event| {
            if let mongodb::event::command::CommandEvent::Started(started) = event
                && started.command_name == "update"
            {
                updates.fetch_add(1, Ordering::SeqCst);
            }
        }
    }));
    let db = mongodb::Client::with_options(options)
        .unwrap()
        .database(&config.mongo.database);
    (db, updates)
}

/// A lingering batcher holds a batch for writes that come shortly after: writes spread over
/// 100 ms travel in a couple of `update` commands instead of one each.
#[tokio::test]
async fn a_lingering_batcher_sends_writes_spread_over_time_together() {
    let (db, updates) = counting_updates().await;
    let collection = db.collection::<Document>("lingering_updates");
    collection
        .insert_one(doc! { "_id": "a", "n": 0 })
        .await
        .unwrap();
    let batcher =
        UpdateBatcher::spawn_lingering(db.clone(), "lingering_updates", 64, Duration::from_secs(1));
    let writes = (0..20u64).map(|i| {
        let batcher = batcher.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5 * i)).await;
            batcher
                .update_one(doc! { "_id": "a" }, doc! { "$inc": { "n": 1 } })
                .await
        }
    });
    for outcome in join_all(writes).await {
        assert!(matches!(outcome, Ok(Matched(true))), "{outcome:?}");
    }
    let a = collection
        .find_one(doc! { "_id": "a" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.get_i32("n").unwrap(), 20);
    assert_eq!(updates.load(Ordering::SeqCst), 1, "one command for all 20");
}

/// A write due now does not wait out a lingering batch: it takes the lingering writes with it,
/// after them, in one command.
#[tokio::test]
async fn a_write_due_now_ends_the_linger_and_keeps_the_order() {
    let (db, updates) = counting_updates().await;
    let collection = db.collection::<Document>("urgent_updates");
    collection
        .insert_one(doc! { "_id": "a", "log": [] })
        .await
        .unwrap();
    // Far longer than the test may take: only the urgent write can end this batch's wait.
    let batcher =
        UpdateBatcher::spawn_lingering(db.clone(), "urgent_updates", 64, Duration::from_secs(600));
    let lingering = {
        let batcher = batcher.clone();
        tokio::spawn(async move {
            batcher
                .update_one(
                    doc! { "_id": "a" },
                    doc! { "$push": { "log": "lingering" } },
                )
                .await
        })
    };
    // Let the lingering write reach the batcher first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = tokio::time::timeout(
        Duration::from_secs(30),
        batcher.update_now(doc! { "_id": "a" }, doc! { "$push": { "log": "now" } }),
    )
    .await
    .expect("the urgent write waited out the linger");
    assert_eq!(now.unwrap(), Matched(true));
    assert_eq!(lingering.await.unwrap().unwrap(), Matched(true));
    let a = collection
        .find_one(doc! { "_id": "a" })
        .await
        .unwrap()
        .unwrap();
    let log: Vec<&str> = a
        .get_array("log")
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(log, ["lingering", "now"]);
    assert_eq!(updates.load(Ordering::SeqCst), 1, "one command for both");
}
