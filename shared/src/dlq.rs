//! Dead-lettered messages as dlq-processor keeps them (`dlq_messages`), shared with the api's admin
//! routes: the document, the queries an admin filters by, and the two admin actions (retry now,
//! discard). The processor's own writes (store, claim, re-publish, park) live in dlq-processor.
//!
//! One document per message that failed for good, identified by where it first failed (original
//! topic, partition, offset; unique). A re-published copy that fails again comes back through the
//! dead-letter topic carrying [`ID_HEADER`], and updates the same document instead of starting a
//! new one.

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use mongodb::bson::{self, Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::events::DlqMessageRef;
use crate::kafka::dlq as contract;
use crate::kafka::headers::HeaderList;

pub const DLQ_COLLECTION: &str = "dlq_messages";

/// On a re-published message: which re-publish of its DLQ document this is (1-based).
pub const ATTEMPT_HEADER: &str = "x-kiln-dlq-attempt";
/// On a re-published message: its DLQ document, so a new failure updates that document.
pub const ID_HEADER: &str = "x-kiln-dlq-id";

/// Counter `{policy, error_class}`: dead-lettered messages stored (redeliveries not counted).
pub const RECEIVED_METRIC: &str = "kiln_dlq_received_total";
/// Counter `{policy, trigger}`: re-publishes to the original topic (`schedule` or `manual`).
pub const RETRIED_METRIC: &str = "kiln_dlq_retried_total";
/// Counter `{policy, reason}`: messages parked (`max_attempts` or `max_age`).
pub const PARKED_METRIC: &str = "kiln_dlq_parked_total";
/// Counter: messages an admin discarded.
pub const DISCARDED_METRIC: &str = "kiln_dlq_discarded_total";
/// Gauge `{status}`: documents in `dlq_messages` per status, refreshed by dlq-processor.
pub const MESSAGES_GAUGE: &str = "kiln_dlq_messages";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqStatus {
    /// Waits for `next_attempt_at`.
    Pending,
    /// Claimed by a dlq-processor instance that is re-publishing it.
    Retrying,
    /// Re-published; it stays so unless the copy fails again.
    Retried,
    /// Out of attempts or too old; waits for an admin.
    Parked,
    /// An admin gave up on it (the reason is kept).
    Discarded,
}

impl DlqStatus {
    pub const ALL: &'static [DlqStatus] = &[
        Self::Pending,
        Self::Retrying,
        Self::Retried,
        Self::Parked,
        Self::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Retried => "retried",
            Self::Parked => "parked",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    /// The statuses an admin may retry or discard from: not while a re-publish is in flight, and
    /// not after a discard.
    pub const ACTIONABLE: &'static [DlqStatus] = &[Self::Pending, Self::Retried, Self::Parked];
}

fn status_names(statuses: &[DlqStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// One Kafka header, value as raw bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredHeader {
    pub name: String,
    pub value: Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// Dead-lettered (the first time, or again after a re-publish).
    Failed,
    Retried,
    RetryRequested,
    Parked,
    Discarded,
}

/// What happened to a message, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: bson::DateTime,
    pub action: HistoryAction,
    /// The re-publish the entry is about (0: the original delivery).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The admin who asked, for admin actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl HistoryEntry {
    pub fn new(action: HistoryAction, attempt: u32) -> Self {
        Self {
            at: bson::DateTime::now(),
            action,
            attempt,
            error_class: None,
            error_message: None,
            reason: None,
            by: None,
        }
    }
}

/// A `dlq_messages` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqMessage {
    #[serde(rename = "_id")]
    pub id: String,
    pub status: DlqStatus,
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    /// The original message's key and payload, unchanged.
    pub key: Option<Binary>,
    pub payload: Option<Binary>,
    /// Every header of the dead-lettered copy (the original ones and the DLQ contract's).
    pub headers: Vec<StoredHeader>,
    /// From the `event_type` header, else the original topic; `None` for a foreign topic.
    pub event_type: Option<String>,
    /// The `[dlq]` policy the message is retried under.
    pub policy: String,
    pub consumer_group: String,
    /// The latest failure.
    pub error_class: String,
    pub error_kind: String,
    pub error_message: String,
    pub first_failed_at: bson::DateTime,
    pub received_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    /// Re-publishes so far.
    pub attempts: u32,
    pub next_attempt_at: Option<bson::DateTime>,
    /// After this the message is parked instead of re-published; `None` after a manual retry.
    pub expires_at: Option<bson::DateTime>,
    /// While `retrying`: the claim's owner and its expiry.
    #[serde(default)]
    pub claim: Option<Claim>,
    #[serde(default)]
    pub discard_reason: Option<String>,
    /// Dead-letter copies already applied (`topic:partition:offset`), so a redelivered one is not
    /// counted twice.
    pub sources: Vec<String>,
    pub history: Vec<HistoryEntry>,
    /// Bumped by every write; writers that decide from a read update only the version they read.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub token: String,
    pub until: bson::DateTime,
}

