//! The processor's writes to `dlq_messages`: store a new failure, apply a re-published copy's
//! failure, claim a due message, and record how its re-publish ended. Reads and admin actions
//! are in `shared::dlq`.

use chrono::{Duration, Utc};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ReturnDocument;
use shared::dlq::{Claim, DlqMessage, DlqStatus, DlqStore, HistoryEntry};

pub type MongoResult<T> = Result<T, mongodb::error::Error>;

/// How storing a new failure ended.
#[derive(Debug)]
pub enum Inserted {
    New,
    /// The same original message is already stored (a redelivered dead-letter copy).
    Duplicate,
}

/// How a claimed message's re-publish is recorded; every write is conditional on the claim, so
/// an instance whose claim expired (and was taken over) changes nothing.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message: DlqMessage,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct ProcessorStore {
    pub shared: DlqStore,
}

fn history(entry: &HistoryEntry) -> MongoResult<Bson> {
    Ok(bson::to_bson(entry)?)
}

impl ProcessorStore {
    pub fn new(shared: DlqStore) -> Self {
        Self { shared }
    }

    pub async fn insert(&self, message: &DlqMessage) -> MongoResult<Inserted> {
        match self.shared.collection.insert_one(message).await {
            Ok(_) => Ok(Inserted::New),
            Err(error) if shared::mongo::is_duplicate_key(&error) => Ok(Inserted::Duplicate),
            Err(error) => Err(error),
        }
    }

    /// Replaces the fields in `set` and appends `entries` and `source`, if the document is still
    /// at `version`. `false`: someone wrote in between; read again and redecide.
    pub async fn update_if_version(
        &self,
        id: &str,
        version: i64,
        set: Document,
        entries: &[HistoryEntry],
        source: &str,
    ) -> MongoResult<bool> {
        let entries = entries
            .iter()
            .map(history)
            .collect::<MongoResult<Vec<Bson>>>()?;
        let result = self
            .shared
            .collection
            .update_one(
                doc! { "_id": id, "version": version },
                doc! {
                    "$set": set,
                    "$push": { "history": { "$each": entries }, "sources": source },
                    "$inc": { "version": 1 },
                },
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    /// Takes one due message (pending and due, or retrying under an expired claim) for this
    /// instance. The conditional update makes the claim exclusive across instances.
    pub async fn claim_due(&self, lease: Duration) -> MongoResult<Option<Claimed>> {
        let now = Utc::now();
        let token = uuid::Uuid::now_v7().to_string();
        let claim = Claim {
            token: token.clone(),
            until: bson::DateTime::from_chrono(now + lease),
        };
        let now = bson::DateTime::from_chrono(now);
        let claimed = self
            .shared
            .collection
            .find_one_and_update(
                doc! { "$or": [
                    { "status": DlqStatus::Pending.as_str(), "next_attempt_at": { "$lte": now } },
                    { "status": DlqStatus::Retrying.as_str(), "claim.until": { "$lt": now } },
                ] },
                doc! {
                    "$set": {
                        "status": DlqStatus::Retrying.as_str(),
                        "claim": bson::to_bson(&claim)?,
                        "updated_at": now,
                    },
                    "$inc": { "version": 1 },
                },
            )
            .sort(doc! { "next_attempt_at": 1 })
            .return_document(ReturnDocument::After)
            .await?;
        Ok(claimed.map(|message| Claimed { message, token }))
    }

    /// Ends a claim: sets `set`, appends `entry`, drops the claim. `false`: the claim was lost
    /// (expired and taken, or a new failure of the copy arrived first).
    pub async fn finish_claim(
        &self,
        claimed: &Claimed,
        mut set: Document,
        entry: Option<&HistoryEntry>,
    ) -> MongoResult<bool> {
        set.insert("claim", Bson::Null);
        set.insert("updated_at", bson::DateTime::now());
        let mut update = doc! { "$set": set, "$inc": { "version": 1 } };
        if let Some(entry) = entry {
            update.insert("$push", doc! { "history": history(entry)? });
        }
        let result = self
            .shared
            .collection
            .update_one(
                doc! {
                    "_id": &claimed.message.id,
                    "status": DlqStatus::Retrying.as_str(),
                    "claim.token": &claimed.token,
                },
                update,
            )
            .await?;
        Ok(result.matched_count == 1)
    }
}
