//! Agent executions: what travels in `execution_requested` for `kind: "agent"`, the workspace
//! path rule both the api and the worker apply, the daily budget's Redis key, and cost metrics.

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use kiln_runner_protocol::agent::{
    AgentReport, ChangedFile, ContentEncoding, FileChange, OutputParser, TokenUsage, Usd,
};

/// The `lang` recorded for agent executions (their `lang_version` is the provider's name), so
/// listings and filters treat them like any other execution.
pub const AGENT_LANG: &str = "agent";
/// Components in a workspace path, at most.
const MAX_PATH_DEPTH: usize = 32;
const MAX_PATH_BYTES: usize = 1024;

/// An agent run as requested, defaults resolved by the api.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub provider: String,
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub files: Vec<WorkspaceFile>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<Usd>,
}

/// What the `executions` document keeps of the request: the files by name and size only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub provider: String,
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub files: Vec<FileSummary>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<Usd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    pub path: String,
    pub size: u64,
}

impl From<&AgentRequest> for AgentSummary {
    fn from(request: &AgentRequest) -> Self {
        Self {
            provider: request.provider.clone(),
            model: request.model.clone(),
            prompt: request.prompt.clone(),
            files: request
                .files
                .iter()
                .map(|f| FileSummary {
                    path: f.path.clone(),
                    size: f.decoded_len() as u64,
                })
                .collect(),
            max_tokens: request.max_tokens,
            max_cost_usd: request.max_cost_usd,
        }
    }
}

/// The `agent` of an execution's public view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    #[serde(flatten)]
    pub request: AgentSummary,
    /// Present once the execution has finished with a report.
    #[serde(default)]
    pub result: Option<AgentReport>,
}

/// One file the workspace starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceFile {
    pub path: String,
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default = "utf8")]
    #[schema(value_type = String, example = "utf8")]
    pub encoding: ContentEncoding,
}

fn utf8() -> ContentEncoding {
    ContentEncoding::Utf8
}

impl WorkspaceFile {
    /// The file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, WorkspaceError> {
        match self.encoding {
            ContentEncoding::Utf8 => Ok(self.content.as_bytes().to_vec()),
            ContentEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.content)
                .map_err(|_| WorkspaceError::Base64(self.path.clone())),
        }
    }

    /// The decoded size without decoding.
    pub fn decoded_len(&self) -> usize {
        match self.encoding {
            ContentEncoding::Utf8 => self.content.len(),
            ContentEncoding::Base64 => {
                let padding = self
                    .content
                    .bytes()
                    .rev()
                    .take_while(|b| *b == b'=')
                    .count();
                (self.content.len() / 4 * 3).saturating_sub(padding)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    #[error("file path {0:?} must be relative, without `.`, `..` or empty components")]
    Path(String),
    #[error("file path {0:?} is too long or too deep")]
    PathTooLong(String),
    #[error("file {0:?} is not valid base64")]
    Base64(String),
    #[error("file path {0:?} appears twice, or both as a file and as a directory")]
    Conflict(String),
}

/// The components of a workspace path: relative, `/`-separated, none empty, `.` or `..`, no NUL
/// or backslash (a Windows-minded agent must not see `..\\`).
pub fn workspace_path(path: &str) -> Result<Vec<&str>, WorkspaceError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(WorkspaceError::PathTooLong(path.to_owned()));
    }
    let components: Vec<&str> = path.split('/').collect();
    let bad = path.starts_with('/')
        || components
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains(['\0', '\\']));
    if bad {
        return Err(WorkspaceError::Path(path.to_owned()));
    }
    if components.len() > MAX_PATH_DEPTH {
        return Err(WorkspaceError::PathTooLong(path.to_owned()));
    }
    Ok(components)
}

/// Every path valid, none twice, none both a file and another file's directory.
pub fn check_workspace(files: &[WorkspaceFile]) -> Result<(), WorkspaceError> {
    let mut seen = std::collections::BTreeSet::new();
    for file in files {
        workspace_path(&file.path)?;
        if !seen.insert(file.path.as_str()) {
            return Err(WorkspaceError::Conflict(file.path.clone()));
        }
    }
    for path in &seen {
        let dir = format!("{path}/");
        if seen
            .range(dir.as_str()..)
            .next()
            .is_some_and(|next| next.starts_with(&dir))
        {
            return Err(WorkspaceError::Conflict((*path).to_owned()));
        }
    }
    Ok(())
}

/// Redis key of a user's agent spend (micro-dollars) on one UTC day (`YYYY-MM-DD`).
pub fn daily_spend_key(key_prefix: &str, user_id: &str, day: &str) -> String {
    format!("{key_prefix}agent_spend:{user_id}:{day}")
}

/// Seconds a day's spend key (and a settlement marker) lives: past the day, so a late settlement
/// still finds it.
const SPEND_TTL_SECONDS: i64 = 2 * 24 * 3600;

/// Reserves `reserve` against `budget` for the day, unless the day is spent or it would not fit.
const RESERVE: &str = r"
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserve = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
if spent >= budget or spent + reserve > budget then return {0, spent} end
redis.call('INCRBY', KEYS[1], reserve)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, spent + reserve}
";