/// `topic:partition:offset`, the identity of a consumed message.
pub fn source_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

pub fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

impl DlqMessage {
    /// The headers a re-publish carries: the original message's own (trace context included),
    /// without the dead-letter contract's, plus the attempt number and this document's id.
    pub fn republish_headers(&self, attempt: u32) -> HeaderList {
        const CONTRACT: &[&str] = &[
            contract::ORIGINAL_TOPIC,
            contract::ORIGINAL_PARTITION,
            contract::ORIGINAL_OFFSET,
            contract::ORIGINAL_KEY,
            contract::ERROR_CLASS,
            contract::ERROR_KIND,
            contract::ERROR_MESSAGE,
            contract::ATTEMPT,
            contract::FAILED_AT,
            contract::CONSUMER_GROUP,
        ];
        let mut headers = HeaderList(
            self.headers
                .iter()
                .filter(|h| !CONTRACT.iter().any(|c| h.name.eq_ignore_ascii_case(c)))
                .map(|h| (h.name.clone(), h.value.bytes.clone()))
                .collect(),
        );
        headers.set(ATTEMPT_HEADER, attempt.to_string());
        headers.set(ID_HEADER, self.id.as_bytes());
        headers
    }

    /// The payload every `dlq_message_*` event about this message carries.
    pub fn reference(&self, reason: Option<String>) -> DlqMessageRef {
        DlqMessageRef {
            original_topic: self.original_topic.clone(),
            original_partition: self.original_partition,
            original_offset: self.original_offset,
            error_class: self.error_class.clone(),
            attempt: self.attempts,
            reason,
        }
    }
}

/// What an admin filters the list by; every given criterion must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DlqQuery {
    pub status: Option<DlqStatus>,
    pub original_topic: Option<String>,
    pub event_type: Option<String>,
    /// On `first_failed_at`, inclusive `from`, exclusive `to`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only documents older than this id (the previous page's last id).
    pub before_id: Option<String>,
}

impl DlqQuery {
    pub fn to_filter(&self) -> Document {
        let mut filter = doc! {};
        if let Some(status) = self.status {
            filter.insert("status", status.as_str());
        }
        if let Some(topic) = &self.original_topic {
            filter.insert("original_topic", topic);
        }
        if let Some(event_type) = &self.event_type {
            filter.insert("event_type", event_type);
        }
        let mut range = doc! {};
        if let Some(from) = self.from {
            range.insert("$gte", bson::DateTime::from_chrono(from));
        }
        if let Some(to) = self.to {
            range.insert("$lt", bson::DateTime::from_chrono(to));
        }
        if !range.is_empty() {
            filter.insert("first_failed_at", range);
        }
        if let Some(id) = &self.before_id {
            filter.insert("_id", doc! { "$lt": id });
        }
        filter
    }
}

/// Why an admin action did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no such dead-lettered message")]
    NotFound,
    #[error("the message is {}", .0.as_str())]
    WrongStatus(DlqStatus),
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    #[error("history entry not encodable")]
    Encode(#[from] bson::ser::Error),
}

/// `dlq_messages`, read and acted on by admins.
#[derive(Debug, Clone)]
pub struct DlqStore {
    db: Database,
    pub collection: Collection<DlqMessage>,
}

