//! The local runtime: one bubblewrap sandbox per execution, run by a detached `kiln-runner`.
//!
//! Each execution gets `work_dir/{execution_id}/` (see the state table in
//! `docs/design/execution-pipeline.md`). The directory is prepared in `{work_dir}.staging/` and
//! renamed into place, so pod-monitor never sees a half-written one; `runner.pid` marks the runner
//! as started. The runner is its own process-group leader and is not killed with the worker, so
//! executions survive a worker restart.

mod agent;
mod sandbox;

use std::collections::BTreeMap;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kiln_runner_protocol::{CgroupSpec, RUNNER_LOG_FILE, RunAs, RunnerSpec, StatePaths};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shared::config::RuntimeConfig;
use shared::events::ExecutorRef;
use shared::executions::EXECUTOR_META_FILE;

use crate::languages::Languages;
use crate::runtime::{
    ExecutorRuntime, ExecutorSpec, RuntimeError, executor_name, validate_execution_id,
};
pub use agent::Agents;
/// The program's environment is the same in a sandbox and in a pod.
pub(crate) use sandbox::program_env;
use sandbox::{Extras, SANDBOX_GID, SANDBOX_UID, Sandbox};

/// Between SIGTERM and SIGKILL when the runner stops a program.
const KILL_GRACE_MS: u64 = 100;
/// Tasks bubblewrap needs besides the program: itself and its pid-namespace init.
const WRAPPER_TASKS: u64 = 2;
/// How long `delete` lets the runner stop the program and write its result before killing it.
const DELETE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct LocalRuntime {
    work_root: PathBuf,
    /// A sibling of `work_root` (same file system, so the final rename is atomic) that
    /// pod-monitor does not scan.
    staging_root: PathBuf,
    runner: PathBuf,
    languages: Languages,
    sandbox: Sandbox,
    agents: Agents,
}

impl LocalRuntime {
    /// Resolves the configured paths against the current directory (services run from the
    /// repository root), creates the work root, and checks that a sandbox really starts.
    pub async fn new(config: &RuntimeConfig) -> Result<LocalRuntime, RuntimeError> {
        let cwd = std::env::current_dir().map_err(RuntimeError::io("reading the current dir"))?;
        Self::new_in(config, &cwd).await
    }

    /// Like [`LocalRuntime::new`], with `base` standing for the repository root: relative paths
    /// are resolved against it and the sandbox hides it.
    pub async fn new_in(config: &RuntimeConfig, base: &Path) -> Result<LocalRuntime, RuntimeError> {
        let cwd = base.to_path_buf();
        let work_root = cwd.join(&config.work_dir);
        std::fs::create_dir_all(&work_root).map_err(RuntimeError::io(format!(
            "creating {}",
            work_root.display()
        )))?;
        let work_root = work_root.canonicalize().map_err(RuntimeError::io(format!(
            "resolving {}",
            work_root.display()
        )))?;
        let mut staging_name = work_root.file_name().unwrap_or_default().to_os_string();
        staging_name.push(".staging");
        let staging_root = work_root.with_file_name(staging_name);
        std::fs::create_dir_all(&staging_root).map_err(RuntimeError::io(format!(
            "creating {}",
            staging_root.display()
        )))?;
        prune_tombstones(&staging_root, TOMBSTONE_TTL);
        let runner = cwd.join(&config.runner_path);
        if !runner.is_file() {
            return Err(RuntimeError::Unavailable(format!(
                "runner {} not found (build it: cargo build -p kiln-runner)",
                runner.display()
            )));
        }
        let languages = Languages::from_config(&config.languages);
        let needed: Vec<PathBuf> = languages
            .all()
            .iter()
            .filter_map(|l| l.command.first().map(PathBuf::from))
            .collect();
        // The repository holds config.toml and .kiln/; the work root may live elsewhere.
        let private = [cwd, work_root.clone(), staging_root.clone()];
        let sandbox = Sandbox::new(PathBuf::from(&config.bwrap_path), &private, &needed);
        sandbox.probe(&work_root).await?;
        Ok(LocalRuntime {
            work_root,
            staging_root,
            runner,
            languages,
            sandbox,
            agents: Agents::default(),
        })
    }

