//! Each of the seven binaries starts against the local infrastructure, answers `/health/ready`
//! and `/metrics`, and exits 0 within its drain deadline on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stack::{Isolation, SERVICES, Stack, command, wait_ready, workspace_root};

const DRAIN_SECONDS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_serves_health_and_metrics_and_drains_on_sigterm() {
    let isolation = Isolation::new("binaries");
    let prefix = isolation.prefix.clone();
    let mut stack = Stack::start(isolation).await;
    let client = stack.client.clone();
    let services = &mut stack.services;

    for service in services.iter_mut() {
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

    for service in services.iter_mut() {
        kill(Pid::from_raw(service.child.id() as i32), Signal::SIGTERM).unwrap();
    }
    let started = Instant::now();
    for service in services.iter_mut() {
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
