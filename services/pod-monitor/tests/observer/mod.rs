//! Every event pod-monitor publishes, consumed back from the real broker under a fresh topic
//! prefix (shared by the test files of the local and the Kubernetes monitor).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::events::{Event, EventType, topic_for};
use shared::kafka::{
    ConsumerSettings, EventProducer, Handler, HandlerError, InboundMessage, ensure_topics,
    run_consumer,
};
use shared::testing::test_config;
use tokio_util::sync::{CancellationToken, DropGuard};

#[derive(Clone, Default)]
pub(crate) struct Events(Arc<Mutex<Vec<Event>>>);

impl Handler for Events {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(message.decode_event()?);
        Ok(())
    }
}

impl Events {
    /// The events of one execution, in the order they were made (event ids are UUIDv7): the
    /// order of arrival mixes topics.
    pub(crate) fn of(&self, id: &str) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.aggregate_id == id)
            .cloned()
            .collect();
        events.sort_by_key(|e| e.event_id);
        events
    }

    pub(crate) fn count(&self, id: &str, event_type: EventType) -> usize {
        self.of(id)
            .iter()
            .filter(|e| e.event_type() == event_type)
            .count()
    }
}

/// A producer for the monitor and the events it publishes; consuming stops when the guard drops
/// (also when an assertion fails: the consumer's blocking poll would keep the test alive).
pub(crate) struct Observer {
    pub(crate) events: Events,
    pub(crate) producer: EventProducer,
    _stop: DropGuard,
}

pub(crate) async fn observe() -> Observer {
    let config = test_config().unwrap();
    ensure_topics(&config.kafka).await.unwrap();
    let producer = EventProducer::new(&config.kafka, "pod-monitor-test").unwrap();
    let events = Events::default();
    let shutdown = CancellationToken::new();
    let topics = [
        EventType::PodScheduled,
        EventType::PodRunning,
        EventType::ExecutionStarted,
        EventType::ExecutionOutput,
        EventType::ExecutionCompleted,
        EventType::ExecutionTimeout,
        EventType::ExecutionFailed,
        EventType::PodTerminated,
    ]
    .iter()
    .map(|t| topic_for(&config.kafka.topic_prefix, *t))
    .collect();
    tokio::spawn(run_consumer(
        config.kafka.clone(),
        ConsumerSettings {
            group_id: format!("{}observer", config.kafka.topic_prefix),
            topics,
            client_id: "observer".into(),
            drain_timeout: Duration::from_secs(2),
            fetch_wait: None,
        },
        Arc::new(events.clone()),
        producer.clone(),
        shutdown.clone(),
    ));
    Observer {
        events,
        producer,
        _stop: shutdown.drop_guard(),
    }
}
