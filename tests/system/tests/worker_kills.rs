//! SIGKILL each worker in turn during a run of executions, restart it, and check that every
//! execution still ends exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::time::Duration;

use serde_json::json;
use stack::api::Api;
use stack::store::Store;
use stack::{Isolation, Stack};

const PER_ROUND: usize = 10;
const WORKERS: [&str; 5] = [
    "saga-orchestrator",
    "k8s-worker",
    "pod-monitor",
    "result-processor",
    "event-replay",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_worker_mid_run_ends_every_execution_exactly_once() {
    let isolation = Isolation::new("kills").with("KILN__RATE_LIMIT__ENABLED", "false");
    let mut stack = Stack::start(isolation).await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    let mut ids = Vec::new();
    for worker in WORKERS {
        for i in 0..PER_ROUND {
            ids.push(
                api.submit(json!({"lang": "bash", "script": "echo ok"}))
                    .await,
            );
            if i == PER_ROUND / 2 {
                stack.kill_and_restart(worker).await;
            }
        }
    }
    for id in &ids {
        let done = api.wait_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["stdout"], "ok\n", "{done}");
    }

    // Exactly one stored result per execution, counted in the event store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_execution = Store::open(&stack.isolation)
        .await
        .events_per_execution("result_stored")
        .await;
    for id in &ids {
        assert_eq!(per_execution.get(id), Some(&1), "result_stored of {id}");
    }
}
