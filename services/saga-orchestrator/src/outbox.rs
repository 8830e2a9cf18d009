//! Publishing a saga's outbox: the events its transitions wrote with the state change.
//!
//! The writer publishes right after its transition, from the events it has in hand (no read
//! back); whatever is left (a crash, Kafka down) is re-published by the scheduler leader from
//! MongoDB. Re-publishing sends the stored event unchanged, so a duplicate carries the same
//! `event_id`. The events of one transition go to different topics, which keep no order with
//! each other, so they are sent together.
//!
//! Two ways to be done with a published outbox: [`publish`] removes the acknowledged entries at
//! once (for transitions that end a saga: nothing else would ever replace them), while
//! [`publish_kept`] leaves them for the saga's next transition to replace (the scheduler's
//! `scheduled` outbox: every scheduled saga moves on, so one write per execution is saved).

use futures::future::join_all;
use shared::events::Event;
use shared::kafka::{EventProducer, KafkaError};

use crate::store::{PendingOutbox, SagaStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing a saga event failed")]
    Publish(#[from] KafkaError),
}

/// Sends `events` together: the ids Kafka acknowledged, and a failure if any send failed.
async fn send(producer: &EventProducer, events: &[Event]) -> (Vec<String>, Option<KafkaError>) {
    let results = join_all(events.iter().map(|event| producer.publish(event))).await;
    let mut published = Vec::with_capacity(events.len());
    let mut failure = None;
    for (event, result) in events.iter().zip(results) {
        match result {
            Ok(_) => published.push(event.event_id.to_string()),
            Err(error) => failure = Some(error),
        }
    }
    (published, failure)
}

/// Publishes `events`, just written to the outbox of saga `id`, and removes the acknowledged ones.
pub async fn publish(
    store: &SagaStore,
    producer: &EventProducer,
    id: &str,
    events: &[Event],
) -> Result<(), OutboxError> {
    if events.is_empty() {
        return Ok(());
    }
    let (published, failure) = send(producer, events).await;
    // Off the critical path: if the clean-up is lost, the re-publisher sends the events again
    // (same event ids) and clears them then.
    let store = store.clone();
    let saga_id = id.to_owned();
    tokio::spawn(async move {
        if let Err(error) = store.pull_outbox(&saga_id, published).await {
            tracing::debug!(%saga_id, %error, "outbox clean-up failed; the re-publisher retries it");
        }
    });
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Publishes `events`, just written to an outbox that the saga's next transition replaces;
/// `Ok` only when Kafka acknowledged every one of them.
pub async fn publish_kept(producer: &EventProducer, events: &[Event]) -> Result<(), OutboxError> {
    match send(producer, events).await {
        (_, Some(error)) => Err(error.into()),
        (_, None) => Ok(()),
    }
}

/// Publishes the outbox of a saga as stored (the re-publish path).
pub async fn flush_pending(
    store: &SagaStore,
    producer: &EventProducer,
    saga: &PendingOutbox,
) -> Result<(), OutboxError> {
    let mut events = Vec::with_capacity(saga.outbox.len());
    let mut undecodable = Vec::new();
    for entry in &saga.outbox {
        match Event::from_json(Some(entry.event.as_bytes())) {
            Ok(event) => events.push(event),
            Err(error) => {
                // Only this service writes the outbox, so this cannot happen short of a manual
                // edit; dropping the entry is better than re-sending the rest forever.
                tracing::error!(saga_id = %saga.id, entry = %entry.id, %error, "dropping an undecodable outbox entry");
                undecodable.push(entry.id.clone());
            }
        }
    }
    store.pull_outbox(&saga.id, undecodable).await?;
    publish(store, producer, &saga.id, &events).await
}
