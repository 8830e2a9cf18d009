//! Kiln's `event-replay`: stores every event and replays stored events back into Kafka.
//!
//! Two components: the event store (every event of every topic, once, in MongoDB; replayed
//! copies are not stored again) and the replay engine (runs the replay sessions the admin API
//! creates; see [`replay`]).

pub mod replay;
mod store;

use shared::app::{Components, ServiceContext};
use shared::events::EventType;
use shared::kafka::{ConsumerSettings, run_consumer};

pub use replay::{ReplayEngine, SkipReplays};
pub use store::{EVENTS_COLLECTION, EventStore};

pub const SERVICE_NAME: &str = "event-replay";
/// How long the broker may hold a fetch of the event store's consumer to fill it.
const STORE_FETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let config = &context.config;
    EventStore::prepare(&context.infra.mongo, config.event_store.retention_days).await?;
    shared::mongo::ensure_indexes(
        &context.infra.mongo,
        shared::replay::SESSIONS_COLLECTION,
        ReplayEngine::session_indexes(),
    )
    .await?;
    // The store is read by people (history, replays), not by the pipeline: a fetch may wait
    // to fill, which spares the broker hundreds of fetches a second across every topic.
    let settings = ConsumerSettings {
        fetch_wait: Some(STORE_FETCH_WAIT),
        ..ConsumerSettings::for_event_types(
            &config.services.event_replay.consumer_group,
            &config.kafka.topic_prefix,
            EventType::ALL,
            SERVICE_NAME,
            context.lifecycle.drain_timeout(),
        )
    };
    let consumer = run_consumer(
        config.kafka.clone(),
        settings,
        std::sync::Arc::new(SkipReplays(std::sync::Arc::new(EventStore::new(
            &context.infra.mongo,
        )))),
        context.infra.producer.clone(),
        context.lifecycle.shutdown_token(),
    );
    let engine = ReplayEngine::new(
        &context.infra.mongo,
        context.infra.producer.clone(),
        config.kafka.clone(),
        &config.event_store,
        format!("{SERVICE_NAME}-{}", uuid::Uuid::now_v7()),
    );
    let shutdown = context.lifecycle.shutdown_token();
    Ok(Components::default()
        .spawn("event-store", async move { Ok(consumer.await?) })
        .spawn("replay-engine", engine.run(shutdown)))
}
