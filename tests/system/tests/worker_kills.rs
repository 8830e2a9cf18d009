//! SIGKILL each worker in turn during a run of executions, restart it, and check that every
//! execution still ends exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde_json::json;
use stack::api::Api;
use stack::{Isolation, Stack, start, wait_ready};

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
    let isolation = Isolation::new("kills");
    let database = isolation
        .env
        .iter()
        .find(|(k, _)| k == "KILN__MONGO__DATABASE")
        .map(|(_, v)| v.clone())
        .unwrap();
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
                let index = stack
                    .services
                    .iter()
                    .position(|s| s.name == worker)
                    .unwrap();
                let mut killed = stack.services.remove(index);
                killed.child.kill().unwrap(); // SIGKILL: no drain, no commit
                killed.child.wait().unwrap();
                let mut restarted = start(worker, &stack.isolation);
                wait_ready(&stack.client, &mut restarted).await;
                stack.services.push(restarted);
            }
        }
    }
    for id in &ids {
        let done = api.wait_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["stdout"], "ok\n", "{done}");
    }

    // Exactly one stored result per execution, counted in the event store.
    let uri = std::env::var("KILN__MONGO__URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let events = client.database(&database).collection::<Document>("events");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: Vec<Document> = events
        .find(doc! { "event_type": "result_stored" })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut per_execution: HashMap<String, usize> = HashMap::new();
    for event in &stored {
        *per_execution
            .entry(event.get_str("aggregate_id").unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &ids {
        assert_eq!(per_execution.get(id), Some(&1), "result_stored of {id}");
    }
}
