//! One run: spawn, stream, enforce the deadline and cancellation, collect the result.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_runner_protocol::{RunnerResult, RunnerSpec, Started, StatePaths};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::cgroup::{CgroupError, Cgroups};
use crate::pump::{self, PumpOutcome};

/// How often the wait loop looks for the `cancelled` file.
const CANCEL_POLL: Duration = Duration::from_millis(25);
/// After the program ended, how long its output pipes may take to reach end of file.
const PUMP_DRAIN: Duration = Duration::from_secs(2);
/// SIGKILL rounds for processes left in the cgroup before giving up on removing it.
const REAP_ROUNDS: u32 = 100;

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid spec: {source}")]
    Spec {
        path: String,
        source: serde_json::Error,
    },
    #[error("the spec's argv is empty")]
    EmptyArgv,
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("setting up cgroups: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("spawning {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

fn open_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Open {
        path: path.display().to_string(),
        source,
    }
}

/// Runs the spec in `paths` and describes how it ended; never panics, and a failure of the runner
/// itself is reported in `error`.
pub(crate) fn run(paths: &StatePaths) -> RunnerResult {
    let mut result = RunnerResult::default();
    if let Err(error) = execute(paths, &mut result) {
        result.error = Some(error.to_string());
    }
    result.finished_at = Some(Utc::now());
    result
}

fn read_spec(paths: &StatePaths) -> Result<RunnerSpec, RunError> {
    let path = paths.spec();
    let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| RunError::Spec {
        path: path.display().to_string(),
        source,
    })
}

