//! Kiln's `event-replay`: stores every event and replays stored events back into Kafka.
//!
//! Today it runs the event store (every event of every topic, once, in MongoDB); replay
//! sessions come with the reliability work.

mod store;

use shared::app::{Components, ServiceContext};
use shared::events::EventType;
use shared::kafka::{ConsumerSettings, run_consumer};

pub use store::{EVENTS_COLLECTION, EventStore};

pub const SERVICE_NAME: &str = "event-replay";

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let config = &context.config;
    shared::mongo::ensure_indexes(
        &context.infra.mongo,
        EVENTS_COLLECTION,
        EventStore::indexes(config.event_store.retention_days),
    )
    .await?;
    let settings = ConsumerSettings::for_event_types(
        &config.services.event_replay.consumer_group,
        &config.kafka.topic_prefix,
        EventType::ALL,
        SERVICE_NAME,
        context.lifecycle.drain_timeout(),
    );
    let consumer = run_consumer(
        config.kafka.clone(),
        settings,
        std::sync::Arc::new(EventStore::new(&context.infra.mongo)),
        context.infra.producer.clone(),
        context.lifecycle.shutdown_token(),
    );
    Ok(Components::default().spawn("event-store", async move { Ok(consumer.await?) }))
}
