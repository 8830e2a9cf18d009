//! What every executor runtime offers (the local sandboxes now, Kubernetes pods later).

use std::future::Future;

use serde::{Deserialize, Serialize};
use shared::events::{ExecutionLimits, ExecutorRef};
use uuid::Uuid;

/// Everything a runtime needs to create one executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSpec {
    pub execution_id: String,
    pub lang: String,
    pub lang_version: String,
    pub script: String,
    pub stdin: Option<String>,
    pub limits: ExecutionLimits,
    pub meta: ExecutorMeta,
    /// Agent executions: provider, prompt and workspace (`script` is then empty).
    pub agent: Option<shared::agents::AgentRequest>,
}

/// The create command's place in its flow, so the executor's events (published by pod-monitor)
/// keep the execution's correlation and user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorMeta {
    pub user_id: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// W3C trace context of the create command's handling: pod-monitor's events join its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("language {lang} {version} is not offered on this host")]
    UnknownLanguage { lang: String, version: String },
    #[error("invalid executor spec: {0}")]
    Invalid(String),
    #[error("the sandbox does not work on this host: {0}")]
    Unavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }

    /// A permanent error fails the execution; any other is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RuntimeError::UnknownLanguage { .. } | RuntimeError::Invalid(_)
        )
    }
}

/// Creates and deletes executors. Both operations are idempotent: a command delivered twice
/// creates one executor, and deleting an absent executor succeeds.
pub trait ExecutorRuntime: Send + Sync + 'static {
    fn create(
        &self,
        spec: &ExecutorSpec,
    ) -> impl Future<Output = Result<ExecutorRef, RuntimeError>> + Send;

    fn delete(
        &self,
        execution_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// The executor's name: the Kubernetes pod name, and the local sandbox's name.
pub fn executor_name(execution_id: &str) -> String {
    format!("executor-{execution_id}")
}

/// Execution ids become directory, cgroup and pod names: only a safe alphabet gets that far.
pub(crate) fn validate_execution_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "execution id {id:?} is not 1-64 characters of [A-Za-z0-9_-]"
        )))
    }
}
