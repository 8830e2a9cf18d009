//! The `execution_finished` notification against real Kafka, MongoDB and Redis: created when
//! the terminal result is stored, once, however often the terminal event arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{self, doc};
use result_processor::Processor;
use result_processor::notify::Notifier;
use shared::config::Config;
use shared::events::{
    Event, EventMetadata, EventPayload, ExecutionFinished, ExecutionLimits, ExecutionOutcome,
    ExecutionRequested, ExecutionStatus, ResourceUsage,
};
use shared::executions::{EXECUTIONS_COLLECTION, ExecutionDoc};
use shared::kafka::{EventProducer, ensure_topics};
use shared::notifications::{NOTIFICATIONS_COLLECTION, NotificationDoc, stream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(45);

struct Setup {
    config: Config,
    db: Database,
    redis: redis::aio::ConnectionManager,
}

impl Setup {
    async fn new() -> Self {
        let config = shared::testing::test_config().unwrap();
        let db = shared::mongo::connect(&config.mongo, "rp-notify-test")
            .await
            .unwrap();
        Notifier::ensure_indexes(&db).await.unwrap();
        let redis = shared::redis::connect(&config.redis).await.unwrap();
        Self { config, db, redis }
    }

    async fn insert(&self, id: &str, user: &str) -> ExecutionDoc {
        let request = ExecutionRequested {
            script: "print(1)".into(),
            lang: "python".into(),
            lang_version: "3.11".into(),
            stdin: None,
            priority: 0,
            limits: ExecutionLimits {
                timeout_seconds: 10,
                memory_mb: 256,
                max_processes: 64,
                max_output_bytes: 1 << 20,
                max_file_bytes: 1 << 24,
            },
            agent: None,
        };
        let doc = ExecutionDoc::queued(
            id.to_owned(),
            user.to_owned(),
            &request,
            None,
            bson::DateTime::now(),
        );
        self.db
            .collection::<ExecutionDoc>(EXECUTIONS_COLLECTION)
            .insert_one(&doc)
            .await
            .unwrap();
        doc
    }

    async fn notifications(&self, execution_id: &str) -> Vec<NotificationDoc> {
        use futures::TryStreamExt as _;
        self.db
            .collection::<NotificationDoc>(NOTIFICATIONS_COLLECTION)
            .find(doc! { "execution_id": execution_id })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// The notification JSON documents in `user`'s stream.
    async fn streamed(&self, user: &str) -> Vec<serde_json::Value> {
        let mut conn = self.redis.clone();
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream::key(&self.config.redis.key_prefix, user))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        raw.into_iter()
            .map(|(_, fields)| serde_json::from_str(&fields[1]).unwrap())
            .collect()
    }

    async fn cleanup(self) {
        self.db.drop().await.ok();
    }
}

fn completed(id: &str, user: &str) -> Event {
    Event::new(
        id,
        EventPayload::ExecutionCompleted(ExecutionFinished {
            outcome: ExecutionOutcome {
                stdout: "1\n".into(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                exit_code: Some(0),
                resource_usage: ResourceUsage::default(),
                ..ExecutionOutcome::default()
            },
        }),
        EventMetadata::new("test", Some(user.into())),
    )
}

#[tokio::test]
async fn a_redelivered_terminal_event_notifies_once() {
    let setup = Setup::new().await;
    ensure_topics(&setup.config.kafka).await.unwrap();
    let producer = EventProducer::new(&setup.config.kafka, "rp-notify-test").unwrap();
    let shutdown = CancellationToken::new();
    let processor = Processor::new(
        &setup.config,
        &setup.db,
        setup.redis.clone(),
        producer.clone(),
    );
    let consumer = tokio::spawn(processor.run_consumer(
        setup.config.clone(),
        shutdown.clone(),
        Duration::from_secs(10),
    ));
    let id = uuid::Uuid::now_v7().to_string();
    let user = format!("user-{}", uuid::Uuid::now_v7());
    setup.insert(&id, &user).await;
    let event = completed(&id, &user);
    // The same event twice: what a redelivery after a crash looks like.
    producer.publish(&event).await.unwrap();
    producer.publish(&event).await.unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    while setup.streamed(&user).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notification never reached the user's stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = setup.notifications(&id).await;
    assert_eq!(stored.len(), 1);
    let notification = &stored[0];
    assert_eq!(notification.user_id, user);
    assert_eq!(notification.status, ExecutionStatus::Completed);
    assert_eq!(notification.kind, "execution_finished");
    assert!(!notification.read);
    assert!(
        notification.body.contains("exited with code 0"),
        "{}",
        notification.body
    );
    let streamed = setup.streamed(&user).await;
    assert_eq!(streamed[0]["id"], notification.id.as_str());
    assert_eq!(streamed[0]["execution_id"], id.as_str());
    assert_eq!(streamed[0]["status"], "completed");

    // Whatever the second delivery does, it must not add a second notification.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.notifications(&id).await.len(), 1);
    assert_eq!(setup.streamed(&user).await.len(), 1);

    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    shared::testing::delete_topics_with_prefix(
        &setup.config.kafka,
        &setup.config.kafka.topic_prefix,
    )
    .await
    .ok();
    setup.cleanup().await;
}

#[tokio::test]
async fn concurrent_calls_store_and_stream_one_notification() {
    let setup = Setup::new().await;
    let notifier = Notifier::new(
        &setup.db,
        setup.redis.clone(),
        setup.config.redis.key_prefix.clone(),
    );
    let id = uuid::Uuid::now_v7().to_string();
    let user = format!("user-{}", uuid::Uuid::now_v7());
    let mut execution = setup.insert(&id, &user).await;
    // Not terminal: nothing to say yet.
    notifier.execution_finished(&execution).await.unwrap();
    assert!(setup.notifications(&id).await.is_empty());

    execution.status = ExecutionStatus::Timeout;
    execution.error_message = Some("time limit of 10 s exceeded".into());
    let calls = (0..4).map(|_| notifier.execution_finished(&execution));
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap();
    }
    notifier.execution_finished(&execution).await.unwrap();
    let stored = setup.notifications(&id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title, "Execution timed out");
    assert!(stored[0].body.contains("time limit"), "{}", stored[0].body);
    let streamed = setup.streamed(&user).await;
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0]["id"], stored[0].id.as_str());
    setup.cleanup().await;
}
