//! The typed sections of `config.toml`. Every field has a default so a partial file is valid;
//! `config.toml` at the repository root documents each key.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::redact::{redacted, redacted_url};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Prepended to every event type to form its topic, e.g. `dev_execution_requested`.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub retention_hours: u64,
    /// Scripts travel inside events, so topics and producers accept messages up to this size.
    pub max_message_bytes: u32,
    pub session_timeout_ms: u32,
    /// Messages buffered per assigned partition before that partition is paused.
    pub partition_queue_capacity: usize,
    /// How long a revoked partition may take to finish its in-flight message; must stay well
    /// below `session_timeout_ms` or the group evicts us mid-drain.
    pub revoke_drain_timeout_ms: u64,
    /// How long the producer waits for a delivery report before failing the publish.
    pub delivery_timeout_ms: u32,
    pub retry: RetryConfig,
    /// Extra librdkafka properties applied to every client, e.g. `"statistics.interval.ms" = "5000"`.
    pub client_overrides: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: "dev_".into(),
            partitions: 6,
            replication_factor: 1,
            retention_hours: 168,
            max_message_bytes: 4 * 1024 * 1024,
            session_timeout_ms: 10_000,
            partition_queue_capacity: 8,
            revoke_drain_timeout_ms: 4_000,
            delivery_timeout_ms: 30_000,
            retry: RetryConfig::default(),
            client_overrides: BTreeMap::new(),
        }
    }
}

