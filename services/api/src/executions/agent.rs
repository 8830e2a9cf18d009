//! `kind: "agent"` on `POST /api/v1/execute`: the request body, its validation into an
//! `execution_requested`, and the per-user daily budget reserved before it is queued.

use std::path::PathBuf;

use axum::http::StatusCode;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use shared::agents::{
    AGENT_LANG, AgentRequest, OverBudget, SpendLedger, Usd, WorkspaceError, WorkspaceFile,
    budget_day, check_workspace,
};
use shared::config::{AgentsConfig, LimitsConfig, ProviderConfig, RuntimeKind};
use shared::events::{ExecutionLimits, ExecutionRequested};

use super::submit::{SubmitRequest, resolve_priority, resolve_timeout};
use crate::error::ApiError;
use crate::state::AppState;

const MAX_MODEL_BYTES: usize = 128;

/// The body of `POST /api/v1/execute`: a script (the default, `kind` absent or `"script"`) or an
/// agent run (`kind: "agent"`).
#[derive(Debug)]
pub enum SubmitBody {
    Script(SubmitRequest),
    Agent(AgentSubmit),
}

impl<'de> Deserialize<'de> for SubmitBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut body = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let kind = body.remove("kind");
        let body = serde_json::Value::Object(body);
        match kind.as_ref().map(|k| k.as_str()) {
            None | Some(Some("script")) => SubmitRequest::deserialize(body)
                .map(SubmitBody::Script)
                .map_err(D::Error::custom),
            Some(Some("agent")) => AgentSubmit::deserialize(body)
                .map(SubmitBody::Agent)
                .map_err(D::Error::custom),
            Some(_) => Err(D::Error::custom(
                "kind: \"script\" (the default) or \"agent\"",
            )),
        }
    }
}

/// An agent run; sent with `"kind": "agent"`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSubmit {
    pub provider: String,
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub files: Vec<WorkspaceFile>,
    /// Signed so a negative value gets `invalid_timeout` rather than a JSON type error.
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub priority: Option<i64>,
}

/// The provider registry as the api sees it.
#[derive(Debug, Clone)]
pub struct Providers {
    pub config: AgentsConfig,
    /// The services' directory: relative provider binaries are resolved against it.
    pub base: PathBuf,
    /// Only the local runtime starts agents so far; with another, none is available.
    pub runtime_runs_agents: bool,
}

impl Providers {
    pub fn new(config: &AgentsConfig, runtime: RuntimeKind) -> Providers {
        Providers {
            config: config.clone(),
            base: std::env::current_dir().unwrap_or_default(),
            runtime_runs_agents: runtime == RuntimeKind::Local,
        }
    }

    /// Enabled, its CLI present, and a runtime that starts agents.
    pub fn is_available(&self, provider: &ProviderConfig) -> bool {
        self.runtime_runs_agents && provider.is_available(&self.base)
    }

    /// The named provider, if it is configured, enabled and its binary is present.
    fn available(&self, name: &str) -> Result<&ProviderConfig, ApiError> {
        let provider = self.config.providers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.config.providers.keys().map(String::as_str).collect();
            ApiError::bad_request(
                "unknown_provider",
                format!(
                    "provider {name:?} is not configured (known: {})",
                    known.join(", ")
                ),
            )
        })?;
        if self.is_available(provider) {
            Ok(provider)
        } else {
            Err(ApiError::bad_request(
                "provider_unavailable",
                format!("provider {name:?} is not available on this installation"),
            ))
        }
    }
}

fn workspace_error(error: WorkspaceError) -> ApiError {
    let code = match error {
        WorkspaceError::Path(_) | WorkspaceError::PathTooLong(_) => "invalid_path",
        WorkspaceError::Base64(_) => "invalid_encoding",
        WorkspaceError::Conflict(_) => "duplicate_path",
    };
    ApiError::bad_request(code, error.to_string())
}

/// Checks the workspace files against the configured caps and the path rule.
fn validate_files(config: &AgentsConfig, files: &[WorkspaceFile]) -> Result<(), ApiError> {
    if files.len() > config.max_files {
        return Err(ApiError::bad_request(
            "too_many_files",
            format!("files: at most {}", config.max_files),
        ));
    }
    check_workspace(files).map_err(workspace_error)?;
    let mut total: u64 = 0;
    for file in files {
        let size = file.bytes().map_err(workspace_error)?.len() as u64;
        if size > config.max_file_bytes {
            return Err(ApiError::too_large(
                "file_too_large",
                format!("{}: at most {} bytes", file.path, config.max_file_bytes),
            ));
        }
        total = total.saturating_add(size);
    }
    if total > config.max_workspace_bytes {
        return Err(ApiError::too_large(
            "workspace_too_large",
            format!(
                "files: at most {} bytes together",
                config.max_workspace_bytes
            ),
        ));
    }
    Ok(())
}

