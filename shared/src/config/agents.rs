//! `[agents]`: coding agents as an execution kind, and the registry of their providers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_runner_protocol::agent::OutputParser;
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Room in a Kafka message for everything of an event besides the workspace or changed files.
const HEADROOM_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// A git-ignored `KEY=value` file holding provider keys; read by k8s-worker when it starts an
    /// agent, and only the keys its provider names are handed to that execution.
    pub secrets_file: String,
    /// Workspace files per request, at most.
    pub max_files: usize,
    /// One workspace file, at most (decoded).
    pub max_file_bytes: u64,
    /// All workspace files together (decoded). They travel inside `execution_requested`, so this
    /// is bounded by `kafka.max_message_bytes`.
    pub max_workspace_bytes: u64,
    /// Applied when a request names no `max_cost_usd`; 0 = no per-execution cost cap.
    pub default_max_cost_usd: f64,
    /// Per user and UTC day, reserved when an agent execution is queued; 0 = no daily budget.
    pub daily_budget_usd: f64,
    /// A changed file's content is included up to this size (larger ones are listed only).
    pub max_changed_file_bytes: u64,
    /// Content of all changed files of one result together.
    pub max_changed_total_bytes: u64,
    /// Changed entries listed per result.
    pub max_changed_files: usize,
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            secrets_file: ".kiln/secrets.env".into(),
            max_files: 100,
            max_file_bytes: 10 * 1024 * 1024,
            max_workspace_bytes: 1024 * 1024,
            default_max_cost_usd: 1.0,
            daily_budget_usd: 20.0,
            max_changed_file_bytes: 256 * 1024,
            max_changed_total_bytes: 1024 * 1024,
            max_changed_files: 200,
            providers: BTreeMap::new(),
        }
    }
}

/// One agent CLI: how to start it, read it, and what it may reach.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A test double: refused outside the `dev` and `test` environments.
    #[serde(default)]
    pub test_only: bool,
    pub description: String,
    /// The CLI: an absolute path, or relative to the directory the services run in.
    pub binary: String,
    /// argv after the binary; `{prompt}` and `{model}` are replaced (each argument stays one
    /// argument: nothing is split or passed through a shell).
    pub args: Vec<String>,
    pub parser: OutputParser,
    pub default_model: String,
    /// The executor image for the Kubernetes runtime.
    #[serde(default)]
    pub image: String,
    /// The agent's whole environment besides `PATH`, `HOME`, `LANG` and its secrets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of keys in the secret store this provider needs (e.g. `ANTHROPIC_API_KEY`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether the agent gets a network at all. Locally that is the host's whole network (see
    /// docs/agents.md); in Kubernetes the egress policy narrows it to `allowed_hosts`.
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default = "default_timeout")]
    pub default_timeout_seconds: u64,
    #[serde(default = "max_timeout")]
    pub max_timeout_seconds: u64,
    /// Overrides `limits.memory_mb` (agent CLIs on node need more than scripts).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub max_processes: Option<u64>,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    300
}

fn max_timeout() -> u64 {
    1800
}

impl ProviderConfig {
    /// The binary as a path, relative ones resolved against `base`.
    pub fn binary_path(&self, base: &Path) -> PathBuf {
        base.join(&self.binary)
    }

    /// Enabled and its binary is an executable file on this host.
    pub fn is_available(&self, base: &Path) -> bool {
        self.enabled && super::is_runnable_interpreter(&self.binary_path(base).to_string_lossy())
    }

    /// The argv after the binary, placeholders replaced.
    pub fn argv(&self, model: &str, prompt: &str) -> Vec<String> {
        self.args
            .iter()
            .map(|arg| arg.replace("{model}", model).replace("{prompt}", prompt))
            .collect()
    }
}

/// Environment variable names: what a shell and `env` accept.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn invalid(key: String, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

