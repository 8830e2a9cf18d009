//! The `sagas` collection: documents, indexes and the conditional updates every transition uses.
//!
//! A transition is one `update_one` whose filter names the states it may leave, and whose update
//! records the new state, the step, any compensation and the events to publish (the outbox) at
//! once. So a crash after the write loses nothing: the outbox is published later (see
//! [`crate::outbox`]). `outbox_at` marks a saga with a non-empty outbox (sparse index), so the
//! re-publisher finds the few that need it without scanning every saga.
//!
//! A transition *replaces* the outbox rather than adding to it, so a published outbox needs no
//! write of its own to be emptied: the next transition does it. That is safe because what an
//! earlier outbox may still hold is moot once the saga moves on: a saga leaves `scheduled` only
//! when its executor reported an end (so the `create_pod_command` was delivered) or when it is
//! cancelled or failed, which must not create the executor any more.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::error::Error as MongoError;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use shared::events::{Event, ExecutionRequested};
use shared::mongo::batch::{BatchError, InsertBatcher, Inserted, Matched, UpdateBatcher};

use crate::queue::Queued;

pub const SAGAS_COLLECTION: &str = "sagas";
pub const LOCKS_COLLECTION: &str = "locks";
/// Outbox clean-ups sent in one command at the most.
const MAX_PULL_BATCH: usize = 256;
/// New sagas sent in one command at the most.
const MAX_INSERT_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    Queued,
    Scheduled,
    Running,
    Finished,
    Cancelled,
}

impl SagaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }

    /// States that hold a concurrency slot: the slot *is* the state.
    pub const ACTIVE: &'static [SagaState] = &[SagaState::Scheduled, SagaState::Running];
}

/// The execution flow a saga's events belong to (from the request, or whatever came first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub correlation_id: String,
    pub request_event_id: Option<String>,
    pub user_id: Option<String>,
    /// The request's trace: the scheduler and the outbox publish in it long after the request.
    #[serde(default)]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: String,
    pub at: DateTime,
    #[serde(default)]
    pub error: Option<String>,
}

impl Step {
    pub fn done(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: "completed".to_owned(),
            at: DateTime::now(),
            error: None,
        }
    }

    pub fn failed(name: &str, error: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: "failed".to_owned(),
            at: DateTime::now(),
            error: Some(error.into()),
        }
    }
}

/// An event written with a transition and not yet acknowledged by Kafka. Stored as its JSON so
/// that a re-publish sends the very same event (same `event_id`, so consumers de-duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub event: String,
}

/// A saga marked as having unpublished events, as the re-publisher reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct PendingOutbox {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    pub state: SagaState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub state: SagaState,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub enqueued_at: Option<DateTime>,
    #[serde(default)]
    pub scheduled_at: Option<DateTime>,
    #[serde(default)]
    pub deadline_at: Option<DateTime>,
    #[serde(default)]
    pub finished_at: Option<DateTime>,
    /// Absent on a marker: a cancel or terminal event that arrived before the request.
    #[serde(default)]
    pub request: Option<ExecutionRequested>,
    #[serde(default)]
    pub flow: Option<Flow>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub compensations: Vec<Step>,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    /// When the outbox last received entries; absent once it is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_at: Option<DateTime>,
    /// Who asked to cancel, when a cancel came first (kept for the later request).
    #[serde(default)]
    pub cancelled_by: Option<String>,
    pub updated_at: DateTime,
}

