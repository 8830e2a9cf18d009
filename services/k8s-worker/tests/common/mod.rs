//! Helpers for the sandbox tests: a `LocalRuntime` over a private work root, and waiting for
//! results. They run the real runner and the real bubblewrap.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_worker::{ExecutorMeta, ExecutorRuntime, ExecutorSpec, LocalRuntime};
use kiln_runner_protocol::{RunnerResult, StatePaths};
use shared::events::ExecutionLimits;
use uuid::Uuid;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `target/debug/kiln-runner`, next to this test's `deps/` directory.
pub fn runner_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let runner = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("kiln-runner");
    assert!(
        runner.is_file(),
        "{} is missing: build it first with `cargo build -p kiln-runner` (./deploy.sh test does)",
        runner.display()
    );
    runner
}

pub async fn runtime() -> LocalRuntime {
    let mut config = shared::testing::test_config().unwrap();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("k8s-worker-{}", Uuid::now_v7().simple()));
    config.runtime.work_dir = work.display().to_string();
    config.runtime.runner_path = runner_path().display().to_string();
    LocalRuntime::new_in(&config.runtime, &repo_root())
        .await
        .unwrap()
}

pub fn limits() -> ExecutionLimits {
    ExecutionLimits {
        timeout_seconds: 10,
        memory_mb: 256,
        max_processes: 64,
        max_output_bytes: 1024 * 1024,
        max_file_bytes: 16 * 1024 * 1024,
    }
}

pub fn spec(lang: &str, script: &str) -> ExecutorSpec {
    ExecutorSpec {
        execution_id: Uuid::now_v7().to_string(),
        lang: lang.into(),
        lang_version: String::new(),
        script: script.into(),
        stdin: None,
        limits: limits(),
        meta: ExecutorMeta {
            user_id: Some("user-1".into()),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            traceparent: None,
        },
        agent: None,
    }
}

pub struct Finished {
    pub result: RunnerResult,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub dir: PathBuf,
}

impl Finished {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub async fn wait_result(runtime: &LocalRuntime, id: &str, timeout: Duration) -> Finished {
    let paths = StatePaths::new(runtime.state_dir(id));
    let deadline = Instant::now() + timeout;
    while !paths.result().exists() {
        assert!(
            Instant::now() < deadline,
            "no result.json in {} after {timeout:?}; runner.log: {}",
            paths.dir.display(),
            std::fs::read_to_string(paths.file("runner.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let result: RunnerResult =
        serde_json::from_slice(&std::fs::read(paths.result()).unwrap()).unwrap();
    Finished {
        result,
        stdout: std::fs::read(paths.stdout()).unwrap_or_default(),
        stderr: std::fs::read(paths.stderr()).unwrap_or_default(),
        dir: paths.dir.clone(),
    }
}

/// Creates the executor and waits for its result.
pub async fn run(runtime: &LocalRuntime, spec: &ExecutorSpec) -> Finished {
    runtime.create(spec).await.unwrap();
    let timeout = Duration::from_secs(spec.limits.timeout_seconds + 20);
    let finished = wait_result(runtime, &spec.execution_id, timeout).await;
    assert!(
        finished.result.error.is_none(),
        "runner error: {:?}",
        finished.result
    );
    finished
}
