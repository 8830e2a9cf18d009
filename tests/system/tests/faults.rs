//! Fault tests (issue 5): SIGKILL every service in turn during 200 mixed executions, restart a
//! private Kafka broker, freeze a private MongoDB for 10 s. Each run checks that every execution
//! ends exactly once with the expected result, that no program ran twice, that no slot leaked,
//! and prints its figures (docs/reliability.md records them).
//!
//! Run: `cargo build --workspace --bins && cargo test -p system-tests --test faults -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stack::api::Api;
use stack::private_infra::{PrivateKafka, PrivateMongo};
use stack::store::Store;
use stack::{Isolation, SERVICES, Stack};

/// The three tests each load both cores; run them one after the other even without
/// `--test-threads=1`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SUBMIT_TIMEOUT: Duration = Duration::from_secs(90);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What one execution runs and how it must end.
#[derive(Clone)]
struct Job {
    body: Value,
    status: &'static str,
    /// `(exit_code, stdout)` of a completed run.
    output: Option<(i64, String)>,
    cancel: bool,
}

/// Every program first appends a line to `runs` in its own writable directory, which outlives
/// the sandbox: more than one line means the executor was started twice.
fn job(i: usize) -> Job {
    let bash =
        |script: String| json!({"lang": "bash", "script": format!("echo run >> runs; {script}")});
    match i % 20 {
        10..=13 => Job {
            body: json!({"lang": "python", "script": format!(
                "open('runs', 'a').write('run\\n')\nprint('py {i}')"
            )}),
            status: "completed",
            output: Some((0, format!("py {i}\n"))),
            cancel: false,
        },
        14 | 15 => Job {
            body: bash(format!("echo no {i}; exit 3")),
            status: "completed",
            output: Some((3, format!("no {i}\n"))),
            cancel: false,
        },
        16 => {
            let mut body = bash("sleep 20".into());
            body["timeout_seconds"] = json!(1);
            Job {
                body,
                status: "timeout",
                output: None,
                cancel: false,
            }
        }
        17 => {
            let mut body = bash("sleep 60".into());
            body["timeout_seconds"] = json!(120);
            Job {
                body,
                status: "cancelled",
                output: None,
                cancel: true,
            }
        }
        _ => Job {
            body: bash(format!("echo ok {i}")),
            status: "completed",
            output: Some((0, format!("ok {i}\n"))),
            cancel: false,
        },
    }
}

/// A stack of the test's own with limits that let 200 executions through in reasonable time and
/// directories kept until the checks read them.
fn isolation(tag: &str) -> Isolation {
    Isolation::new(tag)
        .with("KILN__RATE_LIMIT__ENABLED", "false")
        .with("KILN__LIMITS__GLOBAL_CONCURRENCY", "12")
        .with("KILN__LIMITS__PER_USER_CONCURRENCY", "12")
        .with("KILN__MONITOR__RETENTION_SECONDS", "3600")
}

/// Submits `count` jobs in the background, one every `pace`, each under its own idempotency key
/// (a submission that meets a restarting api is retried and still creates one execution).
/// Cancels are sent a moment after their submission.
struct Submitter {
    submitted: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<Vec<(String, Job)>>,
}

