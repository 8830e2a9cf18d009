//! Kiln's configuration: one `config.toml`, overridden key by key from `KILN__SECTION__KEY`
//! environment variables, typed and validated before anything else starts.
//!
//! Secrets are `SecretString`s; the `Serialize` impl used by `--dump-config` and the start-up log
//! redacts them, so printing the configuration can never leak a password.

mod agents;
mod dlq;
mod kubernetes;
mod rate_limit;
mod redact;
mod sections;
mod validate;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use agents::*;
pub use dlq::{DlqConfig, DlqPolicy};
pub use kubernetes::{KubernetesConfig, is_dns_label};
pub use rate_limit::{Cidr, RateLimitConfig, RateRule};
pub use redact::{redact_url, redacted, redacted_url};
pub use sections::*;

/// Environment variables with this prefix override `config.toml`; `__` separates path segments.
pub const ENV_PREFIX: &str = "KILN__";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "KILN_CONFIG";
pub const DEFAULT_CONFIG_PATH: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} not found")]
    Missing { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub mongo: MongoConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub saga: SagaConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub event_store: EventStoreConfig,
    #[serde(default)]
    pub dlq: DlqConfig,
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
}

impl Config {
    /// Loads `path` (which must exist) and the `KILN__*` environment, then validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::from_figment(Self::figment(Some(path)))
    }

    /// Defaults plus environment only; used by tests and tools that run without a file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(None))
    }

    fn figment(path: Option<&Path>) -> Figment {
        // Defaults come from the `#[serde(default)]` impls, not from a serialized `Config`, because
        // serializing redacts secrets and would turn their defaults into the redaction marker.
        // `services` (no secrets) is the exception: its per-service defaults differ by service, so
        // they are merged key by key, and overriding one key keeps the others.
        let mut figment = Figment::from(Serialized::default("services", ServicesConfig::default()));
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML with every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# configuration could not be rendered: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
