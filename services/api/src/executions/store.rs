//! The `executions` collection, as the api uses it.

use bson::doc;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use shared::executions::{EXECUTIONS_COLLECTION, ExecutionDoc};

use crate::error::ApiError;

pub fn collection(db: &Database) -> Collection<ExecutionDoc> {
    db.collection(EXECUTIONS_COLLECTION)
}

/// Every projection update rewrites all of a document's index entries (three or four per
/// execution), so only what the routes need: a user's history newest first (status and language
/// filters read it), the idempotency key, and the relay's pending marks.
pub fn indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "created_at": -1 })
            .build(),
        // A compound *sparse* index still holds every document that has `user_id`, with a null
        // key, so a second keyless execution of one user would collide. A partial index on the
        // key's presence is what "unique sparse" means here.
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "idempotency_key": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("user_idempotency_key_unique".to_owned())
                    .partial_filter_expression(doc! { "idempotency_key": { "$type": "string" } })
                    .build(),
            )
            .build(),
        super::relay::index(),
    ]
}

/// Indexes of earlier releases, dropped at start.
pub const RETIRED_INDEXES: &[&str] = &["user_id_1_status_1_lang_1_created_at_-1"];

/// Malformed ids are simply absent: they cannot be an execution id.
pub async fn get(db: &Database, id: &str) -> Result<Option<ExecutionDoc>, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    Ok(collection(db).find_one(doc! { "_id": id }).await?)
}

pub async fn find_by_key(
    db: &Database,
    user_id: &str,
    key: &str,
) -> Result<Option<ExecutionDoc>, ApiError> {
    Ok(collection(db)
        .find_one(doc! { "user_id": user_id, "idempotency_key": key })
        .await?)
}

/// Frees an expired `Idempotency-Key` for reuse by removing it from its old execution. This is
/// the only field the api changes after insert besides a failed publish; result-processor never
/// touches it.
pub async fn release_key(db: &Database, id: &str, key: &str) -> Result<(), ApiError> {
    collection(db)
        .update_one(
            doc! { "_id": id, "idempotency_key": key },
            doc! { "$unset": { "idempotency_key": "" } },
        )
        .await?;
    Ok(())
}