/// Backoff for retryable handler errors; a message that exhausts it goes to the dead-letter topic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        // 12 attempts with a 5 s cap wait 16-31 s in all (jitter), so a MongoDB or Redis outage
        // of that length never dead-letters a message.
        Self {
            max_attempts: 12,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    #[serde(serialize_with = "redacted_url")]
    pub uri: SecretString,
    pub database: String,
    pub connect_timeout_ms: u64,
    pub server_selection_timeout_ms: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: SecretString::from("mongodb://127.0.0.1:27017/?directConnection=true"),
            database: "kiln".into(),
            connect_timeout_ms: 3_000,
            server_selection_timeout_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(serialize_with = "redacted_url")]
    pub url: SecretString,
    pub key_prefix: String,
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/"),
            key_prefix: "kiln:".into(),
            response_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`; empty disables export
    /// (trace context is still created and propagated).
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub environment: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            environment: "dev".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Signs session cookies; at least 32 bytes.
    #[serde(serialize_with = "redacted")]
    pub jwt_secret: SecretString,
    pub session_ttl_minutes: u64,
    pub request_timeout_seconds: u64,
    pub max_body_bytes: usize,
    /// SSE comment lines keep proxies from closing quiet streams.
    pub sse_heartbeat_seconds: u64,
    /// How long an `Idempotency-Key` maps to its execution.
    pub idempotency_ttl_hours: u64,
    /// Secure cookies need HTTPS; off for the plain-HTTP local stack.
    pub secure_cookies: bool,
    /// The built web app served at `/` (native mode); empty serves none.
    pub static_dir: String,
    /// Peers (CIDR blocks) whose `X-Forwarded-For` names the client; from anyone else the
    /// header is ignored, so it cannot move a client to another rate-limit bucket.
    pub trusted_proxies: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(""),
            session_ttl_minutes: 720,
            request_timeout_seconds: 30,
            max_body_bytes: 2 * 1024 * 1024,
            sse_heartbeat_seconds: 15,
            idempotency_ttl_hours: 24,
            secure_cookies: false,
            static_dir: "frontend/dist".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// bubblewrap sandboxes on this host
    Local,
    /// one hardened pod per execution
    Kubernetes,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// Where the local runtime keeps per-execution work and state directories.
    pub work_dir: String,
    /// The runner binary the local runtime starts for each execution (`kiln-runner`).
    pub runner_path: String,
    /// bubblewrap, for the local runtime's sandboxes.
    pub bwrap_path: String,
    pub kubernetes_namespace: String,
    /// The languages Kiln offers; a language whose interpreter is missing on this host is hidden.
    pub languages: Vec<LanguageConfig>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            kind: RuntimeKind::Local,
            work_dir: ".kiln/executions".into(),
            runner_path: "target/debug/kiln-runner".into(),
            bwrap_path: "/usr/bin/bwrap".into(),
            kubernetes_namespace: "kiln-executors".into(),
            languages: Vec::new(),
        }
    }
}

/// One language version: how to run a script of it, and an example for the web app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageConfig {
    pub lang: String,
    pub version: String,
    /// The script's file name inside the work directory, e.g. `main.py`.
    pub file_name: String,
    /// argv; the interpreter is an absolute path (`{file}` is replaced by `file_name`).
    pub command: Vec<String>,
    /// Extra environment for the program (never inherited from the service).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The executor image for the Kubernetes runtime.
    #[serde(default)]
    pub image: String,
    pub example: String,
    /// Overrides `limits.memory_mb` for this language (a compiler may need more than scripts).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Overrides `limits.max_processes` for this language.
    #[serde(default)]
    pub max_processes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_script_bytes: usize,
    pub default_timeout_seconds: u64,
    pub max_timeout_seconds: u64,
    pub max_output_bytes: usize,
    pub memory_mb: u64,
    pub max_processes: u64,
    pub max_file_bytes: u64,
    /// Executions running at once across the platform.
    pub global_concurrency: usize,
    /// Executions running at once for one user.
    pub per_user_concurrency: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_script_bytes: 1024 * 1024,
            default_timeout_seconds: 10,
            max_timeout_seconds: 300,
            max_output_bytes: 1024 * 1024,
            memory_mb: 256,
            max_processes: 64,
            max_file_bytes: 16 * 1024 * 1024,
            global_concurrency: 16,
            per_user_concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// After SIGTERM, in-flight work gets this long to finish before the process gives up.
    pub drain_timeout_seconds: u64,
    /// Each dependency check in `/health/ready` fails after this long.
    pub readiness_check_timeout_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            drain_timeout_seconds: 20,
            readiness_check_timeout_ms: 1_500,
        }
    }
}

impl LanguageConfig {
    /// Whether this host can run the language: its interpreter (`command[0]`) is an absolute
    /// path to an executable file. The api offers, and k8s-worker runs, exactly these.
    pub fn is_available(&self) -> bool {
        self.command
            .first()
            .is_some_and(|program| is_runnable_interpreter(program))
    }
}

/// An absolute path to an executable file (the sandbox has no PATH lookup).
pub fn is_runnable_interpreter(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    path.is_absolute()
        && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// saga-orchestrator: scheduling and the sweeper that ends executions whose executor vanished.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// How often the scheduler looks for queued work when no event woke it.
    pub schedule_interval_ms: u64,
    pub sweep_interval_ms: u64,
    /// Time past an execution's own timeout before the sweeper declares its executor lost.
    pub executor_grace_seconds: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            schedule_interval_ms: 200,
            sweep_interval_ms: 2_000,
            executor_grace_seconds: 15,
        }
    }
}

/// pod-monitor: how executors are observed and how live output is batched.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often every live executor is read when inotify is unavailable (with inotify, changes
    /// are acted on as they happen and live executors are read every half flush interval).
    pub poll_interval_ms: u64,
    /// Live output is coalesced into at most one chunk per stream per interval.
    pub output_flush_interval_ms: u64,
    pub output_chunk_bytes: usize,
    /// Finished executors' state is deleted this long after their result was published (the
    /// result itself lives in MongoDB; this only bounds disk use and directory scans).
    pub retention_seconds: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 25,
            output_flush_interval_ms: 100,
            output_chunk_bytes: 16 * 1024,
            retention_seconds: 120,
        }
    }
}

/// event-replay's event store: every event of every topic, kept for replay and history.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventStoreConfig {
    /// Stored events expire this long after they occurred (a TTL index on `occurred_at`).
    pub retention_days: u64,
    /// An instance running a replay session holds it this long unless it renews the lease; a
    /// crashed instance's session is taken over after this.
    pub replay_lease_seconds: u64,
    /// Replayed events published before the session's progress is saved.
    pub replay_batch_size: u32,
    /// How often an idle instance looks for a running session to claim.
    pub replay_poll_interval_ms: u64,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            retention_days: 30,
            replay_lease_seconds: 30,
            replay_batch_size: 100,
            replay_poll_interval_ms: 1_000,
        }
    }
}

/// Settings every binary has: where it serves health and metrics, and its consumer group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub http_addr: SocketAddr,
    #[serde(default)]
    pub consumer_group: String,
}

impl ServiceConfig {
    fn new(port: u16, group: &str) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            consumer_group: group.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesConfig {
    pub api: ServiceConfig,
    pub saga_orchestrator: ServiceConfig,
    pub k8s_worker: ServiceConfig,
    pub pod_monitor: ServiceConfig,
    pub result_processor: ServiceConfig,
    pub event_replay: ServiceConfig,
    pub dlq_processor: ServiceConfig,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            api: ServiceConfig::new(8080, "api"),
            saga_orchestrator: ServiceConfig::new(9101, "saga-orchestrator"),
            k8s_worker: ServiceConfig::new(9102, "k8s-worker"),
            pod_monitor: ServiceConfig::new(9103, "pod-monitor"),
            result_processor: ServiceConfig::new(9104, "result-processor"),
            event_replay: ServiceConfig::new(9105, "event-replay"),
            dlq_processor: ServiceConfig::new(9106, "dlq-processor"),
        }
    }
}

impl ServicesConfig {
    /// The settings of the binary called `name` (its crate and process name).
    pub fn get(&self, name: &str) -> Option<&ServiceConfig> {
        match name {
            "api" => Some(&self.api),
            "saga-orchestrator" => Some(&self.saga_orchestrator),
            "k8s-worker" => Some(&self.k8s_worker),
            "pod-monitor" => Some(&self.pod_monitor),
            "result-processor" => Some(&self.result_processor),
            "event-replay" => Some(&self.event_replay),
            "dlq-processor" => Some(&self.dlq_processor),
            _ => None,
        }
    }

    pub(crate) fn all(&self) -> [(&'static str, &ServiceConfig); 7] {
        [
            ("api", &self.api),
            ("saga_orchestrator", &self.saga_orchestrator),
            ("k8s_worker", &self.k8s_worker),
            ("pod_monitor", &self.pod_monitor),
            ("result_processor", &self.result_processor),
            ("event_replay", &self.event_replay),
            ("dlq_processor", &self.dlq_processor),
        ]
    }
}