impl Submitter {
    fn start(api: Arc<Api>, count: usize, pace: Duration) -> Self {
        let submitted = Arc::new(AtomicUsize::new(0));
        let counter = submitted.clone();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let handle = tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(count);
            let mut cancels = Vec::new();
            for i in 0..count {
                let job = job(i);
                let id = api
                    .submit_retrying(&job.body, &format!("{run}-{i}"), SUBMIT_TIMEOUT)
                    .await;
                if job.cancel {
                    let (api, id) = (api.clone(), id.clone());
                    cancels.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let path = format!("/api/v1/executions/{id}/cancel");
                        let (status, answer) = api
                            .post_retrying(&path, &json!({}), None, SUBMIT_TIMEOUT)
                            .await;
                        assert_eq!(status, 202, "cancel {id}: {answer}");
                    }));
                }
                jobs.push((id, job));
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(pace).await;
            }
            for cancel in cancels {
                cancel.await.unwrap();
            }
            jobs
        });
        Self { submitted, handle }
    }

    async fn wait_for(&self, count: usize) {
        while self.submitted.load(Ordering::SeqCst) < count {
            assert!(!self.handle.is_finished(), "the submitter stopped early");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until every execution is terminal (reading MongoDB, which may be away for a while).
async fn drain(store: &Store, ids: &[String]) -> Duration {
    let began = Instant::now();
    loop {
        if store.terminal_count(ids).await == Some(ids.len() as u64) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < DRAIN_TIMEOUT,
            "not all {} executions finished: {:?} terminal",
            ids.len(),
            store.terminal_count(ids).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After a fault ended: how long until the next execution finishes, i.e. until the pipeline
/// flows again; `None` when all `expected` had finished already.
async fn next_result(store: &Store, expected: usize) -> Option<Duration> {
    let began = Instant::now();
    let before = loop {
        if let Some(n) = store.terminal_total().await {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if before >= expected as u64 {
        return None;
    }
    loop {
        if store.terminal_total().await.is_some_and(|n| n > before) {
            return Some(began.elapsed());
        }
        assert!(
            began.elapsed() < DRAIN_TIMEOUT,
            "nothing finished after the fault"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Default)]
struct Figures {
    executions: usize,
    lost: usize,
    wrong: usize,
    duplicated_results: usize,
    duplicated_runs: usize,
    duplicated_started_events: usize,
    leaked_slots: usize,
}

/// The exactly-once checks shared by every fault test. Panics with the details of any violation
/// after printing the figures.
async fn check(stack: &Stack, store: &Store, jobs: &[(String, Job)]) -> Figures {
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    let mut problems = Vec::new();
    let mut figures = Figures {
        executions: jobs.len(),
        ..Figures::default()
    };

    let executions = store.executions(&ids).await;
    for (id, job) in jobs {
        let Some(doc) = executions.get(id) else {
            figures.lost += 1;
            problems.push(format!("{id}: no execution"));
            continue;
        };
        let status = doc.get_str("status").unwrap_or_default();
        let output = doc
            .get_i64("exit_code")
            .ok()
            .or_else(|| doc.get_i32("exit_code").ok().map(i64::from))
            .zip(doc.get_str("stdout").ok().map(str::to_owned));
        let expected_output = job.output.as_ref().map(|(c, s)| (*c, s.clone()));
        if status != job.status || (job.output.is_some() && output != expected_output) {
            figures.wrong += 1;
            problems.push(format!(
                "{id}: {status} {output:?}, expected {} {expected_output:?}",
                job.status
            ));
        }
    }

    // Exactly one stored result per execution, as the event store saw it: wait until each has
    // one, then a little longer for a late duplicate.
    let began = Instant::now();
    let mut stored = store.events_per_execution("result_stored").await;
    while ids.iter().any(|id| !stored.contains_key(id)) && began.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stored = store.events_per_execution("result_stored").await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = store.events_per_execution("result_stored").await;
    let started = store.events_per_execution("execution_started").await;
    for id in &ids {
        match stored.get(id).copied().unwrap_or(0) {
            1 => {}
            0 => {
                figures.lost += 1;
                problems.push(format!("{id}: no result_stored"));
            }
            n => {
                figures.duplicated_results += 1;
                problems.push(format!("{id}: {n} result_stored"));
            }
        }
        let starts = started.get(id).copied().unwrap_or(0);
        if starts > 1 {
            figures.duplicated_started_events += 1;
            problems.push(format!("{id}: {starts} execution_started"));
        }
    }

    // No program started twice (see `job`).
    let work_dir = PathBuf::from(stack.isolation.value("KILN__RUNTIME__WORK_DIR").unwrap());
    for (id, job) in jobs {
        let runs = std::fs::read_to_string(work_dir.join(id).join("work/runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if runs > 1 {
            figures.duplicated_runs += 1;
            problems.push(format!("{id}: the program ran {runs} times"));
        }
        if runs == 0 && !job.cancel {
            problems.push(format!("{id}: the program never ran"));
        }
    }

    // No slot leaked: every saga ended.
    let unfinished = store.unfinished_sagas().await;
    figures.leaked_slots = unfinished.len();
    for saga in &unfinished {
        problems.push(format!("saga left holding a slot: {saga}"));
    }

    println!("figures: {figures:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    figures
}

/// The sum of every sample of the counter `name` that `service` serves on `/metrics`.
async fn counter(stack: &Stack, service: &str, name: &str) -> f64 {
    stack
        .metrics(service)
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many messages the services dead-lettered.
async fn dead_lettered(stack: &Stack) -> f64 {
    let mut total = 0.0;
    for service in SERVICES {
        total += counter(stack, service, "kiln_kafka_dead_lettered_total").await;
    }
    total
}

/// Waits until a restarted worker works again: its fresh counters show a message handled or
/// published (pod-monitor only publishes: it watches the executors' directories). The time
/// from `killed_at` is the service's real recovery, consumer-group rejoin included.
async fn working_again(stack: &Stack, service: &str, killed_at: Instant) -> Duration {
    loop {
        let consumed = counter(stack, service, "kiln_kafka_messages_consumed_total").await;
        let published = counter(stack, service, "kiln_kafka_messages_published_total").await;
        if consumed + published > 0.0 {
            return killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(90),
            "{service} did nothing after its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_service_in_turn_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    const EXECUTIONS: usize = 200;
    let mut stack = Stack::start(isolation("faults-kills")).await;
    let store = Store::open(&stack.isolation).await;
    let api = Arc::new(Api::login(&stack.api(""), "user", "user123").await);
    let began = Instant::now();
    let submitter = Submitter::start(api.clone(), EXECUTIONS, Duration::from_millis(200));
    let mut kills = 0;
    let step = EXECUTIONS / (SERVICES.len() + 1);
    for (n, service) in SERVICES.iter().enumerate() {
        submitter.wait_for(step * (n + 1)).await;
        let killed_at = Instant::now();
        let ready = stack.kill_and_restart(service).await;
        kills += 1;
        // The dead-letter consumer has no traffic here, and the api serves HTTP: ready is
        // recovered for them.
        if matches!(*service, "api" | "dlq-processor") {
            println!("killed {service}: serving again after {ready:?}");
        } else {
            let working = working_again(&stack, service, killed_at).await;
            println!("killed {service}: ready after {ready:?}, working again after {working:?}");
        }
    }
    let jobs = submitter.handle.await.unwrap();
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    let drained = drain(&store, &ids).await;
    println!(
        "{EXECUTIONS} executions, {kills} kills, all terminal {:?} after the last submission, {:?} in all",
        drained,
        began.elapsed()
    );
    let figures = check(&stack, &store, &jobs).await;
    assert_eq!(figures.executions, EXECUTIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_restart_mid_run_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const EXECUTIONS: usize = 60;
    let mut kafka = PrivateKafka::start().await;
    let stack = Stack::start(
        isolation("faults-kafka").with("KILN__KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap()),
    )
    .await;
    let store = Store::open(&stack.isolation).await;
    let api = Arc::new(Api::login(&stack.api(""), "user", "user123").await);
    let submitter = Submitter::start(api.clone(), EXECUTIONS, Duration::from_millis(100));
    submitter.wait_for(EXECUTIONS / 3).await;
    let restarted_at = Instant::now();
    let down = kafka.restart().await;
    let flowing = next_result(&store, EXECUTIONS).await;
    println!("kafka restarted: away for {down:?}, next result {flowing:?} after it was back");
    let jobs = submitter.handle.await.unwrap();
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    drain(&store, &ids).await;
    println!(
        "{EXECUTIONS} executions, 1 broker restart, all terminal {:?} after the restart began",
        restarted_at.elapsed()
    );
    check(&stack, &store, &jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_unreachable_for_ten_seconds_loses_nothing_and_dead_letters_nothing() {
    let _serial = SERIAL.lock().await;
    const EXECUTIONS: usize = 90;
    const OUTAGE: Duration = Duration::from_secs(10);
    let mut mongo = PrivateMongo::start().await;
    let stack = Stack::start(isolation("faults-mongo").with("KILN__MONGO__URI", mongo.uri())).await;
    let store = Store::open(&stack.isolation).await;
    let api = Arc::new(Api::login(&stack.api(""), "user", "user123").await);
    let began = Instant::now();
    let submitter = Submitter::start(api.clone(), EXECUTIONS, Duration::from_millis(100));
    // First the server hangs (requests time out), then it is gone (connections are refused).
    submitter.wait_for(EXECUTIONS / 3).await;
    mongo.freeze_for(OUTAGE).await;
    let flowing = next_result(&store, EXECUTIONS).await;
    println!("mongo frozen for {OUTAGE:?}, next result {flowing:?} after it thawed");
    submitter.wait_for(2 * EXECUTIONS / 3).await;
    let down = mongo.stop_for(OUTAGE).await;
    let resumed = Instant::now();
    let flowing = next_result(&store, EXECUTIONS).await;
    println!("mongo stopped: away for {down:?}, next result {flowing:?} after it was back");
    let jobs = submitter.handle.await.unwrap();
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.clone()).collect();
    drain(&store, &ids).await;
    println!(
        "{EXECUTIONS} executions, 2 outages of {OUTAGE:?}, all terminal {:?} after the second ended, {:?} in all",
        resumed.elapsed(),
        began.elapsed()
    );
    check(&stack, &store, &jobs).await;
    let dead = dead_lettered(&stack).await;
    let parked = store.count("dlq_messages").await;
    println!("dead-lettered: {dead} (metrics), {parked} (dlq_messages)");
    assert_eq!(dead, 0.0, "a transient outage dead-lettered messages");
    assert_eq!(parked, 0, "a transient outage dead-lettered messages");
}