    /// Offers agent executions with these providers (none by default).
    pub fn with_agents(mut self, agents: Agents) -> LocalRuntime {
        self.agents = agents;
        self
    }

    pub fn languages(&self) -> &Languages {
        &self.languages
    }

    /// Where the program sees its work directory (its cwd).
    pub fn sandbox_work_dir(&self) -> &'static str {
        self.sandbox.work_mount()
    }

    pub fn work_root(&self) -> &Path {
        &self.work_root
    }

    pub fn state_dir(&self, execution_id: &str) -> PathBuf {
        self.work_root.join(execution_id)
    }

    /// Writes the whole state directory under a staging name, then renames it into place.
    fn prepare(&self, spec: &ExecutorSpec, dir: &Path) -> Result<(), RuntimeError> {
        let agent = match &spec.agent {
            Some(request) => Some((request, self.agents.program(request)?)),
            None => None,
        };
        let language = match agent {
            Some(_) => None,
            None => Some(
                self.languages
                    .get(&spec.lang, &spec.lang_version)
                    .ok_or_else(|| RuntimeError::UnknownLanguage {
                        lang: spec.lang.clone(),
                        version: spec.lang_version.clone(),
                    })?,
            ),
        };
        let staging = self.staging_root.join(&spec.execution_id);
        let io = |what: &str, path: &Path| RuntimeError::io(format!("{what} {}", path.display()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
        }
        let paths = StatePaths::new(&staging);
        let work = paths.work();
        std::fs::create_dir_all(&work).map_err(io("creating", &work))?;
        // The sandbox user must reach work/ (the runner drops to it before bwrap) but needs no
        // listing of the state files next to it.
        set_mode(&staging, 0o711)?;
        std::os::unix::fs::chown(&work, Some(SANDBOX_UID), Some(SANDBOX_GID))
            .map_err(io("chown", &work))?;
        set_mode(&work, 0o700)?;
        if let Some(language) = language {
            let script = work.join(&language.file_name);
            std::fs::write(&script, &spec.script).map_err(io("writing", &script))?;
            std::os::unix::fs::chown(&script, Some(SANDBOX_UID), Some(SANDBOX_GID))
                .map_err(io("chown", &script))?;
        }
        if let Some((request, _)) = &agent {
            agent::write_workspace(&work, request, self.agents.max_file_bytes())?;
        }
        if let Some(stdin) = &spec.stdin {
            std::fs::write(paths.stdin(), stdin).map_err(io("writing", &paths.stdin()))?;
        }

        let final_paths = StatePaths::new(dir);
        let (command, env, extras, watch) = match (agent, language) {
            (Some((_, program)), _) => {
                let (argv, ro_binds) = Agents::command(&program, |p| self.sandbox.hides(p));
                let extras = Extras {
                    share_net: program.network,
                    inherit_env: true,
                    ro_binds,
                };
                (argv, program.env, extras, Some(program.watch))
            }
            (None, Some(language)) => {
                let command = language
                    .command
                    .iter()
                    .map(|arg| arg.replace("{file}", &language.file_name))
                    .collect();
                (command, program_env(&language.env), Extras::default(), None)
            }
            (None, None) => return Err(RuntimeError::Invalid("nothing to run".into())),
        };
        let limits = &spec.limits;
        let setenv = if extras.inherit_env {
            BTreeMap::new()
        } else {
            env.clone()
        };
        let runner_spec = RunnerSpec {
            execution_id: spec.execution_id.clone(),
            argv: self
                .sandbox
                .argv(&final_paths.work(), &setenv, limits, &command, &extras),
            env,
            stdin_path: spec.stdin.as_ref().map(|_| final_paths.stdin()),
            cwd: final_paths.work(),
            run_as: Some(RunAs {
                uid: SANDBOX_UID,
                gid: SANDBOX_GID,
            }),
            timeout_ms: limits.timeout_seconds.saturating_mul(1000),
            kill_grace_ms: KILL_GRACE_MS,
            output_limit_bytes: limits.max_output_bytes,
            cgroup: Some(CgroupSpec {
                name: format!("kiln-{}", spec.execution_id),
                memory_bytes: Some(limits.memory_mb.saturating_mul(1024 * 1024)),
                pids_max: Some(limits.max_processes.saturating_add(WRAPPER_TASKS)),
            }),
            agent: watch,
        };
        write_json(&paths.spec(), &runner_spec)?;
        let meta = shared::executions::ExecutorMeta {
            execution_id: spec.execution_id.clone(),
            user_id: spec.meta.user_id.clone(),
            correlation_id: spec.meta.correlation_id,
            causation_id: spec.meta.causation_id,
            timeout_seconds: limits.timeout_seconds,
            traceparent: spec.meta.traceparent.clone(),
        };
        write_json(&staging.join(EXECUTOR_META_FILE), &meta)?;
        std::fs::rename(&staging, dir).map_err(io("renaming into place", dir))
    }

    /// Starts the runner detached (its own process group) and records its pid.
    /// `secrets` become the runner's environment only (it passes them to the agent).
    async fn start_runner(
        &self,
        dir: &Path,
        secrets: &[(String, String)],
    ) -> Result<(), RuntimeError> {
        let paths = StatePaths::new(dir);
        let log_path = dir.join(RUNNER_LOG_FILE);
        let log = std::fs::File::create(&log_path)
            .map_err(RuntimeError::io(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(RuntimeError::io("duplicating the runner log"))?;
        let mut child = tokio::process::Command::new(&self.runner)
            .arg(dir)
            .env_clear()
            .envs(secrets.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(RuntimeError::io(format!(
                "starting {}",
                self.runner.display()
            )))?;
        let pid = child.id().unwrap_or_default();
        let written = write_atomically(&paths.runner_pid(), pid.to_string().as_bytes());
        // Reap it while we live; after a worker restart, init does.
        let name = dir.display().to_string();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) if status.success() => tracing::debug!(dir = %name, "runner finished"),
                Ok(status) => tracing::warn!(dir = %name, %status, "runner failed"),
                Err(error) => tracing::warn!(dir = %name, %error, "waiting for the runner"),
            }
        });
        written
    }
}

