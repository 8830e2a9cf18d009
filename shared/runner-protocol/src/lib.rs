//! The interface between whoever prepares an execution (k8s-worker's local runtime, or a
//! Kubernetes pod spec) and `kiln-runner`, which runs it: a state directory holding
//! [`SPEC_FILE`] (a [`RunnerSpec`]) in, and the live logs, [`STARTED_FILE`] and [`RESULT_FILE`]
//! (a [`RunnerResult`]) out. The runner knows nothing about sandboxes: the spec's `argv` already
//! contains whatever wrapper confines the program.

pub mod agent;
pub mod pod;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `RunnerSpec`, written by the preparer before the runner starts.
pub const SPEC_FILE: &str = "spec.json";
/// `Started`, written by the runner once the program has been spawned.
pub const STARTED_FILE: &str = "started";
pub const STDOUT_FILE: &str = "stdout.log";
pub const STDERR_FILE: &str = "stderr.log";
/// `RunnerResult`, written atomically (tmp + rename) when everything has ended.
pub const RESULT_FILE: &str = "result.json";
/// Present when the executor was deleted on purpose; the runner stops the program when it appears.
pub const CANCELLED_FILE: &str = "cancelled";
/// The runner's pid, written by whoever started it (its process group holds the runner).
pub const RUNNER_PID_FILE: &str = "runner.pid";
/// The runner's own diagnostics (its stdout and stderr), never the program's output.
pub const RUNNER_LOG_FILE: &str = "runner.log";
/// The program's private writable directory.
pub const WORK_DIR: &str = "work";
/// The program's stdin (absent = empty).
pub const STDIN_FILE: &str = "stdin";

/// How to run one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerSpec {
    pub execution_id: String,
    /// The full argv, wrapper included; `argv[0]` is an absolute path (there is no PATH lookup).
    pub argv: Vec<String>,
    /// The program's whole environment: nothing is inherited from the runner.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A file to feed as stdin; `None` = empty stdin.
    #[serde(default)]
    pub stdin_path: Option<PathBuf>,
    /// The directory the program (or its wrapper) starts in.
    pub cwd: PathBuf,
    /// Host credentials to drop to before exec, so the wrapper itself is unprivileged (a root
    /// runner is needed for cgroups; the program must not inherit that).
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// The runner's own deadline, measured from the spawn.
    pub timeout_ms: u64,
    /// Between SIGTERM and SIGKILL when the deadline passes or the run is cancelled.
    pub kill_grace_ms: u64,
    /// Per stream: output beyond this is drained and dropped, and the stream flagged truncated.
    pub output_limit_bytes: u64,
    /// Resource limits enforced by a cgroup (v1) the program starts in.
    #[serde(default)]
    pub cgroup: Option<CgroupSpec>,
    /// Set for agent runs: parse the output, enforce the budget, report the workspace's changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<agent::AgentWatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// A single path component, created under the runner's own cgroup of each controller.
    pub name: String,
    /// Memory (and memory+swap, when the kernel accounts swap) limit.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Tasks (processes and threads) limit.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

/// The content of [`STARTED_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub started_at: DateTime<Utc>,
}

/// How the run ended. Written exactly once, even when the runner itself failed (then `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerResult {
    /// The exit code, when the program exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed the program, when one did.
    pub signal: Option<i32>,
    /// The runner's deadline passed and it killed the program.
    pub timed_out: bool,
    /// The `cancelled` file appeared and the runner killed the program.
    #[serde(default)]
    pub cancelled: bool,
    /// The memory limit was hit and the kernel killed a process of the program.
    pub oom_killed: bool,
    /// A fork or thread creation failed at the pids limit.
    pub pids_limited: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_kb: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The runner could not do its job (bad spec, spawn failure, cgroup setup failure, ...).
    pub error: Option<String>,
    /// Agent runs only: final text, usage, cost, changed files, budget stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<agent::AgentReport>,
}

/// The paths of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    pub dir: PathBuf,
}

impl StatePaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn spec(&self) -> PathBuf {
        self.file(SPEC_FILE)
    }

    pub fn started(&self) -> PathBuf {
        self.file(STARTED_FILE)
    }

    pub fn stdout(&self) -> PathBuf {
        self.file(STDOUT_FILE)
    }

    pub fn stderr(&self) -> PathBuf {
        self.file(STDERR_FILE)
    }

    pub fn result(&self) -> PathBuf {
        self.file(RESULT_FILE)
    }

    pub fn cancelled(&self) -> PathBuf {
        self.file(CANCELLED_FILE)
    }

    pub fn runner_pid(&self) -> PathBuf {
        self.file(RUNNER_PID_FILE)
    }

    pub fn work(&self) -> PathBuf {
        self.file(WORK_DIR)
    }

    pub fn stdin(&self) -> PathBuf {
        self.file(STDIN_FILE)
    }

    pub fn as_path(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn spec_round_trips() {
        let spec = RunnerSpec {
            execution_id: "0190-abc".into(),
            argv: vec!["/usr/bin/bwrap".into(), "--".into(), "/bin/true".into()],
            env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
            stdin_path: Some("/x/stdin".into()),
            cwd: "/x/work".into(),
            run_as: Some(RunAs {
                uid: 65534,
                gid: 65534,
            }),
            timeout_ms: 10_000,
            kill_grace_ms: 100,
            output_limit_bytes: 1 << 20,
            cgroup: Some(CgroupSpec {
                name: "kiln-0190-abc".into(),
                memory_bytes: Some(256 << 20),
                pids_max: Some(68),
            }),
            agent: None,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RunnerSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn optional_spec_fields_may_be_absent() {
        let json = r#"{"execution_id":"e","argv":["/bin/true"],"cwd":"/","timeout_ms":1,
            "kill_grace_ms":0,"output_limit_bytes":10}"#;
        let spec: RunnerSpec = serde_json::from_str(json).unwrap();
        assert!(spec.env.is_empty() && spec.cgroup.is_none() && spec.run_as.is_none());
    }

    #[test]
    fn result_round_trips() {
        let result = RunnerResult {
            exit_code: Some(1),
            signal: None,
            timed_out: true,
            stdout_truncated: true,
            wall_ms: 12,
            cpu_ms: 3,
            peak_memory_kb: 4096,
            started_at: Some(Utc::now()),
            finished_at: Some(Utc::now()),
            error: Some("boom".into()),
            ..RunnerResult::default()
        };
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(serde_json::from_str::<RunnerResult>(&json).unwrap(), result);
        let started = Started {
            started_at: Utc::now(),
        };
        let json = serde_json::to_string(&started).unwrap();
        assert_eq!(serde_json::from_str::<Started>(&json).unwrap(), started);
    }

    #[test]
    fn paths_use_the_constants() {
        let paths = StatePaths::new("/s/e1");
        assert_eq!(paths.result(), Path::new("/s/e1/result.json"));
        assert_eq!(paths.work(), Path::new("/s/e1/work"));
        assert_eq!(paths.stdin(), Path::new("/s/e1/stdin"));
    }
}
