//! Each of the seven binaries starts against the local infrastructure, answers `/health/ready`
//! and `/metrics`, and exits 0 within its drain deadline on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVICES: [&str; 7] = [
    "api",
    "saga-orchestrator",
    "k8s-worker",
    "pod-monitor",
    "result-processor",
    "event-replay",
    "dlq-processor",
];
const DRAIN_SECONDS: u64 = 10;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>/<name>`, next to this test's own `deps/` directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command
        .current_dir(workspace_root())
        .args(["--config", "config.toml"])
        .env_remove("RUST_LOG");
    command
}

struct Service {
    name: &'static str,
    port: u16,
    child: Child,
    log_path: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        // Best effort: the child may already have exited.
        if self.child.kill().is_ok() {
            self.child.wait().ok();
        }
    }
}

fn start(name: &'static str, prefix: &str) -> Service {
    let port = free_port();
    let env_name = name.replace('-', "_").to_uppercase();
    // Logs go to a file (a pipe nobody reads would block a chatty child) named in failures.
    let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = command(name)
        .env(
            format!("KILN__SERVICES__{env_name}__HTTP_ADDR"),
            format!("127.0.0.1:{port}"),
        )
        .env("KILN__KAFKA__TOPIC_PREFIX", prefix)
        .env("KILN__KAFKA__PARTITIONS", "2")
        .env(
            "KILN__LIFECYCLE__DRAIN_TIMEOUT_SECONDS",
            DRAIN_SECONDS.to_string(),
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

async fn wait_ready(client: &reqwest::Client, service: &mut Service) -> serde_json::Value {
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_serves_health_and_metrics_and_drains_on_sigterm() {
    let prefix = format!("sys{}_", uuid::Uuid::now_v7().simple());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut services: Vec<Service> = SERVICES.iter().map(|name| start(name, &prefix)).collect();

    for service in &mut services {
        let ready = wait_ready(&client, service).await;
        assert_eq!(ready["status"], "ready", "{}: {ready}", service.name);
        for check in ["kafka", "mongo", "redis"] {
            assert_eq!(ready["checks"][check], "ok", "{}: {ready}", service.name);
        }
        let live = client
            .get(format!("http://127.0.0.1:{}/health/live", service.port))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200, "{}", service.name);

        let metrics = client
            .get(format!("http://127.0.0.1:{}/metrics", service.port))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let content_type = metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let body = metrics.text().await.unwrap();
        let build_info = format!("kiln_build_info{{service=\"{}\"", service.name);
        assert!(
            body.contains(&build_info),
            "{}: no {build_info} in\n{body}",
            service.name
        );
        assert!(
            body.contains("# TYPE"),
            "{}: not Prometheus text",
            service.name
        );
        assert!(
            body.contains("process_resident_memory_bytes"),
            "{}",
            service.name
        );
    }

    for service in &mut services {
        kill(Pid::from_raw(service.child.id() as i32), Signal::SIGTERM).unwrap();
    }
    let started = Instant::now();
    for service in &mut services {
        let status = loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(DRAIN_SECONDS + 5),
                "{} did not exit within its drain deadline",
                service.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            status.code(),
            Some(0),
            "{} exit status; log: {}",
            service.name,
            service.log_path.display()
        );
    }

    // After start-up, the catalogue topics exist on the broker.
    let topics = Command::new(workspace_root().join("deploy.sh"))
        .args(["kafka-topics", "--list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&topics.stdout);
    for topic in [
        "execution_requested",
        "pod_running",
        "result_stored",
        "dead_letter_queue",
    ] {
        assert!(
            listed.contains(&format!("{prefix}{topic}")),
            "{prefix}{topic} not listed"
        );
    }
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

#[test]
fn dump_config_prints_the_effective_config_with_secrets_redacted() {
    for name in SERVICES {
        let output = run(command(name)
            .arg("--dump-config")
            .env(
                "KILN__API__JWT_SECRET",
                "a-very-secret-value-that-is-long-enough",
            )
            .env("KILN__KAFKA__PARTITIONS", "9"));
        assert!(output.status.success(), "{name}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            text.contains("partitions = 9"),
            "{name}: env override missing"
        );
        assert!(text.contains("jwt_secret = \"[REDACTED]\""), "{name}");
        assert!(
            !text.contains("a-very-secret-value"),
            "{name} leaks the secret"
        );
    }
}

#[test]
fn a_bad_config_value_stops_the_binary_naming_the_key() {
    for name in SERVICES {
        let output = run(command(name).env("KILN__KAFKA__RETENTION_HOURS", "forever"));
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(output.stderr).unwrap().to_lowercase();
        assert!(stderr.contains("kafka.retention_hours"), "{name}: {stderr}");
    }
}