impl ExecutorRuntime for LocalRuntime {
    async fn create(&self, spec: &ExecutorSpec) -> Result<ExecutorRef, RuntimeError> {
        validate_execution_id(&spec.execution_id)?;
        let dir = self.state_dir(&spec.execution_id);
        let paths = StatePaths::new(&dir);
        let executor = ExecutorRef {
            executor: executor_name(&spec.execution_id),
            node: None,
        };
        // A delete that overtook its create (they travel on different topics) left a tombstone:
        // the execution was cancelled before it had an executor, so none is started.
        if self.tombstone(&spec.execution_id).exists() {
            tracing::info!(execution_id = %spec.execution_id, "executor was deleted before it was created; not starting it");
            return Ok(executor);
        }
        if !dir.exists() {
            let this = self.clone();
            let (spec, target) = (spec.clone(), dir.clone());
            tokio::task::spawn_blocking(move || this.prepare(&spec, &target))
                .await
                .map_err(|e| {
                    RuntimeError::io("preparing the executor")(std::io::Error::other(e))
                })??;
        }
        // A redelivered command finds the runner started (or done, or cancelled): nothing to do.
        let settled = [paths.runner_pid(), paths.result(), paths.cancelled()];
        if settled.iter().any(|p| p.exists()) {
            return Ok(executor);
        }
        let secrets = match &spec.agent {
            Some(request) => self.agents.secrets(&request.provider)?,
            None => Vec::new(),
        };
        self.start_runner(&dir, &secrets).await?;
        Ok(executor)
    }

