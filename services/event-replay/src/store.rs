//! The event store: every event of every Kiln topic, once, in MongoDB (`events`).
//!
//! Inserts go through a batcher: every partition of every topic is handled in parallel, and one
//! `insert_many` for all the events waiting costs the server far less than one insert each.

use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{self, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use shared::kafka::{Handler, HandlerError, InboundMessage};
use shared::mongo::MongoError;
use shared::mongo::batch::InsertBatcher;

pub const EVENTS_COLLECTION: &str = "events";

/// Events sent in one `insert_many` at the most.
const MAX_BATCH: usize = 256;

/// Stores consumed events, keyed by `event_id`, so a redelivered message is stored once.
#[derive(Debug, Clone)]
pub struct EventStore {
    events: InsertBatcher,
}

impl EventStore {
    /// Starts the store's insert batcher (a task): call from within the runtime.
    pub fn new(db: &Database) -> Self {
        let events: Collection<Document> = db.collection(EVENTS_COLLECTION);
        Self {
            events: InsertBatcher::spawn(events, MAX_BATCH),
        }
    }

    /// Creates the store's indexes and drops those of earlier releases; every start calls it.
    pub async fn prepare(db: &Database, retention_days: u64) -> Result<(), MongoError> {
        shared::mongo::drop_retired_indexes(db, EVENTS_COLLECTION, RETIRED_INDEXES).await?;
        shared::mongo::ensure_indexes(db, EVENTS_COLLECTION, Self::indexes(retention_days)).await
    }

    /// Indexes for the history (by execution) and for replays and retention (by time). Every
    /// event is written once and read rarely, so no more than that: each index costs every
    /// insert (~13 per execution). Replays filtered by type or user read the time range.
    pub fn indexes(retention_days: u64) -> Vec<IndexModel> {
        vec![
            IndexModel::builder()
                .keys(doc! { "aggregate_id": 1, "occurred_at": 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "occurred_at": 1 })
                .options(
                    IndexOptions::builder()
                        .name(RETENTION_INDEX.to_owned())
                        .expire_after(Duration::from_secs(retention_days * 86_400))
                        .build(),
                )
                .build(),
        ]
    }
}

/// The TTL index on `occurred_at`; it also serves time-range replays.
const RETENTION_INDEX: &str = "retention_by_occurred_at";

/// Indexes of earlier releases: dropped at start (the `occurred_at_1` one would clash with the
/// retention index on the same key).
const RETIRED_INDEXES: &[&str] = &[
    "event_type_1_occurred_at_1",
    "occurred_at_1",
    "user_id_1_occurred_at_1",
    "retention",
];

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
        // A duplicate is a redelivery of an event already stored: done.
        self.events
            .insert(document)
            .await
            .map(|_| ())
            .map_err(|error| HandlerError::retryable("mongo_write", error))
    }
}
