//! The execution record shared by the services that read or write it (see
//! `docs/design/execution-pipeline.md`): its MongoDB document, its public JSON view, status order
//! and the Redis stream that carries its live events.

use chrono::{DateTime, Utc};
use mongodb::bson;
use serde::{Deserialize, Serialize};

use crate::events::{ErrorType, ExecutionStatus, ResourceUsage};

pub const EXECUTIONS_COLLECTION: &str = "executions";

/// The api's outbox fields: the announcing event (`outbox`) and its mark (`outbox_at`). The
/// result-processor's first projection of an execution drops them ([`clear_outbox`]): an
/// execution the saga scheduled (or ended) was surely announced, and clearing the mark in that
/// write instead of one of its own after the publish saves the busiest collection a write per
/// execution. A mark that outlives the api relay's threshold (a failed publish, or an execution
/// still queued) is re-announced once by the relay, which then clears it; the saga is created
/// once per execution either way.
pub const OUTBOX_FIELDS: [&str; 2] = ["outbox", "outbox_at"];

/// The body of the `$unset` that drops [`OUTBOX_FIELDS`].
pub fn clear_outbox() -> mongodb::bson::Document {
    OUTBOX_FIELDS
        .iter()
        .map(|field| ((*field).to_owned(), "".into()))
        .collect()
}

/// Status order: a status only ever moves to a higher rank; all terminal statuses share the top.
pub fn status_rank(status: ExecutionStatus) -> u8 {
    match status {
        ExecutionStatus::Queued => 0,
        ExecutionStatus::Scheduled => 1,
        ExecutionStatus::Running => 2,
        ExecutionStatus::Completed
        | ExecutionStatus::Failed
        | ExecutionStatus::Timeout
        | ExecutionStatus::Cancelled => 3,
    }
}

/// The statuses an update to `target` may replace (strictly lower rank), as their wire names, for
/// a MongoDB `$in` filter.
pub fn statuses_below(target: ExecutionStatus) -> Vec<&'static str> {
    [
        ExecutionStatus::Queued,
        ExecutionStatus::Scheduled,
        ExecutionStatus::Running,
    ]
    .into_iter()
    .filter(|s| status_rank(*s) < status_rank(target))
    .map(status_name)
    .collect()
}

pub fn status_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Queued => "queued",
        ExecutionStatus::Scheduled => "scheduled",
        ExecutionStatus::Running => "running",
        ExecutionStatus::Completed => "completed",
        ExecutionStatus::Failed => "failed",
        ExecutionStatus::Timeout => "timeout",
        ExecutionStatus::Cancelled => "cancelled",
    }
}

/// The `executions` document. `api` inserts it; only result-processor updates it afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub status: ExecutionStatus,
    pub lang: String,
    pub lang_version: String,
    pub script: String,
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub priority: u8,
    pub timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error_type: Option<ErrorType>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub resource_usage: Option<ResourceUsage>,
    pub created_at: bson::DateTime,
    #[serde(default)]
    pub scheduled_at: Option<bson::DateTime>,
    #[serde(default)]
    pub started_at: Option<bson::DateTime>,
    #[serde(default)]
    pub finished_at: Option<bson::DateTime>,
    /// The terminal event whose result was stored (exactly once).
    #[serde(default)]
    pub result_event_id: Option<String>,
    /// Agent executions: what was asked (workspace files by name and size only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agents::AgentSummary>,
    /// Agent executions: what the agent reported, stored with the terminal result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_result: Option<crate::agents::AgentReport>,
    /// The api's outbox: the `execution_requested` event (JSON) until the execution is known
    /// to have been received ([`clear_outbox`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<String>,
    /// Set with `outbox`; a sparse index finds executions whose announcement is overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_at: Option<bson::DateTime>,
}

impl ExecutionDoc {
    /// A new execution as the api inserts it: queued, with no result yet.
    pub fn queued(
        id: String,
        user_id: String,
        request: &crate::events::ExecutionRequested,
        idempotency_key: Option<String>,
        created_at: bson::DateTime,
    ) -> Self {
        Self {
            id,
            user_id,
            status: ExecutionStatus::Queued,
            lang: request.lang.clone(),
            lang_version: request.lang_version.clone(),
            script: request.script.clone(),
            stdin: request.stdin.clone(),
            priority: request.priority,
            timeout_seconds: request.limits.timeout_seconds,
            idempotency_key,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: None,
            error_type: None,
            error_message: None,
            resource_usage: None,
            created_at,
            scheduled_at: None,
            started_at: None,
            finished_at: None,
            result_event_id: None,
            agent: request
                .agent
                .as_ref()
                .map(crate::agents::AgentSummary::from),
            agent_result: None,
            outbox: None,
            outbox_at: None,
        }
    }
}