    async fn delete(&self, execution_id: &str, reason: &str) -> Result<(), RuntimeError> {
        if validate_execution_id(execution_id).is_err() {
            return Ok(()); // such an executor cannot exist
        }
        let dir = self.state_dir(execution_id);
        let paths = StatePaths::new(&dir);
        if !dir.is_dir() {
            prune_tombstones(&self.staging_root, TOMBSTONE_TTL);
            let body = serde_json::json!({ "reason": reason, "at": chrono::Utc::now() });
            return write_atomically(&self.tombstone(execution_id), body.to_string().as_bytes());
        }
        if !paths.cancelled().exists() {
            let body = serde_json::json!({ "reason": reason, "at": chrono::Utc::now() });
            write_atomically(&paths.cancelled(), body.to_string().as_bytes())?;
        }
        // The runner notices `cancelled`, stops the program and writes its result; if it does
        // not in time, its process group is killed (bwrap's --die-with-parent ends the sandbox).
        let deadline = tokio::time::Instant::now() + DELETE_GRACE;
        while !paths.result().exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if paths.result().exists() {
            return Ok(());
        }
        if let Some(pid) = self.runner_pid(&dir)
            && killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err()
        {
            tracing::debug!(pid, "runner already gone");
        }
        Ok(())
    }
}

/// A tombstone only has to outlive the create it stops, which the saga gives up on long before
/// this (timeout + executor grace); older ones are removed so they do not pile up.
const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Removes tombstones older than `ttl` from `staging_root` (best effort: a failure only leaves
/// a small file behind).
fn prune_tombstones(staging_root: &Path, ttl: Duration) {
    let Ok(entries) = std::fs::read_dir(staging_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "deleted") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > ttl);
        if old && let Err(error) = std::fs::remove_file(&path) {
            tracing::debug!(path = %path.display(), %error, "removing an old tombstone failed");
        }
    }
}

impl LocalRuntime {
    /// Marks an execution deleted before its executor existed (kept beside the staging area,
    /// which sandboxes cannot see).
    fn tombstone(&self, execution_id: &str) -> PathBuf {
        self.staging_root.join(format!("{execution_id}.deleted"))
    }

    /// The runner's pid, only if that process is still our runner for `dir` (pids are reused).
    fn runner_pid(&self, dir: &Path) -> Option<i32> {
        let text = std::fs::read_to_string(dir.join(kiln_runner_protocol::RUNNER_PID_FILE)).ok()?;
        let pid: i32 = text.trim().parse().ok().filter(|pid| *pid > 1)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.first() == Some(&self.runner.as_os_str().as_encoded_bytes())
            && args.get(1) == Some(&dir.as_os_str().as_encoded_bytes());
        ours.then_some(pid)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(RuntimeError::io(format!("chmod {}", path.display())))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| RuntimeError::Invalid(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(RuntimeError::io(format!("writing {}", path.display())))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(RuntimeError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(RuntimeError::io(format!("renaming {}", path.display())))
}

#[cfg(test)]
mod tombstone_tests {
    use super::*;

    #[test]
    fn only_tombstones_older_than_the_ttl_are_removed() {
        let root = std::env::temp_dir().join(format!("kiln-tombstones-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&root).unwrap();
        let tombstone = root.join("a.deleted");
        let other = root.join("b.json");
        std::fs::write(&tombstone, b"{}").unwrap();
        std::fs::write(&other, b"{}").unwrap();
        prune_tombstones(&root, Duration::from_secs(3600));
        assert!(tombstone.exists(), "a fresh tombstone stays");
        std::thread::sleep(Duration::from_millis(20));
        prune_tombstones(&root, Duration::from_millis(1));
        assert!(!tombstone.exists(), "an old tombstone goes");
        assert!(other.exists(), "other files are left alone");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
