//! Publishing a saga's outbox: the events its last transitions wrote, in order.
//!
//! The writer publishes right after its transition; whatever is left (a crash, Kafka down) is
//! re-published by the scheduler leader. Re-publishing sends the stored event unchanged, so a
//! duplicate carries the same `event_id`.

use shared::events::Event;
use shared::kafka::{EventProducer, KafkaError};

use crate::store::{SagaDoc, SagaStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing a saga event failed")]
    Publish(#[from] KafkaError),
}

/// Publishes the outbox of saga `id` as currently stored.
pub async fn flush(
    store: &SagaStore,
    producer: &EventProducer,
    id: &str,
) -> Result<(), OutboxError> {
    match store.get(id).await? {
        Some(saga) => flush_doc(store, producer, &saga).await,
        None => Ok(()),
    }
}

pub async fn flush_doc(
    store: &SagaStore,
    producer: &EventProducer,
    saga: &SagaDoc,
) -> Result<(), OutboxError> {
    let mut published = Vec::new();
    let mut failure = None;
    for entry in &saga.outbox {
        let event = match Event::from_json(Some(entry.event.as_bytes())) {
            Ok(event) => event,
            Err(error) => {
                // Only this service writes the outbox, so this cannot happen short of a manual
                // edit; dropping the entry is better than blocking every later one behind it.
                tracing::error!(saga_id = %saga.id, entry = %entry.id, %error, "dropping an undecodable outbox entry");
                published.push(entry.id.clone());
                continue;
            }
        };
        match producer.publish(&event).await {
            Ok(_) => published.push(entry.id.clone()),
            Err(error) => {
                // Stop here: the events after this one must not overtake it.
                failure = Some(error);
                break;
            }
        }
    }
    store.pull_outbox(&saga.id, &published).await?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}