/// Replaces a run's reservation by its reported cost, once per execution (the marker), and only
/// on a day that has a spend key (no daily budget, nothing reserved).
const SETTLE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
";

/// The per-user daily agent budget in Redis: reserved by the api before a run is queued,
/// settled by result-processor when the run's cost is known.
#[derive(Clone)]
pub struct SpendLedger {
    redis: redis::aio::ConnectionManager,
    key_prefix: String,
}

impl std::fmt::Debug for SpendLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendLedger")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A reservation that did not fit: what the day has spent or reserved so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub spent: Usd,
}

impl SpendLedger {
    pub fn new(redis: redis::aio::ConnectionManager, key_prefix: impl Into<String>) -> Self {
        Self {
            redis,
            key_prefix: key_prefix.into(),
        }
    }

    /// Reserves `reserve` of `user_id`'s `budget` for `day` (`YYYY-MM-DD`), atomically.
    pub async fn reserve(
        &self,
        user_id: &str,
        day: &str,
        reserve: Usd,
        budget: Usd,
    ) -> redis::RedisResult<Result<(), OverBudget>> {
        let (granted, spent): (i64, i64) = redis::Script::new(RESERVE)
            .key(daily_spend_key(&self.key_prefix, user_id, day))
            .arg(reserve.micros)
            .arg(budget.micros)
            .arg(SPEND_TTL_SECONDS)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let spent = Usd {
            micros: u64::try_from(spent).unwrap_or(0),
        };
        Ok(if granted == 1 {
            Ok(())
        } else {
            Err(OverBudget { spent })
        })
    }

    /// Corrects `day`'s spend by the run's reported cost minus what was reserved for it. Without
    /// a reported cost the reservation stands (what was not measured is not refunded).
    pub async fn settle(
        &self,
        execution_id: &str,
        user_id: &str,
        day: &str,
        reserved: Option<Usd>,
        cost: Option<Usd>,
    ) -> redis::RedisResult<()> {
        let Some(cost) = cost else { return Ok(()) };
        let reserved = reserved.unwrap_or_default().micros;
        let delta = i64::try_from(cost.micros)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(reserved).unwrap_or(i64::MAX));
        if delta == 0 {
            return Ok(());
        }
        let marker = format!("{}agent_settled:{execution_id}", self.key_prefix);
        let _settled: i64 = redis::Script::new(SETTLE)
            .key(daily_spend_key(&self.key_prefix, user_id, day))
            .key(marker)
            .arg(delta)
            .arg(SPEND_TTL_SECONDS)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

/// The UTC day of a time, as the daily budget keys spell it.
pub fn budget_day(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// Counts a finished agent run's tokens and cost (call once per stored result).
pub fn record_usage(provider: &str, report: &AgentReport) {
    let provider = provider.to_owned();
    metrics::counter!("kiln_agent_runs_total", "provider" => provider.clone()).increment(1);
    if let Some(usage) = report.usage {
        metrics::counter!("kiln_agent_tokens_total", "provider" => provider.clone(), "kind" => "input")
            .increment(usage.input_tokens);
        metrics::counter!("kiln_agent_tokens_total", "provider" => provider.clone(), "kind" => "output")
            .increment(usage.output_tokens);
    }
    if let Some(cost) = report.cost_usd {
        metrics::counter!("kiln_agent_cost_micro_usd_total", "provider" => provider.clone())
            .increment(cost.micros);
    }
    if report.budget_exceeded.is_some() {
        metrics::counter!("kiln_agent_budget_stops_total", "provider" => provider).increment(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(path: &str) -> WorkspaceFile {
        WorkspaceFile {
            path: path.into(),
            content: String::new(),
            encoding: ContentEncoding::Utf8,
        }
    }

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert_eq!(workspace_path("src/main.rs").unwrap(), ["src", "main.rs"]);
        assert!(workspace_path(".hidden").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(workspace_path(bad).is_err(), "{bad:?}");
        }
        let deep = vec!["d"; 33].join("/");
        assert!(matches!(
            workspace_path(&deep),
            Err(WorkspaceError::PathTooLong(_))
        ));
    }

    #[test]
    fn duplicates_and_file_directory_clashes_are_rejected() {
        assert!(check_workspace(&[file("a"), file("b/c"), file("b/d")]).is_ok());
        assert!(check_workspace(&[file("a"), file("a")]).is_err());
        assert!(check_workspace(&[file("a"), file("a/b")]).is_err());
        assert!(check_workspace(&[file("a/b"), file("a"), file("a.txt")]).is_err());
        assert!(check_workspace(&[file("a"), file("a.b/c")]).is_ok());
    }

    #[test]
    fn base64_files_decode_and_report_their_size() {
        let f = WorkspaceFile {
            path: "bin".into(),
            content: "AAEC/w==".into(),
            encoding: ContentEncoding::Base64,
        };
        assert_eq!(f.bytes().unwrap(), [0, 1, 2, 255]);
        assert_eq!(f.decoded_len(), 4);
        let bad = WorkspaceFile {
            content: "!!".into(),
            ..f
        };
        assert!(bad.bytes().is_err());
    }
}