/// The public JSON of an execution (`GET /api/v1/executions/{id}` and the SSE `result` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionView {
    pub execution_id: String,
    pub status: ExecutionStatus,
    pub lang: String,
    pub lang_version: String,
    /// What was run, so the owner can run it again from any browser.
    #[serde(default)]
    pub script: String,
    #[serde(default)]
    pub stdin: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exit_code: Option<i32>,
    pub error_type: Option<ErrorType>,
    pub error_message: Option<String>,
    pub resource_usage: ResourceUsage,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Agent executions only: the request and, once finished, the agent's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub agent: Option<crate::agents::AgentView>,
}

impl From<&ExecutionDoc> for ExecutionView {
    fn from(doc: &ExecutionDoc) -> Self {
        Self {
            execution_id: doc.id.clone(),
            status: doc.status,
            lang: doc.lang.clone(),
            lang_version: doc.lang_version.clone(),
            script: doc.script.clone(),
            stdin: doc.stdin.clone(),
            stdout: doc.stdout.clone(),
            stderr: doc.stderr.clone(),
            stdout_truncated: doc.stdout_truncated,
            stderr_truncated: doc.stderr_truncated,
            exit_code: doc.exit_code,
            error_type: doc.error_type,
            error_message: doc.error_message.clone(),
            resource_usage: doc.resource_usage.clone().unwrap_or_default(),
            created_at: doc.created_at.to_chrono(),
            started_at: doc.started_at.map(bson::DateTime::to_chrono),
            finished_at: doc.finished_at.map(bson::DateTime::to_chrono),
            agent: doc.agent.clone().map(|request| crate::agents::AgentView {
                request,
                result: doc.agent_result.clone(),
            }),
        }
    }
}

/// Entry types of an execution's Redis stream.
pub mod stream {
    pub const TYPE_FIELD: &str = "type";
    pub const DATA_FIELD: &str = "data";
    pub const STATUS: &str = "status";
    pub const OUTPUT: &str = "output";
    pub const RESULT: &str = "result";
    /// Bound on entries kept per execution (approximate trimming).
    pub const MAX_LEN: usize = 10_000;
    /// A stream expires this long after its last entry.
    pub const TTL_SECONDS: i64 = 3_600;

    /// `{key_prefix}exec:{id}:stream`
    pub fn key(key_prefix: &str, execution_id: &str) -> String {
        format!("{key_prefix}exec:{execution_id}:stream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert_eq!(statuses_below(ExecutionStatus::Queued), Vec::<&str>::new());
        assert_eq!(
            statuses_below(ExecutionStatus::Running),
            vec!["queued", "scheduled"]
        );
        assert_eq!(
            statuses_below(ExecutionStatus::Cancelled),
            vec!["queued", "scheduled", "running"]
        );
    }

    #[test]
    fn status_names_match_the_wire_format() {
        for status in [
            ExecutionStatus::Queued,
            ExecutionStatus::Scheduled,
            ExecutionStatus::Running,
            ExecutionStatus::Completed,
            ExecutionStatus::Failed,
            ExecutionStatus::Timeout,
            ExecutionStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status_name(status));
        }
    }

    #[test]
    fn stream_keys_use_the_prefix() {
        assert_eq!(stream::key("kiln:", "abc"), "kiln:exec:abc:stream");
    }
}

/// What the local runtime records next to an executor (`meta.json`) so that pod-monitor's events
/// carry the execution's user and stay in its flow (correlation and causation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorMeta {
    pub execution_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub correlation_id: uuid::Uuid,
    /// The `create_pod_command` event that created the executor.
    pub causation_id: uuid::Uuid,
    /// The user's timeout, reported in `execution_timeout`.
    pub timeout_seconds: u64,
    /// W3C trace context of the executor's creation, so pod-monitor's events join its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

pub const EXECUTOR_META_FILE: &str = "meta.json";