fn execute(paths: &StatePaths, result: &mut RunnerResult) -> Result<(), RunError> {
    let spec = read_spec(paths)?;
    let (program, args) = spec.argv.split_first().ok_or(RunError::EmptyArgv)?;
    let stdout_log = File::create(paths.stdout()).map_err(open_err(&paths.stdout()))?;
    let stderr_log = File::create(paths.stderr()).map_err(open_err(&paths.stderr()))?;
    let stdin = match &spec.stdin_path {
        Some(path) => Stdio::from(File::open(path).map_err(open_err(path))?),
        None => Stdio::null(),
    };

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so one killpg reaches the program and whatever it forked.
        .process_group(0);
    let mut watcher = spec.agent.as_ref().map(|watch| {
        // Secrets reach the runner's own environment, never its state directory.
        for name in &watch.pass_env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        crate::agent::Watcher::start(watch, &spec.cwd)
    });
    if let Some(run_as) = spec.run_as {
        // std also drops supplementary groups when a root parent sets a uid.
        command.uid(run_as.uid).gid(run_as.gid);
    }

    let cgroups = match &spec.cgroup {
        Some(cgroup) => Some(Cgroups::enter(cgroup)?),
        None => None,
    };
    let spawned = command.spawn();
    let begin = Instant::now();
    if let Some(Err(error)) = cgroups.as_ref().map(Cgroups::leave) {
        eprintln!("kiln-runner: {error}");
    }
    let child = match spawned {
        Ok(child) => child,
        Err(source) => {
            if let Some(cgroups) = cgroups {
                remove_cgroups(cgroups);
            }
            return Err(RunError::Spawn {
                program: program.clone(),
                source,
            });
        }
    };
    let started_at = Utc::now();
    result.started_at = Some(started_at);
    let pid = child.id();

    let logs = [stdout_log, stderr_log];
    let supervised = supervise(
        paths,
        &spec,
        child,
        logs,
        cgroups.as_ref(),
        begin,
        watcher.as_mut(),
    );
    result.wall_ms = millis(begin.elapsed());
    // Whatever happened, nothing of the program may outlive the run: stragglers that left the
    // process group are still in the cgroup.
    kill_everything(pid, cgroups.as_ref());
    let drain_until = Instant::now() + PUMP_DRAIN;
    let mut pending = supervised
        .streams
        .len()
        .saturating_sub(supervised.pumps_done);
    while pending > 0 {
        // A pump may wait on the agent parser's tap: keep parsing while draining.
        if let Some(watcher) = watcher.as_mut() {
            watcher.poll();
        }
        let left = drain_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match supervised.events.recv_timeout(left.min(CANCEL_POLL)) {
            Ok(Event::PumpDone) => pending -= 1,
            Ok(Event::Exited(_)) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for (name, handle) in supervised.streams {
        // Once every stream reported its end, each thread is returning: joining cannot block.
        if pending > 0 && !handle.is_finished() {
            eprintln!("kiln-runner: {name} still open after the program ended; abandoning it");
            continue;
        }
        match handle.join() {
            Ok(outcome) => {
                let truncated = match name {
                    "stdout" => &mut result.stdout_truncated,
                    _ => &mut result.stderr_truncated,
                };
                *truncated = outcome.truncated;
                if let Some(error) = outcome.error {
                    result.error.get_or_insert(error);
                }
            }
            Err(_) => {
                result
                    .error
                    .get_or_insert(format!("the {name} thread panicked"));
            }
        }
    }

    match supervised.status {
        Ok(status) => {
            result.exit_code = status.code();
            result.signal = status.signal();
        }
        Err(error) => {
            result
                .error
                .get_or_insert(format!("waiting for the program: {error}"));
        }
    }
    if let Some(watcher) = watcher {
        result.agent = Some(watcher.finish(&spec.cwd));
    }
    result.timed_out = supervised.stop == Some(Reason::Deadline);
    result.cancelled = supervised.stop == Some(Reason::Cancelled);
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(usage) => {
            let cpu = usage.user_time() + usage.system_time();
            let ms = cpu.tv_sec() * 1000 + cpu.tv_usec() / 1000;
            result.cpu_ms = u64::try_from(ms).unwrap_or(0);
            result.peak_memory_kb = u64::try_from(usage.max_rss()).unwrap_or(0);
        }
        Err(error) => eprintln!("kiln-runner: getrusage: {error}"),
    }
    if let Some(cgroups) = cgroups {
        let stats = cgroups.stats();
        if let Some(peak) = stats.peak_memory_kb {
            result.peak_memory_kb = peak;
        }
        if let Some(cpu_ms) = stats.cpu_ms {
            result.cpu_ms = cpu_ms;
        }
        // The OOM killer's SIGKILL is what bubblewrap-like wrappers report as exit code 137.
        let killed = result.signal == Some(9) || result.exit_code == Some(128 + 9);
        result.oom_killed = stats.oom_kills > 0 || (stats.memory_failcnt > 0 && killed);
        result.pids_limited = stats.pids_limited;
        remove_cgroups(cgroups);
    }
    Ok(())
}

type Pipe = Box<dyn Read + Send>;

enum Event {
    PumpDone,
    Exited(std::io::Result<ExitStatus>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Deadline,
    Cancelled,
    /// An agent spent its token or cost budget.
    Budget,
}

struct Supervised {
    status: std::io::Result<ExitStatus>,
    stop: Option<Reason>,
    streams: Vec<(&'static str, JoinHandle<PumpOutcome>)>,
    pumps_done: usize,
    events: mpsc::Receiver<Event>,
}

/// Streams the output and waits for the program, stopping it at the deadline or on cancellation.
fn supervise(
    paths: &StatePaths,
    spec: &RunnerSpec,
    mut child: Child,
    logs: [File; 2],
    cgroups: Option<&Cgroups>,
    begin: Instant,
    mut watcher: Option<&mut crate::agent::Watcher>,
) -> Supervised {
    let pid = child.id();
    let (tx, events) = mpsc::channel();
    let mut streams = Vec::new();
    let mut setup_error: Option<std::io::Error> = None;
    let limit = spec.output_limit_bytes;
    let [stdout_log, stderr_log] = logs;
    let pipes: [(&'static str, Option<Pipe>, File); 2] = [
        (
            "stdout",
            child.stdout.take().map(|p| Box::new(p) as _),
            stdout_log,
        ),
        (
            "stderr",
            child.stderr.take().map(|p| Box::new(p) as _),
            stderr_log,
        ),
    ];
    for (name, pipe, log) in pipes {
        let Some(pipe) = pipe else { continue };
        let tap = match (name, watcher.as_deref()) {
            ("stdout", Some(watcher)) => Some(watcher.tap()),
            _ => None,
        };
        match pump::spawn(name, pipe, log, limit, tap, tx.clone(), Event::PumpDone) {
            Ok(handle) => streams.push((name, handle)),
            Err(error) => {
                setup_error
                    .get_or_insert(std::io::Error::other(format!("streaming {name}: {error}")));
            }
        }
    }
    let waiter = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("wait".into())
        .spawn(move || {
            if waiter.send(Event::Exited(child.wait())).is_err() {
                // The supervisor is gone; the runner is exiting anyway.
            }
        });
    if let Err(error) = spawned {
        setup_error.get_or_insert(error);
    }
    drop(tx);
    if setup_error.is_some() {
        // Without its output threads or its waiter the run cannot be observed: end it now.
        kill_everything(pid, cgroups);
    }
    let started = Started {
        started_at: Utc::now(),
    };
    if let Err(error) = crate::write_atomically(&paths.started(), &started) {
        eprintln!("kiln-runner: writing the started marker: {error}");
    }

    let deadline = begin + Duration::from_millis(spec.timeout_ms);
    let mut stop: Option<(Reason, Instant)> = None;
    let mut pumps_done = 0;
    let exited = loop {
        let now = Instant::now();
        if stop.is_none() {
            let reason = if now >= deadline {
                Some(Reason::Deadline)
            } else if paths.cancelled().exists() {
                Some(Reason::Cancelled)
            } else if let Some(watcher) = watcher.as_deref_mut()
                && watcher.poll().is_some()
            {
                Some(Reason::Budget)
            } else {
                None
            };
            if let Some(reason) = reason {
                signal_group(pid, Signal::SIGTERM);
                stop = Some((reason, now + Duration::from_millis(spec.kill_grace_ms)));
            }
        }
        if let Some((_, kill_at)) = stop
            && now >= kill_at
        {
            kill_everything(pid, cgroups);
        }
        let next = match stop {
            Some((_, kill_at)) if kill_at > now => kill_at - now,
            Some(_) => CANCEL_POLL,
            None => deadline.saturating_duration_since(now),
        };
        match events.recv_timeout(next.clamp(Duration::from_millis(1), CANCEL_POLL)) {
            Ok(Event::Exited(exited)) => break exited,
            Ok(Event::PumpDone) => pumps_done += 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                break Err(std::io::Error::other(
                    "the wait thread ended without a status",
                ));
            }
        }
    };
    Supervised {
        status: match setup_error {
            Some(error) => Err(error),
            None => exited,
        },
        stop: stop.map(|(reason, _)| reason),
        streams,
        pumps_done,
        events,
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH just means the group is already gone.
        if killpg(Pid::from_raw(pid), signal).is_err() {}
    }
}

/// SIGKILLs the program's process group and every process left in its cgroups.
fn kill_everything(pid: u32, cgroups: Option<&Cgroups>) {
    signal_group(pid, Signal::SIGKILL);
    let Some(cgroups) = cgroups else { return };
    for _ in 0..REAP_ROUNDS {
        let remaining = cgroups.remaining_pids();
        if remaining.is_empty() {
            return;
        }
        for pid in remaining {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_err() {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn remove_cgroups(cgroups: Cgroups) {
    if let Err(error) = cgroups.remove() {
        eprintln!("kiln-runner: {error}");
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
