//! Payload types of the catalogue. Optional fields default so that older producers stay readable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Queued,
    Scheduled,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Timeout | Self::Cancelled
        )
    }
}

/// Why the platform (not the user's program) failed an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    SystemError,
    ResourceLimit,
    ExecutorLost,
    InvalidRequest,
    /// An agent's `max_tokens` or `max_cost_usd` ran out and the run was stopped.
    BudgetExceeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceUsage {
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_kb: u64,
}

/// What an executor reports when a program ends, however it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionOutcome {
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub resource_usage: ResourceUsage,
    /// Agent executions: final text, usage, cost and changed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agents::AgentReport>,
}

/// Limits applied to one execution, resolved from config and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionLimits {
    pub timeout_seconds: u64,
    pub memory_mb: u64,
    pub max_processes: u64,
    pub max_output_bytes: u64,
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRequested {
    pub script: String,
    pub lang: String,
    pub lang_version: String,
    #[serde(default)]
    pub stdin: Option<String>,
    /// Higher runs first; FIFO within one priority.
    #[serde(default)]
    pub priority: u8,
    pub limits: ExecutionLimits,
    /// Set for `kind: "agent"` (then `lang` is `agent`, `lang_version` the provider, `script` empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agents::AgentRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionQueued {
    #[serde(default)]
    pub position: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionScheduled {
    pub saga_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStarted {
    pub executor: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionOutput {
    pub stream: OutputStream,
    /// Per-execution sequence number, so consumers can order and de-duplicate chunks.
    pub seq: u64,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionFinished {
    pub outcome: ExecutionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionFailed {
    pub error_type: ErrorType,
    pub message: String,
    /// Output produced before the failure, when any was captured.
    #[serde(default)]
    pub outcome: Option<ExecutionOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionTimedOut {
    pub timeout_seconds: u64,
    /// Output produced before the deadline.
    pub outcome: ExecutionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionCancelled {
    pub reason: String,
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionCancelRequested {
    pub requested_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorRef {
    /// Pod name (`executor-{execution_id}`) or local sandbox name.
    pub executor: String,
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTerminated {
    pub executor: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePodCommand {
    pub saga_id: String,
    pub request: ExecutionRequested,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePodCommand {
    pub saga_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultStored {
    pub status: ExecutionStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultFailed {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaProgress {
    pub saga_id: String,
    pub saga_name: String,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Where a dead-lettered message came from, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqMessageRef {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub error_class: String,
    pub attempt: u32,
    #[serde(default)]
    pub reason: Option<String>,
}
