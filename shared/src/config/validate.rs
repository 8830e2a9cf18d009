//! Semantic checks that types alone cannot express. Each failure names the offending key.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::{Config, ConfigError};

/// Room left in a Kafka message for the envelope around a script of `limits.max_script_bytes`.
const ENVELOPE_HEADROOM_BYTES: usize = 64 * 1024;
const MIN_SECRET_BYTES: usize = 32;
/// The development secret shipped in `config.toml`; only dev and test environments accept it.
const DEV_JWT_SECRET: &str = "kiln-dev-only-secret-change-me-0123456789";

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn ensure(ok: bool, key: &str, reason: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, reason))
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_kafka()?;
        self.validate_stores()?;
        self.validate_telemetry()?;
        self.validate_api_and_limits()?;
        self.validate_dlq()?;
        self.validate_kubernetes()?;
        self.validate_rate_limit()?;
        self.validate_agents()?;
        self.validate_services()
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        ensure(
            !k.bootstrap_servers.trim().is_empty(),
            "kafka.bootstrap_servers",
            "must not be empty",
        )?;
        ensure(
            k.topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                && k.topic_prefix.len() <= 200,
            "kafka.topic_prefix",
            "may contain only ASCII letters, digits, '.', '_' and '-' (at most 200)",
        )?;
        ensure(k.partitions >= 1, "kafka.partitions", "must be at least 1")?;
        ensure(
            k.replication_factor >= 1,
            "kafka.replication_factor",
            "must be at least 1",
        )?;
        ensure(
            k.retention_hours >= 1,
            "kafka.retention_hours",
            "must be at least 1",
        )?;
        ensure(
            k.max_message_bytes >= 1024 * 1024,
            "kafka.max_message_bytes",
            "must be at least 1 MiB",
        )?;
        // The broker rejects group sessions outside its group.{min,max}.session.timeout.ms.
        ensure(
            (6_000..=300_000).contains(&k.session_timeout_ms),
            "kafka.session_timeout_ms",
            "must be between 6000 and 300000",
        )?;
        ensure(
            k.revoke_drain_timeout_ms < u64::from(k.session_timeout_ms) / 2,
            "kafka.revoke_drain_timeout_ms",
            "must be below half of kafka.session_timeout_ms, or the group evicts a draining consumer",
        )?;
        ensure(
            (1..=1024).contains(&k.partition_queue_capacity),
            "kafka.partition_queue_capacity",
            "must be between 1 and 1024",
        )?;
        ensure(
            k.delivery_timeout_ms >= 1_000,
            "kafka.delivery_timeout_ms",
            "must be at least 1000",
        )?;
        ensure(
            k.retry.max_attempts >= 1,
            "kafka.retry.max_attempts",
            "must be at least 1",
        )?;
        ensure(
            k.retry.initial_backoff_ms >= 1 && k.retry.initial_backoff_ms <= k.retry.max_backoff_ms,
            "kafka.retry.initial_backoff_ms",
            "must be at least 1 and at most kafka.retry.max_backoff_ms",
        )
    }

    fn validate_stores(&self) -> Result<(), ConfigError> {
        let uri = self.mongo.uri.expose_secret();
        ensure(
            uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"),
            "mongo.uri",
            "must start with mongodb:// or mongodb+srv://",
        )?;
        ensure(
            !self.mongo.database.is_empty() && !self.mongo.database.contains(['/', '.', ' ', '$']),
            "mongo.database",
            "must be a non-empty name without '/', '.', ' ' or '$'",
        )?;
        let url = self.redis.url.expose_secret();
        ensure(
            ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)),
            "redis.url",
            "must start with redis://, rediss:// or unix://",
        )
    }

    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&t.log_level) {
            return Err(invalid("telemetry.log_level", e.to_string()));
        }
        ensure(
            (0.0..=1.0).contains(&t.sample_ratio),
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0",
        )?;
        ensure(
            t.otlp_endpoint.is_empty()
                || t.otlp_endpoint.starts_with("http://")
                || t.otlp_endpoint.starts_with("https://"),
            "telemetry.otlp_endpoint",
            "must be empty or an http(s):// URL",
        )
    }

    fn validate_api_and_limits(&self) -> Result<(), ConfigError> {
        ensure(
            self.api.jwt_secret.expose_secret().len() >= MIN_SECRET_BYTES,
            "api.jwt_secret",
            "must be at least 32 bytes (set KILN__API__JWT_SECRET)",
        )?;
        ensure(
            self.api.jwt_secret.expose_secret() != DEV_JWT_SECRET
                || matches!(self.telemetry.environment.as_str(), "dev" | "test"),
            "api.jwt_secret",
            "is the development secret; set KILN__API__JWT_SECRET outside dev and test",
        )?;
        let l = &self.limits;
        ensure(
            l.default_timeout_seconds >= 1 && l.default_timeout_seconds <= l.max_timeout_seconds,
            "limits.default_timeout_seconds",
            "must be at least 1 and at most limits.max_timeout_seconds",
        )?;
        ensure(
            l.max_script_bytes >= 1
                && l.max_script_bytes + ENVELOPE_HEADROOM_BYTES
                    <= self.kafka.max_message_bytes as usize,
            "limits.max_script_bytes",
            "must leave 64 KiB of kafka.max_message_bytes for the event envelope",
        )?;
        ensure(
            l.max_output_bytes >= 1024,
            "limits.max_output_bytes",
            "must be at least 1024",
        )?;
        ensure(l.memory_mb >= 16, "limits.memory_mb", "must be at least 16")?;
        ensure(
            l.max_processes >= 1,
            "limits.max_processes",
            "must be at least 1",
        )?;
        ensure(
            l.global_concurrency >= 1,
            "limits.global_concurrency",
            "must be at least 1",
        )?;
        ensure(
            l.per_user_concurrency >= 1 && l.per_user_concurrency <= l.global_concurrency,
            "limits.per_user_concurrency",
            "must be at least 1 and at most limits.global_concurrency",
        )?;
        let mut seen = std::collections::HashSet::new();
        for (i, language) in self.runtime.languages.iter().enumerate() {
            let key = format!("runtime.languages[{i}]");
            ensure(
                !language.lang.is_empty() && !language.version.is_empty(),
                &key,
                "lang and version must not be empty",
            )?;
            ensure(
                seen.insert((language.lang.as_str(), language.version.as_str())),
                &key,
                "duplicate lang and version",
            )?;
            ensure(
                !language.file_name.is_empty()
                    && !language.file_name.contains(['/', '\\'])
                    && language.file_name != ".."
                    && language.file_name != ".",
                &format!("{key}.file_name"),
                "must be a plain file name",
            )?;
            ensure(
                language
                    .command
                    .first()
                    .is_some_and(|bin| bin.starts_with('/')),
                &format!("{key}.command"),
                "must start with an absolute interpreter path",
            )?;
        }
        ensure(
            self.event_store.retention_days >= 1,
            "event_store.retention_days",
            "must be at least 1",
        )?;
        ensure(
            self.event_store.replay_lease_seconds >= 3,
            "event_store.replay_lease_seconds",
            "must be at least 3",
        )?;
        ensure(
            (1..=10_000).contains(&self.event_store.replay_batch_size),
            "event_store.replay_batch_size",
            "must be 1-10000",
        )?;
        ensure(
            (10..=60_000).contains(&self.event_store.replay_poll_interval_ms),
            "event_store.replay_poll_interval_ms",
            "must be 10-60000",
        )?;
        ensure(
            self.lifecycle.drain_timeout_seconds >= 1,
            "lifecycle.drain_timeout_seconds",
            "must be at least 1",
        )
    }

    fn validate_services(&self) -> Result<(), ConfigError> {
        let mut seen: HashMap<u16, &str> = HashMap::new();
        for (name, service) in self.services.all() {
            let port = service.http_addr.port();
            if port != 0
                && let Some(other) = seen.insert(port, name)
            {
                return Err(invalid(
                    &format!("services.{name}.http_addr"),
                    format!("port {port} is already used by services.{other}"),
                ));
            }
            ensure(
                !service.consumer_group.is_empty(),
                &format!("services.{name}.consumer_group"),
                "must not be empty",
            )?;
        }
        Ok(())
    }
}