/// A model name is one argv element of the agent CLI: it must not look like an option.
fn validate_model(model: &str) -> Result<(), ApiError> {
    let ok = !model.is_empty()
        && model.len() <= MAX_MODEL_BYTES
        && !model.starts_with('-')
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_model",
            "model: 1-128 of [A-Za-z0-9._-:/@], not starting with '-'",
        ))
    }
}

fn validate_prompt(prompt: &str, max_bytes: usize) -> Result<(), ApiError> {
    if prompt.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_prompt",
            "prompt: must not be empty",
        ));
    }
    // The prompt is one argv element: a leading '-' would be read as an option of the CLI.
    if prompt.starts_with('-') {
        return Err(ApiError::bad_request(
            "invalid_prompt",
            "prompt: must not start with '-'",
        ));
    }
    if prompt.len() > max_bytes {
        return Err(ApiError::too_large(
            "prompt_too_large",
            format!("prompt: at most {max_bytes} bytes"),
        ));
    }
    Ok(())
}

fn validate_budget(
    config: &AgentsConfig,
    request: &AgentSubmit,
) -> Result<(Option<u64>, Option<Usd>), ApiError> {
    let invalid = |message: &'static str| ApiError::bad_request("invalid_budget", message);
    let max_tokens = match request.max_tokens {
        None => None,
        Some(t) => Some(
            u64::try_from(t)
                .ok()
                .filter(|t| *t >= 1)
                .ok_or_else(|| invalid("max_tokens: at least 1"))?,
        ),
    };
    let max_cost = match request.max_cost_usd {
        Some(c) if c.is_finite() && c > 0.0 => Some(Usd::from_dollars(c)),
        Some(_) => return Err(invalid("max_cost_usd: a positive number of dollars")),
        None if config.default_max_cost_usd > 0.0 => {
            Some(Usd::from_dollars(config.default_max_cost_usd))
        }
        None => None,
    };
    Ok((max_tokens, max_cost))
}

/// The agent request as an `execution_requested`, defaults resolved.
pub fn validate(state: &AppState, request: AgentSubmit) -> Result<ExecutionRequested, ApiError> {
    let providers = &state.providers;
    let provider = providers.available(&request.provider)?;
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| provider.default_model.clone());
    validate_model(&model)?;
    validate_prompt(&request.prompt, state.limits.max_script_bytes)?;
    validate_files(&providers.config, &request.files)?;
    let (max_tokens, max_cost_usd) = validate_budget(&providers.config, &request)?;
    let timeout = resolve_timeout(
        request.timeout_seconds,
        provider.default_timeout_seconds,
        provider.max_timeout_seconds,
    )?;
    let priority = resolve_priority(request.priority)?;
    Ok(ExecutionRequested {
        script: String::new(),
        lang: AGENT_LANG.into(),
        lang_version: request.provider.clone(),
        stdin: None,
        priority,
        limits: limits(&state.limits, provider, timeout),
        agent: Some(AgentRequest {
            provider: request.provider,
            model,
            prompt: request.prompt,
            files: request.files,
            max_tokens,
            max_cost_usd,
        }),
    })
}

fn limits(limits: &LimitsConfig, provider: &ProviderConfig, timeout: u64) -> ExecutionLimits {
    ExecutionLimits {
        timeout_seconds: timeout,
        memory_mb: provider.memory_mb.unwrap_or(limits.memory_mb),
        max_processes: provider.max_processes.unwrap_or(limits.max_processes),
        max_output_bytes: u64::try_from(limits.max_output_bytes).unwrap_or(u64::MAX),
        max_file_bytes: limits.max_file_bytes,
    }
}