impl SagaDoc {
    /// The flow its events belong to, and the request event that caused them. A saga stored
    /// without one (a marker left by an early cancel) starts a new flow.
    pub fn flow_and_cause(&self) -> (Flow, Option<uuid::Uuid>) {
        let flow = self.flow.clone().unwrap_or_else(|| Flow {
            correlation_id: uuid::Uuid::now_v7().to_string(),
            request_event_id: None,
            user_id: self.user_id.clone(),
            traceparent: None,
        });
        let cause = flow
            .request_event_id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok());
        (flow, cause)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mongodb operation failed")]
    Mongo(#[from] MongoError),
    #[error("encoding a saga field failed")]
    Encode(#[from] bson::ser::Error),
    #[error("encoding an event failed")]
    Json(#[from] serde_json::Error),
    #[error("batched saga update failed")]
    Batch(#[from] BatchError),
}

/// One state change, applied only if the saga is still in one of `from`.
#[derive(Debug)]
pub struct Transition {
    pub from: &'static [SagaState],
    pub to: SagaState,
    /// Extra conditions (e.g. `deadline_at < now` for the sweeper).
    pub filter: Document,
    /// Extra fields to set.
    pub set: Document,
    pub step: Step,
    pub compensations: Vec<Step>,
    pub outbox: Vec<Event>,
}

impl Transition {
    pub fn new(from: &'static [SagaState], to: SagaState, step: Step) -> Self {
        Self {
            from,
            to,
            filter: Document::new(),
            set: Document::new(),
            step,
            compensations: Vec::new(),
            outbox: Vec::new(),
        }
    }
}

pub use shared::mongo::is_duplicate_key;

pub fn outbox_entries(events: &[Event]) -> Result<Vec<OutboxEntry>, StoreError> {
    events
        .iter()
        .map(|event| {
            Ok(OutboxEntry {
                id: event.event_id.to_string(),
                event: String::from_utf8_lossy(&event.to_json()?).into_owned(),
            })
        })
        .collect()
}

/// The conditional update that applies `transition` to saga `id`, and the events it stores in
/// the outbox.
fn transition_statement(
    id: &str,
    transition: Transition,
) -> Result<(Document, Document, Vec<Event>), StoreError> {
    let mut filter = doc! { "_id": id, "state": { "$in": states(transition.from) } };
    filter.extend(transition.filter);
    let mut set = transition.set;
    set.insert("state", transition.to.as_str());
    set.insert("updated_at", DateTime::now());
    let mut push = doc! { "steps": bson::to_bson(&transition.step)? };
    if !transition.compensations.is_empty() {
        push.insert(
            "compensations",
            doc! { "$each": bson::to_bson(&transition.compensations)? },
        );
    }
    let entries = outbox_entries(&transition.outbox)?;
    let pending = !entries.is_empty();
    set.insert("outbox", bson::to_bson(&entries)?);
    let mut update = doc! { "$push": push };
    if pending {
        set.insert("outbox_at", DateTime::now());
    } else {
        update.insert("$unset", doc! { "outbox_at": "" });
    }
    update.insert("$set", set);
    Ok((filter, update, transition.outbox))
}

fn states(list: &[SagaState]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

#[derive(Debug, Clone)]
pub struct SagaStore {
    sagas: Collection<SagaDoc>,
    raw: Collection<Document>,
    /// Outbox clean-ups are off the critical path and many: batched.
    pulls: UpdateBatcher,
    /// One new saga per request, from every partition at once: batched.
    inserts: InsertBatcher,
    /// Transitions nobody waits on (ending a saga): they linger for company.
    endings: UpdateBatcher,
}

/// How long an ending transition waits for others to share its command. It holds the slot that
/// much longer, but takes a command per execution off the database at load.
const ENDING_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

impl SagaStore {
    /// Starts the store's update batcher (a task): call from within the runtime.
    pub fn new(db: &Database) -> Self {
        Self {
            sagas: db.collection(SAGAS_COLLECTION),
            raw: db.collection(SAGAS_COLLECTION),
            pulls: UpdateBatcher::spawn(db.clone(), SAGAS_COLLECTION, MAX_PULL_BATCH),
            inserts: InsertBatcher::spawn(db.collection(SAGAS_COLLECTION), MAX_INSERT_BATCH),
            endings: UpdateBatcher::spawn_lingering(
                db.clone(),
                SAGAS_COLLECTION,
                MAX_PULL_BATCH,
                ENDING_LINGER,
            ),
        }
    }

    pub async fn ensure_indexes(db: &Database) -> Result<(), shared::mongo::MongoError> {
        let index = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        // Every saga write rewrites its index entries, so only what the queries need: all of
        // them select by `state` (queued, active, overdue among the few active ones).
        shared::mongo::ensure_indexes(
            db,
            SAGAS_COLLECTION,
            vec![
                index(
                    doc! { "state": 1, "priority": -1, "enqueued_at": 1 },
                    "state_priority_enqueued",
                ),
                IndexModel::builder()
                    .keys(doc! { "outbox_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("pending_outbox".to_owned())
                            .sparse(true)
                            .build(),
                    )
                    .build(),
            ],
        )
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<SagaDoc>, StoreError> {
        Ok(self.sagas.find_one(doc! { "_id": id }).await?)
    }

    /// Inserts a new saga; `false` when one with this id exists already.
    pub async fn insert(&self, saga: &SagaDoc) -> Result<bool, StoreError> {
        let document = bson::to_document(saga)?;
        Ok(self.inserts.insert(document).await? == Inserted::New)
    }

    /// Creates `fields` as a new saga only if none exists; `true` when this call created it.
    pub async fn insert_marker(&self, id: &str, fields: Document) -> Result<bool, StoreError> {
        let result = self
            .raw
            .update_one(doc! { "_id": id }, doc! { "$setOnInsert": fields })
            .upsert(true)
            .await;
        match result {
            Ok(result) => Ok(result.upserted_id.is_some()),
            // Two upserts racing on one _id: the loser sees the unique index.
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Applies `transition` if the saga is still in one of its `from` states; returns the events
    /// it wrote to the outbox (to publish now), or `None` when the saga had moved on.
    pub async fn apply(
        &self,
        id: &str,
        transition: Transition,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let (filter, update, outbox) = transition_statement(id, transition)?;
        let result = self.raw.update_one(filter, update).await?;
        Ok((result.matched_count == 1).then_some(outbox))
    }

    /// Like [`SagaStore::apply`], batched with other such transitions after a short linger.
    /// `None` may also mean "unknown" (a batch whose statements did not all match): the caller
    /// reads the saga to learn whether this transition is the one that moved it.
    pub async fn apply_lingering(
        &self,
        id: &str,
        transition: Transition,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let (filter, update, outbox) = transition_statement(id, transition)?;
        let Matched(matched) = self.endings.update_one(filter, update).await?;
        Ok(matched.then_some(outbox))
    }

    /// Removes published entries from a saga's outbox. Its pending mark stays until the
    /// re-publisher sees the outbox empty ([`SagaStore::clear_pending_marks`]): one write per
    /// transition on the hot path, not two.
    pub async fn pull_outbox(&self, id: &str, entry_ids: Vec<String>) -> Result<(), StoreError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        self.pulls
            .update_one(
                doc! { "_id": id },
                doc! { "$pull": { "outbox": { "id": { "$in": entry_ids } } } },
            )
            .await?;
        Ok(())
    }

    /// Drops the pending mark of sagas whose outbox is empty by now.
    pub async fn clear_pending_marks(&self, ids: Vec<String>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.raw
            .update_many(
                doc! { "_id": { "$in": ids }, "outbox": { "$size": 0 } },
                doc! { "$unset": { "outbox_at": "" } },
            )
            .await?;
        Ok(())
    }

    /// Sagas whose outbox was not emptied by the writer within `older_than`, except the active
    /// ones among `published` (their `scheduled` outbox went out and stays until the next
    /// transition replaces it). Only the outbox and the state are read.
    ///
    /// The exception is applied here, not in the query: with it (a `$nor` over the published
    /// ids) the query planner left the `outbox_at` index for a scan of every saga, which on the
    /// MongoDB-wire dev server held its lock for 200-400 ms at ~9 000 sagas, every sweep. The
    /// exceptions are active sagas, so at most the concurrency cap of the matches.
    pub async fn with_pending_outbox(
        &self,
        older_than: DateTime,
        published: &HashSet<String>,
    ) -> Result<Vec<PendingOutbox>, StoreError> {
        let pending: Vec<PendingOutbox> = self
            .raw
            .clone_with_type::<PendingOutbox>()
            .find(doc! { "outbox_at": { "$lt": older_than } })
            .projection(doc! { "outbox": 1, "state": 1 })
            .limit(500)
            .await?
            .try_collect()
            .await?;
        Ok(pending
            .into_iter()
            .filter(|p| !(SagaState::ACTIVE.contains(&p.state) && published.contains(&p.id)))
            .collect())
    }

    /// Slots in use, by user.
    pub async fn active_by_user(&self) -> Result<HashMap<String, usize>, StoreError> {
        let mut cursor = self
            .raw
            .find(doc! { "state": { "$in": states(SagaState::ACTIVE) } })
            .projection(doc! { "user_id": 1 })
            .await?;
        let mut counts = HashMap::new();
        while let Some(saga) = cursor.try_next().await? {
            let user = saga.get_str("user_id").unwrap_or_default().to_owned();
            *counts.entry(user).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Every queued saga with what ordering needs (no request bodies, no sort on the server).
    pub async fn queued(&self) -> Result<Vec<Queued>, StoreError> {
        let mut cursor = self
            .raw
            .find(doc! { "state": SagaState::Queued.as_str() })
            .projection(doc! { "user_id": 1, "priority": 1, "enqueued_at": 1 })
            .await?;
        let mut queued = Vec::new();
        while let Some(saga) = cursor.try_next().await? {
            let Ok(id) = saga.get_str("_id") else {
                continue;
            };
            queued.push(Queued {
                id: id.to_owned(),
                user_id: saga.get_str("user_id").unwrap_or_default().to_owned(),
                priority: saga.get_i32("priority").unwrap_or_default(),
                enqueued_at: saga
                    .get_datetime("enqueued_at")
                    .map_or(0, |at| at.timestamp_millis()),
            });
        }
        Ok(queued)
    }

    /// Sagas holding a slot whose deadline passed.
    pub async fn overdue(&self, now: DateTime) -> Result<Vec<SagaDoc>, StoreError> {
        let filter = doc! {
            "state": { "$in": states(SagaState::ACTIVE) },
            "deadline_at": { "$lt": now },
        };
        Ok(self
            .sagas
            .find(filter)
            .limit(500)
            .await?
            .try_collect()
            .await?)
    }

    pub fn to_bson<T: Serialize>(value: &T) -> Result<Bson, StoreError> {
        Ok(bson::to_bson(value)?)
    }
}
