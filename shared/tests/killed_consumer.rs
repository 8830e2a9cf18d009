//! A consumer process killed with SIGKILL in the middle of a run loses nothing: every message
//! whose side effect was not durable is delivered again to the next member of the group.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use common::{queued_event, test_config};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use shared::config::Config;
use shared::events::{EventType, topic_for};
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 40;
const GROUP: &str = "killed-consumer";

/// The side effect: one document per handling in MongoDB (duplicates allowed, losses not).
struct RecordInMongo(Database);

impl Handler for RecordInMongo {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        // Slow enough that the kill lands mid-run.
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.0
            .collection::<Document>("handled")
            .insert_one(doc! { "event_id": event.event_id.to_string() })
            .await
            .map_err(|e| HandlerError::retryable("mongo_write", e))?;
        Ok(())
    }
}

async fn consume_until_cancelled(config: &Config, db: Database, shutdown: CancellationToken) {
    let producer = EventProducer::new(&config.kafka, "killed-consumer").unwrap();
    run_consumer(
        config.kafka.clone(),
        ConsumerSettings {
            group_id: format!("{}{GROUP}", config.kafka.topic_prefix),
            topics: vec![topic_for(
                &config.kafka.topic_prefix,
                EventType::ExecutionQueued,
            )],
            client_id: "killed-consumer".into(),
            drain_timeout: Duration::from_secs(5),
            fetch_wait: None,
        },
        Arc::new(RecordInMongo(db)),
        producer,
        shutdown,
    )
    .await
    .unwrap();
}

async fn handled(db: &Database) -> Vec<String> {
    let mut cursor = db
        .collection::<Document>("handled")
        .find(doc! {})
        .await
        .unwrap();
    let mut ids = Vec::new();
    while cursor.advance().await.unwrap() {
        let doc = cursor.deserialize_current().unwrap();
        ids.push(doc.get_str("event_id").unwrap().to_owned());
    }
    ids
}

/// Runs only as the child process started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of a_sigkilled_consumer_loses_no_message"]
async fn child_consumer_process() {
    let config = test_config();
    let db = shared::mongo::connect(&config.mongo, "child")
        .await
        .unwrap();
    consume_until_cancelled(&config, db, CancellationToken::new()).await;
}

fn spawn_child(config: &Config) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_consumer_process",
            "--nocapture",
        ])
        .env("KILN_TEST_PREFIX", &config.kafka.topic_prefix)
        .env("KILN_TEST_DATABASE", &config.mongo.database)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_consumer_loses_no_message() {
    let config = test_config();
    ensure_topics(&config.kafka).await.unwrap();
    let db = shared::mongo::connect(&config.mongo, "parent")
        .await
        .unwrap();
    let producer = EventProducer::new(&config.kafka, "parent").unwrap();
    let mut sent = HashSet::new();
    for i in 0..MESSAGES {
        let event = queued_event(&format!("exec-{}", i % 7));
        producer.publish(&event).await.unwrap();
        sent.insert(event.event_id.to_string());
    }

    let mut child = spawn_child(&config);
    let mut progressed = false;
    for _ in 0..600 {
        if handled(&db).await.len() >= 10 {
            progressed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL: no drain, no final commit
    child.wait().unwrap();
    assert!(progressed, "the child consumer never got going");
    let before_restart = handled(&db).await.len();
    assert!(
        before_restart < MESSAGES,
        "the kill came too late to prove anything"
    );

    let shutdown = CancellationToken::new();
    let replacement = tokio::spawn({
        let (config, db, shutdown) = (config.clone(), db.clone(), shutdown.clone());
        async move { consume_until_cancelled(&config, db, shutdown).await }
    });
    let mut complete = false;
    for _ in 0..900 {
        let ids: HashSet<String> = handled(&db).await.into_iter().collect();
        if ids == sent {
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    replacement.await.unwrap();
    let all = handled(&db).await;
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert!(
        complete,
        "lost {} of {MESSAGES} messages",
        sent.difference(&distinct).count()
    );
    // At-least-once: a few messages handled around the kill may be handled twice, never more
    // than those the child had in flight or not yet committed.
    eprintln!(
        "handled {} times for {MESSAGES} messages ({} before the kill)",
        all.len(),
        before_restart
    );
    db.drop().await.unwrap();
}
