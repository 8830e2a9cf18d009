//! Starts Kiln's seven binaries as processes against the local infrastructure, isolated from
//! everything else by their own topic prefix, database, Redis prefix, executor directory and ports.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod api;
pub mod private_infra;
pub mod store;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use shared::testing::free_port;

pub const SERVICES: [&str; 7] = [
    "api",
    "saga-orchestrator",
    "k8s-worker",
    "pod-monitor",
    "result-processor",
    "event-replay",
    "dlq-processor",
];

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>/<name>`, next to this test's own `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// `<binary> --config config.toml` run from the repository root, without the caller's `RUST_LOG`.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command
        .current_dir(workspace_root())
        .args(["--config", "config.toml"])
        .env_remove("RUST_LOG");
    command
}

pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub child: Child,
    pub log_path: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        // Best effort: the child may already have exited.
        if self.child.kill().is_ok() {
            self.child.wait().ok();
        }
    }
}

/// Isolation settings shared by every service of one stack.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub prefix: String,
    pub env: Vec<(String, String)>,
}

impl Isolation {
    pub fn new(tag: &str) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let prefix = format!("sys{id}_");
        let work_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{id}"));
        let env = vec![
            ("KILN__KAFKA__TOPIC_PREFIX".into(), prefix.clone()),
            ("KILN__KAFKA__PARTITIONS".into(), "2".into()),
            ("KILN__KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
            ("KILN__KAFKA__REVOKE_DRAIN_TIMEOUT_MS".into(), "2000".into()),
            ("KILN__MONGO__DATABASE".into(), format!("kiln_sys_{id}")),
            ("KILN__REDIS__KEY_PREFIX".into(), format!("{prefix}:")),
            (
                "KILN__RUNTIME__WORK_DIR".into(),
                work_dir.display().to_string(),
            ),
            ("KILN__LIFECYCLE__DRAIN_TIMEOUT_SECONDS".into(), "10".into()),
            // The tests poll the api far faster than a person; the limiter has its own tests.
            ("KILN__RATE_LIMIT__ENABLED".into(), "false".into()),
        ];
        Self { prefix, env }
    }

    /// Adds (or, being later, overrides) an environment variable of every service.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// The value the services see for `key` (the last one set wins).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn database(&self) -> &str {
        self.value("KILN__MONGO__DATABASE").unwrap()
    }

    /// The MongoDB the services use: a private one if set, else the caller's or the local one.
    pub fn mongo_uri(&self) -> String {
        self.value("KILN__MONGO__URI")
            .map(str::to_owned)
            .or_else(|| std::env::var("KILN__MONGO__URI").ok())
            .unwrap_or_else(|| "mongodb://127.0.0.1:27017/?directConnection=true".into())
    }
}

pub fn start(name: &'static str, isolation: &Isolation) -> Service {
    start_on(name, isolation, free_port())
}

/// Starts `name` on `port` (a restarted service keeps its address).
pub fn start_on(name: &'static str, isolation: &Isolation, port: u16) -> Service {
    let env_name = name.replace('-', "_").to_uppercase();
    // Logs go to a file (a pipe nobody reads would block a chatty child) named in failures; a
    // restarted service appends to its predecessor's.
    let log_path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}{name}.log", isolation.prefix));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let child = command(name)
        .envs(isolation.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(
            format!("KILN__SERVICES__{env_name}__HTTP_ADDR"),
            format!("127.0.0.1:{port}"),
        )
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Service {
        name,
        port,
        child,
        log_path,
    }
}

pub async fn wait_ready(client: &reqwest::Client, service: &mut Service) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{}/health/ready", service.port);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            panic!(
                "{} exited early with {status}; log: {}",
                service.name,
                service.log_path.display()
            );
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            return response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{} never became ready; log: {}",
            service.name,
            service.log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// All seven services, ready.
pub struct Stack {
    pub isolation: Isolation,
    pub services: Vec<Service>,
    pub client: reqwest::Client,
}

impl Stack {
    pub async fn start(isolation: Isolation) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut services: Vec<Service> = SERVICES
            .iter()
            .map(|name| start(name, &isolation))
            .collect();
        for service in &mut services {
            wait_ready(&client, service).await;
        }
        Self {
            isolation,
            services,
            client,
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        self.services.iter().find(|s| s.name == name).unwrap().port
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port("api"))
    }

    /// SIGKILLs `name` (no drain, no offset commit), starts it again on the same port and waits
    /// until it is ready. Returns the time from the kill to ready.
    pub async fn kill_and_restart(&mut self, name: &'static str) -> Duration {
        let index = self.services.iter().position(|s| s.name == name).unwrap();
        let mut killed = self.services.remove(index);
        let began = Instant::now();
        killed.child.kill().unwrap();
        killed.child.wait().unwrap();
        let mut restarted = start_on(name, &self.isolation, killed.port);
        wait_ready(&self.client, &mut restarted).await;
        self.services.push(restarted);
        began.elapsed()
    }

    /// The Prometheus text a service serves on `/metrics`.
    pub async fn metrics(&self, name: &str) -> String {
        self.client
            .get(format!("http://127.0.0.1:{}/metrics", self.port(name)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
