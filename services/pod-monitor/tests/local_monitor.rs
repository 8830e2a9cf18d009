//! pod-monitor against the real Kafka broker, with executor directories written the way the
//! runner and k8s-worker write them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod observer;

use observer::{Events, Observer, observe};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kiln_runner_protocol::{
    CANCELLED_FILE, RESULT_FILE, RUNNER_PID_FILE, RunnerResult, SPEC_FILE, STARTED_FILE,
    STDERR_FILE, STDOUT_FILE, WORK_DIR,
};
use pod_monitor::Monitor;
use shared::config::MonitorConfig;
use shared::events::{ErrorType, Event, EventPayload, EventType, OutputStream};
use shared::executions::{EXECUTOR_META_FILE, ExecutorMeta};
use shared::kafka::EventProducer;
use shared::testing::{test_config, wait_until};
use uuid::Uuid;

struct Harness {
    monitor_config: MonitorConfig,
    root: PathBuf,
    producer: EventProducer,
    events: Events,
    runners: Mutex<Vec<std::process::Child>>,
    _observer: Observer,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for runner in self.runners.lock().unwrap().iter_mut() {
            if runner.kill().is_ok() {
                runner.wait().ok();
            }
        }
    }
}

async fn harness() -> Harness {
    let observer = observe().await;
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("monitor-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&root).unwrap();
    Harness {
        monitor_config: test_config().unwrap().monitor,
        root,
        producer: observer.producer.clone(),
        events: observer.events.clone(),
        runners: Mutex::default(),
        _observer: observer,
    }
}

impl Harness {
    fn monitor(&self) -> Monitor {
        Monitor::new(
            self.root.clone(),
            self.producer.clone(),
            self.monitor_config.clone(),
            "pod-monitor",
        )
    }

    /// An executor directory as k8s-worker leaves it.
    fn executor(&self) -> (String, PathBuf, ExecutorMeta) {
        self.executor_prepared_in(&self.root)
    }

    /// An executor prepared in `parent` and, if that is not the work dir, renamed into it (as
    /// k8s-worker does).
    fn executor_prepared_in(&self, parent: &Path) -> (String, PathBuf, ExecutorMeta) {
        let id = Uuid::now_v7().to_string();
        let dir = parent.join(&id);
        std::fs::create_dir_all(dir.join(WORK_DIR)).unwrap();
        let meta = ExecutorMeta {
            execution_id: id.clone(),
            user_id: Some("user-7".into()),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            timeout_seconds: 3,
            traceparent: None,
        };
        std::fs::write(
            dir.join(EXECUTOR_META_FILE),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(SPEC_FILE), b"{}").unwrap();
        let dir = if parent == self.root {
            dir
        } else {
            std::fs::rename(&dir, self.root.join(&id)).unwrap();
            self.root.join(&id)
        };
        // A stand-in for the runner: alive, with the state directory on its command line.
        let runner = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 600"])
            .arg(&dir)
            .spawn()
            .unwrap();
        std::fs::write(dir.join(RUNNER_PID_FILE), runner.id().to_string()).unwrap();
        self.runners.lock().unwrap().push(runner);
        (id, dir, meta)
    }
}

fn append(dir: &Path, name: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap();
    file.write_all(bytes).unwrap();
}

fn finish(dir: &Path, result: &RunnerResult) {
    std::fs::write(dir.join(RESULT_FILE), serde_json::to_vec(result).unwrap()).unwrap();
}

fn exited(code: i32) -> RunnerResult {
    RunnerResult {
        exit_code: Some(code),
        wall_ms: 5,
        cpu_ms: 1,
        peak_memory_kb: 900,
        ..RunnerResult::default()
    }
}

fn outputs(events: &[Event], stream: OutputStream) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ExecutionOutput(o) if o.stream == stream => Some((o.seq, o.data.clone())),
            _ => None,
        })
        .collect()
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_becomes_running_live_output_and_one_terminal_event() {
    let h = harness().await;
    let mut monitor = h.monitor();
    let (id, dir, meta) = h.executor();
    monitor.pass().await;
    assert!(
        h.events.of(&id).is_empty(),
        "nothing happens before the program starts"
    );

    std::fs::write(dir.join(STARTED_FILE), b"{}").unwrap();
    // A multi-byte character split across two writes must reach consumers whole.
    let text = "héllo 🌍 漢字\n";
    let bytes = text.as_bytes();
    append(&dir, STDOUT_FILE, &bytes[..8]);
    monitor.pass().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    append(&dir, STDOUT_FILE, &bytes[8..]);
    append(&dir, STDERR_FILE, b"warning\n");
    monitor.pass().await;
    assert!(
        wait_until(WAIT, || h.events.count(&id, EventType::ExecutionOutput)
            >= 2)
        .await
    );
    finish(&dir, &exited(3));
    monitor.pass().await;
    monitor.pass().await;
    assert!(wait_until(WAIT, || h.events.count(&id, EventType::PodTerminated) == 1).await);

    let events = h.events.of(&id);
    for t in [
        EventType::PodRunning,
        EventType::ExecutionStarted,
        EventType::ExecutionCompleted,
    ] {
        assert_eq!(
            events.iter().filter(|e| e.event_type() == t).count(),
            1,
            "{t:?}"
        );
    }
    let stdout: String = outputs(&events, OutputStream::Stdout)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(stdout, text);
    assert_eq!(outputs(&events, OutputStream::Stderr)[0].1, "warning\n");
    let mut seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ExecutionOutput(o) => Some(o.seq),
            _ => None,
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free sequence"
    );
    let completed = events.iter().find_map(|e| match &e.payload {
        EventPayload::ExecutionCompleted(c) => Some(c.outcome.clone()),
        _ => None,
    });
    let completed = completed.unwrap();
    assert_eq!(completed.exit_code, Some(3));
    assert_eq!(completed.stdout, text);
    assert_eq!(completed.resource_usage.peak_memory_kb, 900);
    for e in &events {
        assert_eq!(e.correlation_id, meta.correlation_id);
        assert_eq!(e.causation_id, Some(meta.causation_id));
        assert_eq!(e.metadata.user_id.as_deref(), Some("user-7"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_monitor_acts_on_what_the_kernel_reports_without_waiting_for_a_pass() {
    let mut h = harness().await;
    // Passes an hour apart: after the first, only inotify can make anything happen.
    h.monitor_config.poll_interval_ms = 3_600_000;
    h.monitor_config.output_flush_interval_ms = 3_600_000;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(h.monitor().run(shutdown.clone()));
    // Let the first pass (an empty work dir) happen before the executor exists.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let staging = h.root.with_extension("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let (id, dir, _) = h.executor_prepared_in(&staging);
    std::fs::write(dir.join(STARTED_FILE), b"{}").unwrap();
    assert!(wait_until(WAIT, || h.events.count(&id, EventType::PodRunning) == 1).await);
    append(&dir, STDOUT_FILE, b"out\n");
    finish(&dir, &exited(0));
    assert!(wait_until(WAIT, || h.events.count(&id, EventType::PodTerminated) == 1).await);
    let events = h.events.of(&id);
    assert_eq!(
        outputs(&events, OutputStream::Stdout),
        vec![(0, "out\n".to_owned())]
    );
    assert_eq!(h.events.count(&id, EventType::ExecutionCompleted), 1);

    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_monitor_resumes_without_repeating_or_skipping() {
    let h = harness().await;
    let (id, dir, _) = h.executor();
    std::fs::write(dir.join(STARTED_FILE), b"{}").unwrap();
    append(&dir, STDOUT_FILE, b"first\n");
    let mut first = h.monitor();
    first.pass().await;
    drop(first); // "restart"
    append(&dir, STDOUT_FILE, b"second\n");
    finish(&dir, &exited(0));
    let mut second = h.monitor();
    second.pass().await;
    second.pass().await;
    assert!(wait_until(WAIT, || h.events.count(&id, EventType::PodTerminated) == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.events.of(&id);
    let out = outputs(&events, OutputStream::Stdout);
    // How the bytes are cut into chunks depends on when each pass flushed (coalescing); what a
    // restart must keep is the sequence: numbered from 0 without gaps or repeats, every byte once.
    let seqs: Vec<u64> = out.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "{out:?}");
    let text: String = out.iter().map(|(_, data)| data.as_str()).collect();
    assert_eq!(text, "first\nsecond\n");
    assert_eq!(h.events.count(&id, EventType::PodRunning), 1);
    assert_eq!(h.events.count(&id, EventType::ExecutionCompleted), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_keep_output_and_cancelled_executors_get_no_second_terminal_event() {
    let h = harness().await;
    let mut monitor = h.monitor();
    let (timed_out, dir, _) = h.executor();
    std::fs::write(dir.join(STARTED_FILE), b"{}").unwrap();
    append(&dir, STDOUT_FILE, b"tick\n");
    finish(
        &dir,
        &RunnerResult {
            timed_out: true,
            signal: Some(9),
            ..RunnerResult::default()
        },
    );
    let (cancelled, dir2, _) = h.executor();
    std::fs::write(dir2.join(STARTED_FILE), b"{}").unwrap();
    std::fs::write(dir2.join(CANCELLED_FILE), b"").unwrap();
    finish(
        &dir2,
        &RunnerResult {
            signal: Some(9),
            ..RunnerResult::default()
        },
    );
    monitor.pass().await;
    assert!(
        wait_until(WAIT, || h
            .events
            .count(&timed_out, EventType::PodTerminated)
            == 1
            && h.events.count(&cancelled, EventType::PodTerminated) == 1)
        .await
    );
    let timeout = h
        .events
        .of(&timed_out)
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::ExecutionTimeout(t) => Some(t),
            _ => None,
        });
    let timeout = timeout.expect("execution_timeout published");
    assert_eq!(timeout.timeout_seconds, 3);
    assert_eq!(timeout.outcome.stdout, "tick\n");
    let terminal = [
        EventType::ExecutionCompleted,
        EventType::ExecutionFailed,
        EventType::ExecutionTimeout,
    ];
    assert!(terminal.iter().all(|t| h.events.count(&cancelled, *t) == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_dies_without_a_result_ends_as_executor_lost() {
    let h = harness().await;
    let mut monitor = h.monitor();
    let (id, dir, _) = h.executor();
    std::fs::write(dir.join(RUNNER_PID_FILE), "999999999").unwrap();
    monitor.pass().await;
    assert_eq!(
        h.events.count(&id, EventType::ExecutionFailed),
        0,
        "one sighting is not enough"
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    monitor.pass().await;
    assert!(
        wait_until(WAIT, || h.events.count(&id, EventType::ExecutionFailed)
            == 1)
        .await
    );
    let failed: HashMap<_, _> = h
        .events
        .of(&id)
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::ExecutionFailed(f) => Some((e.aggregate_id, f.error_type)),
            _ => None,
        })
        .collect();
    assert_eq!(failed[&id], ErrorType::ExecutorLost);
}