impl Config {
    pub(super) fn validate_agents(&self) -> Result<(), ConfigError> {
        let a = &self.agents;
        let kafka = u64::from(self.kafka.max_message_bytes);
        // JSON carries bytes as base64 (4/3) in the worst case.
        if a.max_workspace_bytes.saturating_mul(4) / 3 + HEADROOM_BYTES > kafka {
            return Err(invalid(
                "agents.max_workspace_bytes".into(),
                "base64-encoded, it must leave 64 KiB of kafka.max_message_bytes",
            ));
        }
        let result_bytes = a.max_changed_total_bytes.saturating_mul(4) / 3
            + 2 * self.limits.max_output_bytes as u64
            + HEADROOM_BYTES;
        if result_bytes > kafka {
            return Err(invalid(
                "agents.max_changed_total_bytes".into(),
                "base64-encoded, with two streams of limits.max_output_bytes, it must fit kafka.max_message_bytes",
            ));
        }
        if a.max_files == 0 || a.max_file_bytes == 0 || a.max_changed_files == 0 {
            return Err(invalid(
                "agents".into(),
                "max_files, max_file_bytes and max_changed_files must be at least 1",
            ));
        }
        let costs = [
            ("agents.default_max_cost_usd", a.default_max_cost_usd),
            ("agents.daily_budget_usd", a.daily_budget_usd),
        ];
        for (key, value) in costs {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(
                    key.into(),
                    "must be a number of dollars, 0 or more",
                ));
            }
        }
        let dev = matches!(self.telemetry.environment.as_str(), "dev" | "test");
        let mut names = HashMap::new();
        for (name, p) in &a.providers {
            let key = |field: &str| format!("agents.providers.{name}.{field}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(
                    format!("agents.providers.{name}"),
                    "provider names are lowercase letters, digits and '-'",
                ));
            }
            names.insert(name.as_str(), ());
            if p.binary.trim().is_empty() {
                return Err(invalid(key("binary"), "must not be empty"));
            }
            if !p.args.iter().any(|arg| arg.contains("{prompt}")) {
                return Err(invalid(key("args"), "must pass the prompt: use {prompt}"));
            }
            if p.default_timeout_seconds == 0 || p.default_timeout_seconds > p.max_timeout_seconds {
                return Err(invalid(
                    key("default_timeout_seconds"),
                    "must be at least 1 and at most max_timeout_seconds",
                ));
            }
            if let Some(bad) = p
                .secrets
                .iter()
                .chain(p.env.keys())
                .find(|n| !is_env_name(n))
            {
                return Err(invalid(
                    key("secrets"),
                    &format!("{bad:?} is not an environment variable name"),
                ));
            }
            if p.test_only && p.enabled && !dev {
                return Err(invalid(
                    key("enabled"),
                    "is a test double; enable it only in the dev or test environment",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fake() -> ProviderConfig {
        ProviderConfig {
            enabled: true,
            test_only: true,
            description: "fake".into(),
            binary: "target/debug/kiln-fake-agent".into(),
            args: vec!["--model".into(), "{model}".into(), "{prompt}".into()],
            parser: OutputParser::Jsonl,
            default_model: "m".into(),
            image: String::new(),
            env: BTreeMap::new(),
            secrets: vec!["FAKE_AGENT_API_KEY".into()],
            network: false,
            allowed_hosts: Vec::new(),
            default_timeout_seconds: 10,
            max_timeout_seconds: 60,
            memory_mb: None,
            max_processes: None,
        }
    }

    fn config_with(provider: ProviderConfig) -> Config {
        let mut config = Config::default();
        config.telemetry.environment = "test".into();
        config.agents.providers.insert("fake".into(), provider);
        config
    }

    #[test]
    fn placeholders_stay_single_arguments() {
        let argv = fake().argv("m1", "do this; rm -rf / {model}");
        assert_eq!(argv, ["--model", "m1", "do this; rm -rf / {model}"]);
    }

    #[test]
    fn provider_rules_name_the_key() {
        assert!(config_with(fake()).validate_agents().is_ok());
        let cases = [
            (
                ProviderConfig {
                    args: vec!["x".into()],
                    ..fake()
                },
                "args",
            ),
            (
                ProviderConfig {
                    secrets: vec!["BAD-NAME".into()],
                    ..fake()
                },
                "secrets",
            ),
            (
                ProviderConfig {
                    default_timeout_seconds: 100,
                    ..fake()
                },
                "default_timeout_seconds",
            ),
        ];
        for (provider, field) in cases {
            let err = config_with(provider).validate_agents().unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
        let mut prod = config_with(fake());
        prod.telemetry.environment = "production".into();
        assert!(
            prod.validate_agents()
                .unwrap_err()
                .to_string()
                .contains("test double")
        );
    }

    #[test]
    fn the_workspace_must_fit_a_kafka_message() {
        let mut config = config_with(fake());
        config.agents.max_workspace_bytes = u64::from(config.kafka.max_message_bytes);
        assert!(config.validate_agents().is_err());
    }
}
