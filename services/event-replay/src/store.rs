//! The event store: every event of every Kiln topic, once, in MongoDB (`events`).

use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{self, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use shared::kafka::{Handler, HandlerError, InboundMessage};

pub const EVENTS_COLLECTION: &str = "events";

/// MongoDB's duplicate-key error: the event is already stored.
const DUPLICATE_KEY: i32 = 11_000;

/// Stores consumed events, keyed by `event_id`, so a redelivered message is stored once.
#[derive(Debug, Clone)]
pub struct EventStore {
    events: Collection<Document>,
}

impl EventStore {
    pub fn new(db: &Database) -> Self {
        Self {
            events: db.collection(EVENTS_COLLECTION),
        }
    }

    /// Indexes for the history and replay queries (by execution, type, time and user), plus the
    /// retention TTL.
    pub fn indexes(retention_days: u64) -> Vec<IndexModel> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        vec![
            index(doc! { "aggregate_id": 1, "occurred_at": 1 }),
            index(doc! { "event_type": 1, "occurred_at": 1 }),
            index(doc! { "occurred_at": 1 }),
            index(doc! { "user_id": 1, "occurred_at": 1 }),
            IndexModel::builder()
                .keys(doc! { "stored_at": 1 })
                .options(
                    IndexOptions::builder()
                        .name("retention".to_owned())
                        .expire_after(Duration::from_secs(retention_days * 86_400))
                        .build(),
                )
                .build(),
        ]
    }
}

impl Handler for EventStore {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        let body =
            bson::to_document(&event).map_err(|e| HandlerError::poison("unstorable_event", e))?;
        let document = doc! {
            "_id": event.event_id.to_string(),
            "event_type": event.event_type().as_str(),
            "aggregate_id": &event.aggregate_id,
            "correlation_id": event.correlation_id.to_string(),
            "causation_id": event.causation_id.map(|id| id.to_string()),
            "user_id": event.metadata.user_id.clone(),
            "occurred_at": bson::DateTime::from_chrono(event.occurred_at),
            "stored_at": bson::DateTime::from_chrono(Utc::now()),
            "topic": &message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "event": body,
        };
        match self.events.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate(&error) => Ok(()),
            Err(error) => Err(HandlerError::retryable("mongo_write", error)),
        }
    }
}

fn is_duplicate(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => {
            e.code == DUPLICATE_KEY
        }
        _ => false,
    }
}