impl DlqStore {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            collection: db.collection(DLQ_COLLECTION),
        }
    }

    /// The unique origin (idempotent storing), the scheduler's due scan and the admin filters.
    pub async fn ensure_indexes(&self) -> Result<(), crate::mongo::MongoError> {
        let index = |keys: Document, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        crate::mongo::ensure_indexes(
            &self.db,
            DLQ_COLLECTION,
            vec![
                index(
                    doc! { "original_topic": 1, "original_partition": 1, "original_offset": 1 },
                    true,
                ),
                index(doc! { "status": 1, "next_attempt_at": 1 }, false),
                index(doc! { "event_type": 1, "_id": -1 }, false),
                index(doc! { "first_failed_at": -1 }, false),
            ],
        )
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<DlqMessage>, mongodb::error::Error> {
        self.collection.find_one(doc! { "_id": id }).await
    }

    /// One page of `query`, newest first (ids are UUIDv7, so id order is time order).
    pub async fn list(
        &self,
        query: &DlqQuery,
        limit: i64,
    ) -> Result<Vec<DlqMessage>, mongodb::error::Error> {
        self.collection
            .find(query.to_filter())
            .sort(doc! { "_id": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// Documents per status.
    pub async fn count_by_status(&self) -> Result<Vec<(DlqStatus, u64)>, mongodb::error::Error> {
        let mut counts = Vec::with_capacity(DlqStatus::ALL.len());
        for status in DlqStatus::ALL {
            let n = self
                .collection
                .count_documents(doc! { "status": status.as_str() })
                .await?;
            counts.push((*status, n));
        }
        Ok(counts)
    }

    /// Makes the message due now, with no age limit for this attempt; dlq-processor re-publishes
    /// it on its next scan.
    pub async fn retry_now(&self, id: &str, by: &str) -> Result<DlqMessage, ActionError> {
        let mut entry = HistoryEntry::new(HistoryAction::RetryRequested, 0);
        entry.by = Some(by.to_owned());
        let now = bson::DateTime::now();
        self.act(
            id,
            doc! {
                "$set": {
                    "status": DlqStatus::Pending.as_str(),
                    "next_attempt_at": now,
                    "expires_at": Bson::Null,
                    "updated_at": now,
                },
                "$push": { "history": bson::to_bson(&entry)? },
                "$inc": { "version": 1 },
            },
        )
        .await
    }

    /// Gives up on the message for good, keeping `reason`.
    pub async fn discard(
        &self,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<DlqMessage, ActionError> {
        let mut entry = HistoryEntry::new(HistoryAction::Discarded, 0);
        entry.by = Some(by.to_owned());
        entry.reason = Some(reason.to_owned());
        let now = bson::DateTime::now();
        self.act(
            id,
            doc! {
                "$set": {
                    "status": DlqStatus::Discarded.as_str(),
                    "next_attempt_at": Bson::Null,
                    "discard_reason": reason,
                    "updated_at": now,
                },
                "$push": { "history": bson::to_bson(&entry)? },
                "$inc": { "version": 1 },
            },
        )
        .await
    }

    async fn act(&self, id: &str, update: Document) -> Result<DlqMessage, ActionError> {
        let updated = self
            .collection
            .find_one_and_update(
                doc! { "_id": id, "status": { "$in": status_names(DlqStatus::ACTIONABLE) } },
                update,
            )
            .return_document(ReturnDocument::After)
            .await?;
        match updated {
            Some(message) => Ok(message),
            None => match self.get(id).await? {
                Some(message) => Err(ActionError::WrongStatus(message.status)),
                None => Err(ActionError::NotFound),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &[u8])]) -> DlqMessage {
        let now = bson::DateTime::now();
        DlqMessage {
            id: "m1".into(),
            status: DlqStatus::Pending,
            original_topic: "t_result_stored".into(),
            original_partition: 0,
            original_offset: 7,
            key: Some(binary(b"exec-1")),
            payload: Some(binary(b"{not json")),
            headers: headers
                .iter()
                .map(|(n, v)| StoredHeader {
                    name: (*n).to_owned(),
                    value: binary(v),
                })
                .collect(),
            event_type: Some("result_stored".into()),
            policy: "results".into(),
            consumer_group: "g".into(),
            error_class: "undecodable_event".into(),
            error_kind: "poison".into(),
            error_message: "bad".into(),
            first_failed_at: now,
            received_at: now,
            updated_at: now,
            attempts: 0,
            next_attempt_at: Some(now),
            expires_at: None,
            claim: None,
            discard_reason: None,
            sources: vec![],
            history: vec![],
            version: 0,
        }
    }

    #[test]
    fn republished_headers_keep_the_originals_and_drop_the_contract() {
        let m = message(&[
            ("traceparent", b"00-abc-def-01"),
            (contract::ORIGINAL_TOPIC, b"t_result_stored"),
            (contract::ERROR_CLASS, b"undecodable_event"),
            (ATTEMPT_HEADER, b"1"),
        ]);
        let headers = m.republish_headers(2).0;
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["traceparent", ATTEMPT_HEADER, ID_HEADER]);
        assert_eq!(headers[1].1, b"2");
        assert_eq!(headers[2].1, b"m1");
    }

    #[test]
    fn query_filters_combine() {
        let from = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let filter = DlqQuery {
            status: Some(DlqStatus::Parked),
            event_type: Some("result_stored".into()),
            from: Some(from),
            before_id: Some("x".into()),
            ..DlqQuery::default()
        }
        .to_filter();
        assert_eq!(filter.get_str("status").unwrap(), "parked");
        assert_eq!(filter.get_str("event_type").unwrap(), "result_stored");
        assert!(
            filter
                .get_document("first_failed_at")
                .unwrap()
                .contains_key("$gte")
        );
        assert_eq!(
            filter.get_document("_id").unwrap().get_str("$lt").unwrap(),
            "x"
        );
        assert!(DlqQuery::default().to_filter().is_empty());
    }

    #[test]
    fn statuses_parse_by_wire_name() {
        for status in DlqStatus::ALL {
            assert_eq!(DlqStatus::parse(status.as_str()), Some(*status));
            assert_eq!(
                bson::to_bson(status).unwrap(),
                Bson::String(status.as_str().into())
            );
        }
        assert_eq!(DlqStatus::parse("nope"), None);
    }
}
