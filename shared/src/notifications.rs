//! In-app notifications: result-processor creates one when an execution ends (once per
//! execution), the api lists them and streams them. The document lives in MongoDB
//! (`notifications`); delivery to whichever api replica holds the user's stream goes through a
//! per-user Redis stream (`{prefix}user:{user_id}:notifications`), read like the execution streams
//! of `docs/design/execution-pipeline.md`.

use chrono::{DateTime, Utc};
use mongodb::IndexModel;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use serde::{Deserialize, Serialize};

use crate::events::ExecutionStatus;
use crate::executions::{ExecutionDoc, status_name};

pub const NOTIFICATIONS_COLLECTION: &str = "notifications";
pub const EXECUTION_FINISHED: &str = "execution_finished";

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub execution_id: String,
    pub status: ExecutionStatus,
    pub read: bool,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
}

/// A notification as the API shows it (and as the SSE `notification` event carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    /// `execution_finished`
    pub kind: String,
    pub title: String,
    pub body: String,
    pub execution_id: String,
    pub status: ExecutionStatus,
    pub read: bool,
    pub created_at: DateTime<Utc>,
}

impl From<NotificationDoc> for Notification {
    fn from(doc: NotificationDoc) -> Self {
        Self {
            id: doc.id,
            kind: doc.kind,
            title: doc.title,
            body: doc.body,
            execution_id: doc.execution_id,
            status: doc.status,
            read: doc.read,
            created_at: doc.created_at,
        }
    }
}

impl NotificationDoc {
    /// The notification for a terminal execution (with a fresh id; the writer keeps the first).
    pub fn execution_finished(execution: &ExecutionDoc, now: DateTime<Utc>) -> Self {
        let run = format!("{} {}", execution.lang, execution.lang_version);
        let title = match execution.status {
            ExecutionStatus::Completed => "Execution completed",
            ExecutionStatus::Timeout => "Execution timed out",
            ExecutionStatus::Cancelled => "Execution cancelled",
            _ => "Execution failed",
        };
        let body = match (execution.status, execution.exit_code) {
            (ExecutionStatus::Completed, Some(code)) => format!("{run} exited with code {code}"),
            _ => match &execution.error_message {
                Some(message) => format!("{run}: {message}"),
                None => format!("{run}: {}", status_name(execution.status)),
            },
        };
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: execution.user_id.clone(),
            kind: EXECUTION_FINISHED.to_owned(),
            title: title.to_owned(),
            body: truncate(body, 300),
            execution_id: execution.id.clone(),
            status: execution.status,
            read: false,
            created_at: now,
        }
    }
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// One notification per (kind, execution): a redelivered terminal event finds it there.
pub fn indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "execution_id": 1, "kind": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("execution_kind_unique".to_owned())
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "_id": -1 })
            .build(),
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "read": 1, "_id": -1 })
            .build(),
    ]
}

/// The per-user Redis stream that carries new notifications to the api replicas.
pub mod stream {
    /// The entry's field holding the notification JSON.
    pub const DATA_FIELD: &str = "data";
    /// Entries kept per user (approximate trimming): a client away longer catches up from the
    /// list endpoint.
    pub const MAX_LEN: usize = 1_000;
    /// A stream expires this long after its last entry.
    pub const TTL_SECONDS: i64 = 86_400;

    /// `{key_prefix}user:{user_id}:notifications`
    pub fn key(key_prefix: &str, user_id: &str) -> String {
        format!("{key_prefix}user:{user_id}:notifications")
    }

    /// Execution ids already appended to the user's stream (de-duplicates redeliveries).
    pub fn seen_key(key_prefix: &str, user_id: &str) -> String {
        format!("{key_prefix}user:{user_id}:notifications:seen")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo".into(), 2), "hé…");
        assert_eq!(truncate("ok".into(), 2), "ok");
    }

    #[test]
    fn stream_keys_use_the_prefix() {
        assert_eq!(stream::key("kiln:", "u1"), "kiln:user:u1:notifications");
    }
}
