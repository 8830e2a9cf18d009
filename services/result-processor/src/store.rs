//! The `executions` projection. Only this service updates the collection after the api's insert,
//! and every update is conditional on a lower status (`statuses_below`), so a late or duplicated
//! event never moves a status back and the terminal result is written once.
//!
//! Updates go through a batcher: the projections of every partition being handled at once
//! travel in one `update` command. Its reply counts matches for the whole batch only, so callers
//! learn what happened from the document, not from the update. The `scheduled` and `running`
//! projections are soon superseded and nobody waits on them, so they linger for company; a
//! terminal result goes at once and takes the lingering ones with it, ahead of itself, so a
//! status is never written after the result that ends it.

use mongodb::bson::{self, DateTime, Document, doc};
use mongodb::{Collection, Database};
use shared::events::{Event, EventPayload, ExecutionOutcome, ExecutionStatus};
use shared::executions::{
    EXECUTIONS_COLLECTION, ExecutionDoc, clear_outbox, status_name, statuses_below,
};
use shared::mongo::batch::{BatchError, UpdateBatcher};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mongodb operation failed")]
    Mongo(#[from] mongodb::error::Error),
    #[error("encoding a result field failed")]
    Encode(#[from] bson::ser::Error),
    #[error("batched execution update failed")]
    Batch(#[from] BatchError),
}

/// Projections sent in one command at the most.
const MAX_BATCH: usize = 256;

/// How long an intermediate projection waits for others to share its command.
const PROJECTION_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct ExecutionStore {
    typed: Collection<ExecutionDoc>,
    updates: UpdateBatcher,
}

impl ExecutionStore {
    /// Starts the store's update batcher (a task): call from within the runtime.
    pub fn new(db: &Database) -> Self {
        Self {
            typed: db.collection(EXECUTIONS_COLLECTION),
            updates: UpdateBatcher::spawn_lingering(
                db.clone(),
                EXECUTIONS_COLLECTION,
                MAX_BATCH,
                PROJECTION_LINGER,
            ),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<ExecutionDoc>, StoreError> {
        Ok(self.typed.find_one(doc! { "_id": id }).await?)
    }

    /// Moves a non-terminal status forward, setting `set` with it, unless it is there already.
    /// May linger (see the module's comment).
    pub async fn advance(
        &self,
        id: &str,
        status: ExecutionStatus,
        set: Document,
    ) -> Result<(), StoreError> {
        let (filter, update) = advance_statement(id, status, set);
        self.updates.update_one(filter, update).await?;
        Ok(())
    }

    /// The `running` projection: status and `started_at`. `execution_started` and the terminal
    /// event travel on different topics, so after a backlog (a slow consumer-group join) the
    /// terminal one can be handled first; the status then stays terminal, but the start time
    /// is still recorded (a second statement, for a document without one). Both may linger and
    /// usually share one command.
    pub async fn started(&self, id: &str, at: DateTime) -> Result<(), StoreError> {
        let (filter, update) =
            advance_statement(id, ExecutionStatus::Running, doc! { "started_at": at });
        let late = self.updates.update_one(
            doc! { "_id": id, "started_at": null },
            doc! { "$set": { "started_at": at } },
        );
        let (advanced, filled) = tokio::join!(self.updates.update_one(filter, update), late);
        advanced?;
        filled?;
        Ok(())
    }

    /// Writes the terminal result of `event` if the execution is not terminal yet. Which event's
    /// result is stored is read back from the document (`result_event_id`).
    pub async fn store_terminal(
        &self,
        id: &str,
        event: &Event,
        status: ExecutionStatus,
    ) -> Result<(), StoreError> {
        let mut set = doc! {
            "status": status_name(status),
            "finished_at": DateTime::from_chrono(event.occurred_at),
            "result_event_id": event.event_id.to_string(),
        };
        match &event.payload {
            EventPayload::ExecutionCompleted(finished) => {
                outcome_fields(&mut set, &finished.outcome)?
            }
            EventPayload::ExecutionTimeout(timed_out) => {
                outcome_fields(&mut set, &timed_out.outcome)?;
                set.insert(
                    "error_message",
                    format!("time limit of {} s exceeded", timed_out.timeout_seconds),
                );
            }
            EventPayload::ExecutionFailed(failed) => {
                if let Some(outcome) = &failed.outcome {
                    outcome_fields(&mut set, outcome)?;
                }
                set.insert("error_type", bson::to_bson(&failed.error_type)?);
                set.insert("error_message", &failed.message);
            }
            EventPayload::ExecutionCancelled(cancelled) => {
                set.insert("error_message", format!("cancelled: {}", cancelled.reason));
            }
            _ => {}
        }
        let (filter, update) = advance_statement(id, status, set);
        self.updates.update_now(filter, update).await?;
        Ok(())
    }
}

/// The conditional update that moves `id` to `status` unless it is there or beyond already; it
/// also drops the api's outbox (see [`clear_outbox`]).
fn advance_statement(id: &str, status: ExecutionStatus, mut set: Document) -> (Document, Document) {
    set.insert("status", status_name(status));
    (
        doc! { "_id": id, "status": { "$in": statuses_below(status) } },
        doc! { "$set": set, "$unset": clear_outbox() },
    )
}

fn outcome_fields(set: &mut Document, outcome: &ExecutionOutcome) -> Result<(), StoreError> {
    set.insert("stdout", &outcome.stdout);
    set.insert("stderr", &outcome.stderr);
    set.insert("stdout_truncated", outcome.stdout_truncated);
    set.insert("stderr_truncated", outcome.stderr_truncated);
    set.insert("exit_code", outcome.exit_code);
    set.insert("resource_usage", bson::to_bson(&outcome.resource_usage)?);
    if let Some(agent) = &outcome.agent {
        set.insert("agent_result", bson::to_bson(agent)?);
    }
    Ok(())
}
