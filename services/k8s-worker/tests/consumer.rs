//! The k8s-worker consumer through the real Kafka broker: a `create_pod_command` becomes a
//! sandbox and a `pod_created`; an unknown language becomes an `execution_failed`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_worker::Worker;
use kiln_runner_protocol::StatePaths;
use shared::events::{
    CreatePodCommand, ErrorType, Event, EventMetadata, EventPayload, EventType, ExecutionRequested,
    topic_for,
};
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use shared::lifecycle::Lifecycle;
use shared::testing::{delete_topics_with_prefix, test_config, wait_until};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Records every event it sees.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Event>>>);

impl Collector {
    fn find(&self, id: &str, event_type: EventType) -> Option<Event> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .find(|e| e.aggregate_id == id && e.event_type() == event_type)
            .cloned()
    }
}

impl Handler for Collector {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(message.decode_event()?);
        Ok(())
    }
}

fn create_command(id: &str, lang: &str, script: &str) -> Event {
    let request = ExecutionRequested {
        script: script.into(),
        lang: lang.into(),
        lang_version: String::new(),
        stdin: None,
        priority: 0,
        limits: common::limits(),
        agent: None,
    };
    let requested = Event::new(
        id,
        EventPayload::ExecutionRequested(request.clone()),
        EventMetadata::new("api", Some("user-1".into())),
    );
    // As the saga would: a command caused by the request, in its flow.
    requested.follow(
        EventPayload::CreatePodCommand(CreatePodCommand {
            saga_id: id.into(),
            request,
        }),
        "saga-orchestrator",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_commands_become_sandboxes_or_failures() {
    let config = test_config().unwrap();
    let prefix = config.kafka.topic_prefix.clone();
    ensure_topics(&config.kafka).await.unwrap();
    let producer = EventProducer::new(&config.kafka, "test").unwrap();
    let runtime = Arc::new(common::runtime().await);
    let lifecycle = Lifecycle::new(Duration::from_secs(5));

    let worker_settings = ConsumerSettings {
        group_id: "k8s-worker".into(),
        topics: vec![
            topic_for(&prefix, EventType::CreatePodCommand),
            topic_for(&prefix, EventType::DeletePodCommand),
        ],
        client_id: "k8s-worker-test".into(),
        drain_timeout: Duration::from_secs(5),
        fetch_wait: None,
    };
    let worker = Worker::new(Arc::clone(&runtime), producer.clone());
    let worker_task = tokio::spawn(run_consumer(
        config.kafka.clone(),
        worker_settings,
        Arc::new(worker),
        producer.clone(),
        lifecycle.shutdown_token(),
    ));
    let collector = Collector::default();
    let observer_settings = ConsumerSettings {
        group_id: "observer".into(),
        topics: vec![
            topic_for(&prefix, EventType::PodCreated),
            topic_for(&prefix, EventType::ExecutionFailed),
        ],
        client_id: "observer".into(),
        drain_timeout: Duration::from_secs(5),
        fetch_wait: None,
    };
    let observer_task = tokio::spawn(run_consumer(
        config.kafka.clone(),
        observer_settings,
        Arc::new(collector.clone()),
        producer.clone(),
        lifecycle.shutdown_token(),
    ));

    let ok_id = Uuid::now_v7().to_string();
    let ok = create_command(&ok_id, "bash", "echo via kafka");
    producer.publish(&ok).await.unwrap();
    let bad_id = Uuid::now_v7().to_string();
    producer
        .publish(&create_command(&bad_id, "cobol", "DISPLAY 'HI'."))
        .await
        .unwrap();

    let created = wait_until(WAIT, || {
        collector.find(&ok_id, EventType::PodCreated).is_some()
    })
    .await;
    let failed = wait_until(WAIT, || {
        collector
            .find(&bad_id, EventType::ExecutionFailed)
            .is_some()
    })
    .await;
    let paths = StatePaths::new(runtime.state_dir(&ok_id));
    let finished = wait_until(WAIT, || paths.result().exists()).await;
    lifecycle.begin_shutdown("test done");
    worker_task.await.unwrap().unwrap();
    observer_task.await.unwrap().unwrap();
    delete_topics_with_prefix(&config.kafka, &prefix)
        .await
        .unwrap();

    assert!(
        created && failed && finished,
        "created {created} failed {failed} result {finished}"
    );
    let pod = collector.find(&ok_id, EventType::PodCreated).unwrap();
    assert_eq!(pod.correlation_id, ok.correlation_id);
    assert_eq!(pod.causation_id, Some(ok.event_id));
    assert_eq!(pod.metadata.user_id.as_deref(), Some("user-1"));
    match pod.payload {
        EventPayload::PodCreated(executor) => {
            assert_eq!(executor.executor, format!("executor-{ok_id}"))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(paths.stdout()).unwrap(),
        "via kafka\n"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(paths.file("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["correlation_id"], ok.correlation_id.to_string());
    assert_eq!(meta["causation_id"], ok.event_id.to_string());
    assert_eq!(meta["execution_id"], ok_id);
    match collector
        .find(&bad_id, EventType::ExecutionFailed)
        .unwrap()
        .payload
    {
        EventPayload::ExecutionFailed(failure) => {
            assert_eq!(failure.error_type, ErrorType::SystemError);
            assert!(failure.message.contains("cobol"), "{}", failure.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!runtime.state_dir(&bad_id).exists());
}
