//! Event history and replay through the running services: an execution's stored events, a dry
//! run, a replay to a session topic, and a replay to the original topics that the workers
//! acknowledge without acting (no second sandbox, no second result).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stack::api::Api;
use stack::{Isolation, Stack};

const LONG: Duration = Duration::from_secs(60);

fn event_types(history: &Value) -> Vec<String> {
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

/// The execution's stored events once `result_stored` is among them.
async fn stored_history(api: &Api, id: &str) -> Value {
    // The store's consumer lets fetches fill for up to 100 ms and takes its partitions in no
    // order across topics, so the run's events arrive over a moment: wait until every kind of
    // event a run always has is there and nothing new came for a while.
    const EVERY_RUN: [&str; 4] = [
        "execution_requested",
        "create_pod_command",
        "pod_created",
        "result_stored",
    ];
    const SETTLED: Duration = Duration::from_secs(1);
    let deadline = Instant::now() + LONG;
    let mut seen: Option<(usize, Instant)> = None;
    loop {
        let (status, history) = api
            .get(&format!("/api/v1/executions/{id}/events/history?limit=100"))
            .await;
        assert_eq!(status, 200, "{history}");
        let types = event_types(&history);
        if EVERY_RUN.iter().all(|t| types.iter().any(|s| s == t)) {
            match seen {
                Some((count, since)) if count == types.len() => {
                    if since.elapsed() >= SETTLED {
                        return history;
                    }
                }
                _ => seen = Some((types.len(), Instant::now())),
            }
        }
        assert!(
            Instant::now() < deadline,
            "history never complete: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a session to its end through the admin API; returns the finished session.
async fn replay(admin: &Api, body: Value) -> Value {
    let (status, created) = admin.post("/api/v1/admin/replay", body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, started) = admin
        .post(&format!("/api/v1/admin/replay/{id}/start"), json!({}))
        .await;
    assert_eq!(status, 200, "{started}");
    let deadline = Instant::now() + LONG;
    loop {
        let (_, session) = admin.get(&format!("/api/v1/admin/replay/{id}")).await;
        match session["state"].as_str().unwrap() {
            "completed" => return session,
            "running" => {}
            other => panic!("session ended {other}: {session}"),
        }
        assert!(
            Instant::now() < deadline,
            "session never completed: {session}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many messages of `topic_suffix` the service consumed with `outcome`, from its metrics.
async fn consumed(stack: &Stack, service: &str, topic_suffix: &str, outcome: &str) -> u64 {
    let metrics = stack
        .client
        .get(format!("http://127.0.0.1:{}/metrics", stack.port(service)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("kiln_kafka_messages_consumed_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter(|l| l.contains(&format!("{topic_suffix}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_is_replayed_without_running_it_again() {
    let stack = Stack::start(Isolation::new("replay")).await;
    let user = Api::login(&stack.api(""), "user", "user123").await;
    let admin = Api::login(&stack.api(""), "admin", "admin123").await;
    let execution = user
        .run(json!({ "lang": "python", "script": "print('once')" }))
        .await;
    assert_eq!(execution["status"], "completed", "{execution}");
    let id = execution["execution_id"].as_str().unwrap().to_owned();

    // The owner reads the stored history; another user cannot see it.
    let history = stored_history(&user, &id).await;
    let types = event_types(&history);
    for expected in ["execution_requested", "create_pod_command", "pod_created"] {
        assert!(types.iter().any(|t| t == expected), "{types:?}");
    }
    let stranger = Api::register(&stack.api(""), "stranger").await;
    let (status, _) = stranger
        .get(&format!("/api/v1/executions/{id}/events/history"))
        .await;
    assert_eq!(status, 404);

    let filter = json!({ "execution_ids": [id] });
    let (status, dry) = admin
        .post(
            "/api/v1/admin/replay",
            json!({ "filter": filter, "dry_run": true, "preview_limit": 3 }),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    let total = dry["count"].as_u64().unwrap();
    assert!(total >= types.len() as u64, "{dry}");
    assert_eq!(dry["preview"].as_array().unwrap().len(), 3);
    assert_eq!(
        dry["preview"][0]["event_id"],
        history["items"][0]["event_id"]
    );

    let to_topic = replay(
        &admin,
        json!({ "filter": filter, "target": "session_topic", "speed": 0 }),
    )
    .await;
    assert_eq!(to_topic["progress"]["replayed"].as_u64(), Some(total));

    let to_originals = replay(
        &admin,
        json!({ "filter": filter, "target": "original_topics", "speed": 0 }),
    )
    .await;
    assert_eq!(to_originals["progress"]["replayed"].as_u64(), Some(total));
    // Wait until k8s-worker and the saga have consumed the copies; they skip them.
    let deadline = Instant::now() + LONG;
    while consumed(&stack, "k8s-worker", "create_pod_command", "replay_skipped").await < 1
        || consumed(
            &stack,
            "saga-orchestrator",
            "execution_requested",
            "replay_skipped",
        )
        .await
            < 1
    {
        assert!(
            Instant::now() < deadline,
            "the workers never saw the copies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        consumed(&stack, "k8s-worker", "create_pod_command", "ok").await,
        1,
        "k8s-worker handled a create command twice"
    );
    // No second executor, no second result, and the event store kept no copies: every event
    // type of the run is stored once (later events of the saga may have been added meanwhile).
    let after = event_types(&stored_history(&user, &id).await);
    for once in [
        "execution_requested",
        "create_pod_command",
        "pod_created",
        "result_stored",
    ] {
        assert_eq!(
            after.iter().filter(|t| *t == once).count(),
            1,
            "{once} in {after:?}"
        );
    }
    let (_, again) = user.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(again["status"], "completed");
    assert_eq!(again["stdout"], execution["stdout"]);
}