/// Reserves the execution's cost cap against the user's budget for the day it was created (UTC),
/// atomically; refuses with 429 `daily_budget_exceeded` when it would not fit. A run without a
/// cost cap reserves nothing but is still refused once the day's budget is spent.
/// result-processor settles the reservation against the reported cost.
pub async fn reserve_daily_budget(
    state: &AppState,
    user_id: &str,
    request: &AgentRequest,
    created_at: bson::DateTime,
) -> Result<(), ApiError> {
    let budget = Usd::from_dollars(state.providers.config.daily_budget_usd);
    if budget.micros == 0 {
        return Ok(());
    }
    let reserve = request.max_cost_usd.unwrap_or_default();
    let ledger = SpendLedger::new(state.redis.clone(), state.redis_key_prefix.clone());
    let day = budget_day(created_at.to_chrono());
    let Err(OverBudget { spent }) = ledger.reserve(user_id, &day, reserve, budget).await? else {
        return Ok(());
    };
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "daily_budget_exceeded",
        format!(
            "today's agent budget is {budget}; {spent} is spent or reserved and this run may cost up to {reserve}"
        ),
    )
    .with_field("budget_usd", budget.dollars())
    .with_field("spent_usd", spent.dollars()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shared::agents::ContentEncoding;

    use super::*;

    fn file(path: &str, content: &str) -> WorkspaceFile {
        WorkspaceFile {
            path: path.into(),
            content: content.into(),
            encoding: ContentEncoding::Utf8,
        }
    }

    fn code<T: std::fmt::Debug>(result: Result<T, ApiError>) -> &'static str {
        result.unwrap_err().code()
    }

    #[test]
    fn the_kind_picks_the_body() {
        let script: SubmitBody =
            serde_json::from_str(r#"{"lang":"python","script":"print(1)"}"#).unwrap();
        assert!(matches!(script, SubmitBody::Script(_)));
        let agent: SubmitBody =
            serde_json::from_str(r#"{"kind":"agent","provider":"fake","prompt":"say hi"}"#)
                .unwrap();
        assert!(matches!(agent, SubmitBody::Agent(_)));
        assert!(serde_json::from_str::<SubmitBody>(r#"{"kind":"robot"}"#).is_err());
        // An agent field on a script is an unknown field, not silently ignored.
        assert!(
            serde_json::from_str::<SubmitBody>(
                r#"{"lang":"python","script":"1","provider":"fake"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn files_are_checked_against_every_cap() {
        let config = AgentsConfig {
            max_files: 2,
            max_file_bytes: 4,
            max_workspace_bytes: 6,
            ..AgentsConfig::default()
        };
        assert!(validate_files(&config, &[file("a", "1234"), file("b/c", "12")]).is_ok());
        assert_eq!(
            code(validate_files(
                &config,
                &[file("a", ""), file("b", ""), file("c", "")]
            )),
            "too_many_files"
        );
        assert_eq!(
            code(validate_files(&config, &[file("../a", "")])),
            "invalid_path"
        );
        assert_eq!(
            code(validate_files(&config, &[file("/etc/x", "")])),
            "invalid_path"
        );
        assert_eq!(
            code(validate_files(&config, &[file("a", "12345")])),
            "file_too_large"
        );
        assert_eq!(
            code(validate_files(
                &config,
                &[file("a", "1234"), file("b", "123")]
            )),
            "workspace_too_large"
        );
        assert_eq!(
            code(validate_files(&config, &[file("a", ""), file("a", "")])),
            "duplicate_path"
        );
        let bad = WorkspaceFile {
            encoding: ContentEncoding::Base64,
            ..file("a", "@@")
        };
        assert_eq!(code(validate_files(&config, &[bad])), "invalid_encoding");
    }

    #[test]
    fn models_and_prompts_cannot_pose_as_options() {
        assert!(validate_model("claude-sonnet-4-5").is_ok());
        assert!(validate_model("openai/gpt-5:latest").is_ok());
        assert_eq!(
            code(validate_model("--dangerously-skip-permissions")),
            "invalid_model"
        );
        assert_eq!(code(validate_model("a b")), "invalid_model");
        assert_eq!(code(validate_model("")), "invalid_model");
        assert!(validate_prompt("fix the bug; --really", 100).is_ok());
        assert_eq!(code(validate_prompt("--help", 100)), "invalid_prompt");
        assert_eq!(code(validate_prompt("  ", 100)), "invalid_prompt");
        assert_eq!(code(validate_prompt("long", 3)), "prompt_too_large");
    }

    #[test]
    fn budgets_default_from_config_and_reject_nonsense() {
        let config = AgentsConfig::default();
        let request = |tokens: Option<i64>, cost: Option<f64>| AgentSubmit {
            provider: "fake".into(),
            model: None,
            prompt: "p".into(),
            files: Vec::new(),
            timeout_seconds: None,
            max_tokens: tokens,
            max_cost_usd: cost,
            priority: None,
        };
        let (tokens, cost) = validate_budget(&config, &request(None, None)).unwrap();
        assert_eq!(tokens, None);
        assert_eq!(cost, Some(Usd::from_dollars(config.default_max_cost_usd)));
        let (tokens, cost) = validate_budget(&config, &request(Some(10), Some(0.5))).unwrap();
        assert_eq!((tokens, cost), (Some(10), Some(Usd::from_dollars(0.5))));
        for (tokens, cost) in [(Some(0), None), (Some(-1), None), (None, Some(-0.1))] {
            assert_eq!(
                code(validate_budget(&config, &request(tokens, cost))),
                "invalid_budget"
            );
        }
    }
}
