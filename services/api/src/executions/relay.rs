//! The api's outbox for `execution_requested`: an accepted execution is always announced.
//!
//! The api inserts the execution together with the event that announces it (`outbox`, marked by
//! `outbox_at`), then publishes the event. The mark goes with the result-processor's first
//! projection of the execution (`shared::executions::clear_outbox`), not with a write of its own.
//! A crash or a Kafka outage between the insert and the publish leaves the mark, and this relay
//! (on every api replica) publishes the event later and clears it. An execution still queued
//! after [`STALE_AFTER`] keeps its mark too and is announced a second time, once. The event keeps
//! its `event_id`, so a second copy (the relay racing a slow publish, a queued execution, two
//! replicas) changes nothing: the saga is created once per execution.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{self, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use shared::events::Event;
use shared::executions::{EXECUTIONS_COLLECTION, OUTBOX_FIELDS, clear_outbox};
use shared::kafka::EventProducer;
use shared::mongo::batch::UpdateBatcher;
use tokio_util::sync::CancellationToken;

/// How often the relay looks for unannounced executions.
pub const SCAN_EVERY: Duration = Duration::from_secs(2);
/// A mark younger than this belongs to a request still publishing it, or to an execution not
/// yet scheduled.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// Executions re-announced per scan at the most.
const PER_SCAN: i64 = 200;

/// The sparse index that finds marked executions without scanning the rest.
pub fn index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { OUTBOX_FIELDS[1]: 1 })
        .options(
            IndexOptions::builder()
                .name("pending_request".to_owned())
                .sparse(true)
                .build(),
        )
        .build()
}

/// Clears the mark of an event the relay published. Not awaited: if it is lost, the relay
/// publishes the event again (harmlessly) and clears it then.
pub fn clear_mark(updates: &UpdateBatcher, id: &str) {
    let updates = updates.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let cleared = updates
            .update_one(doc! { "_id": &id }, doc! { "$unset": clear_outbox() })
            .await;
        if let Err(error) = cleared {
            tracing::debug!(execution_id = %id, %error, "clearing the request mark failed; the relay will");
        }
    });
}

/// Runs until `shutdown`, publishing the events of executions whose publish never completed.
pub async fn run(
    db: Database,
    producer: EventProducer,
    updates: UpdateBatcher,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
        match relay_once(&db, &producer, &updates).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                count = n,
                "announced executions still marked after the relay's threshold (their publish failed, or they are still queued)"
            ),
            Err(error) => tracing::warn!(%error, "request relay scan failed; retrying"),
        }
    }
}

/// One scan; returns how many executions it announced.
pub async fn relay_once(
    db: &Database,
    producer: &EventProducer,
    updates: &UpdateBatcher,
) -> Result<usize, mongodb::error::Error> {
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let older_than = DateTime::from_millis(DateTime::now().timestamp_millis() - stale_ms);
    let [outbox, mark] = OUTBOX_FIELDS;
    let pending: Vec<Document> = db
        .collection::<Document>(EXECUTIONS_COLLECTION)
        .find(doc! { mark: { "$lt": older_than } })
        .projection(doc! { outbox: 1 })
        .limit(PER_SCAN)
        .await?
        .try_collect()
        .await?;
    let mut announced = 0;
    for execution in pending {
        let Ok(id) = execution.get_str("_id") else {
            continue;
        };
        let event = execution
            .get_str(outbox)
            .ok()
            .and_then(|json| Event::from_json(Some(json.as_bytes())).ok());
        let Some(event) = event else {
            // Not ours to repair by guessing: leave it visible in the log and drop the mark.
            tracing::error!(execution_id = %id, "execution has an unreadable request mark; clearing it");
            clear_mark(updates, id);
            continue;
        };
        match producer.publish(&event).await {
            Ok(_) => {
                announced += 1;
                clear_mark(updates, id);
            }
            Err(error) => {
                tracing::warn!(execution_id = %id, error = %error, "re-publishing execution_requested failed; will retry");
                break;
            }
        }
    }
    Ok(announced)
}

/// The mark fields an execution is inserted with.
pub fn mark(event: &Event) -> Result<(String, bson::DateTime), serde_json::Error> {
    let json = String::from_utf8_lossy(&event.to_json()?).into_owned();
    Ok((json, DateTime::now()))
}
