//! Executions through the running services: the HTTP API, Kafka, the saga, the local sandbox,
//! pod-monitor and result-processor, all as real processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::time::Duration;

use serde_json::{Value, json};
use stack::api::Api;
use stack::{Isolation, Stack};

async fn stack(tag: &str) -> (Stack, Api) {
    let stack = Stack::start(Isolation::new(tag)).await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    (stack, api)
}

fn stdout(execution: &Value) -> &str {
    execution["stdout"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_in_the_sandbox_with_their_outcomes() {
    let (_stack, api) = stack("outcomes").await;
    let (_, runtimes) = api.get("/api/v1/runtimes").await;
    let offered: Vec<String> = runtimes["languages"]
        .as_array()
        .expect("runtimes list languages")
        .iter()
        .filter_map(|l| l["lang"].as_str().map(str::to_owned))
        .collect();
    for lang in ["python", "node", "bash"] {
        assert!(
            offered.contains(&lang.to_owned()),
            "{lang} offered: {runtimes}"
        );
    }

    let cases = vec![
        (
            "python hello",
            json!({"lang": "python", "script": "print('hello')"}),
        ),
        (
            "node hello",
            json!({"lang": "node", "script": "console.log('hello')"}),
        ),
        (
            "bash hello",
            json!({"lang": "bash", "script": "echo hello"}),
        ),
        (
            "non-zero exit",
            json!({"lang": "bash", "script": "echo before; exit 3"}),
        ),
        (
            "syntax error",
            json!({"lang": "python", "script": "def broken(:\n"}),
        ),
        (
            "stdin",
            json!({"lang": "python", "script": "import sys; print(sys.stdin.read().upper())", "stdin": "shout"}),
        ),
        (
            "utf-8",
            json!({"lang": "python", "script": "print('héllo 🌍 漢字')"}),
        ),
        (
            "timeout",
            json!({"lang": "bash", "script": "echo started; sleep 30", "timeout_seconds": 2}),
        ),
        (
            "network",
            json!({"lang": "python", "script": "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n"}),
        ),
        (
            "flood",
            json!({"lang": "python", "script": "import sys\nfor _ in range(4000):\n    sys.stdout.write('x' * 1024 + '\\n')\n"}),
        ),
        (
            "memory hog",
            json!({"lang": "python", "script": "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"}),
        ),
        (
            "fork bomb",
            json!({"lang": "bash", "script": ":(){ :|:& };:\nsleep 2\necho survived"}),
        ),
    ];
    let ids: Vec<(&str, String)> = {
        let mut ids = Vec::new();
        for (name, body) in &cases {
            ids.push((*name, api.submit(body.clone()).await));
        }
        ids
    };
    let mut results = std::collections::HashMap::new();
    for (name, id) in &ids {
        results.insert(*name, api.wait_terminal(id, Duration::from_secs(90)).await);
    }
    let r = |name: &str| &results[name];

    for name in ["python hello", "node hello", "bash hello"] {
        assert_eq!(r(name)["status"], "completed", "{name}: {}", r(name));
        assert_eq!(stdout(r(name)), "hello\n", "{name}");
        assert_eq!(r(name)["exit_code"], 0);
        assert!(r(name)["resource_usage"]["wall_ms"].as_u64().unwrap() > 0);
    }
    assert_eq!(r("non-zero exit")["status"], "completed");
    assert_eq!(r("non-zero exit")["exit_code"], 3);
    assert_eq!(stdout(r("non-zero exit")), "before\n");
    assert_eq!(r("syntax error")["status"], "completed");
    assert_eq!(r("syntax error")["exit_code"], 1);
    assert!(
        r("syntax error")["stderr"]
            .as_str()
            .unwrap()
            .contains("SyntaxError")
    );
    assert_eq!(stdout(r("stdin")), "SHOUT\n");
    assert_eq!(stdout(r("utf-8")), "héllo 🌍 漢字\n");
    assert_eq!(r("timeout")["status"], "timeout", "{}", r("timeout"));
    assert_eq!(stdout(r("timeout")), "started\n", "partial output kept");
    assert!(
        stdout(r("network")).starts_with("refused"),
        "{}",
        r("network")
    );
    assert_eq!(r("flood")["stdout_truncated"], true, "flood flagged");
    assert!(stdout(r("flood")).len() <= 1024 * 1024 + 4096);
    assert_eq!(r("memory hog")["status"], "failed", "{}", r("memory hog"));
    assert_eq!(r("memory hog")["error_type"], "resource_limit");
    let bomb = r("fork bomb");
    assert!(
        bomb["status"] == "failed" && bomb["error_type"] == "resource_limit"
            || bomb["status"] == "completed"
            || bomb["status"] == "timeout",
        "fork bomb contained with a clear status: {bomb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_ownership_idempotency_and_cancellation() {
    let (stack, api) = stack("control").await;
    let (status, error) = api
        .post("/api/v1/execute", json!({"lang": "cobol", "script": "x"}))
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("unknown_language"))
    );
    let big = "#".repeat(1024 * 1024 + 1);
    let (status, error) = api
        .post("/api/v1/execute", json!({"lang": "bash", "script": big}))
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("script_too_large"))
    );
    let (status, _) = api
        .post(
            "/api/v1/execute",
            json!({"lang": "bash", "script": "echo", "timeout_seconds": 100000}),
        )
        .await;
    assert_eq!(status, 400);

    // Idempotency-Key: the same key returns the same execution.
    let submit = |key: &'static str| {
        api.client
            .post(stack.api("/api/v1/execute"))
            .bearer_auth(&api.token)
            .header("Idempotency-Key", key)
            .json(&json!({"lang": "bash", "script": "echo once"}))
            .send()
    };
    let first: Value = submit("key-1").await.unwrap().json().await.unwrap();
    let second: Value = submit("key-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["execution_id"], second["execution_id"]);
    let done = api
        .wait_terminal(
            first["execution_id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stdout(&done), "once\n");

    // Another user's execution is invisible.
    let other = Api::register(
        &stack.api(""),
        &format!("other{}", &stack.isolation.prefix[3..11]),
    )
    .await;
    let (status, _) = other
        .get(&format!(
            "/api/v1/executions/{}",
            first["execution_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404);

    // Cancel while running: the program is killed and the status is cancelled.
    let running = api.submit(json!({"lang": "bash", "script": "echo go; sleep 20; echo never", "timeout_seconds": 30})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, _) = api
        .post(&format!("/api/v1/executions/{running}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    let cancelled = api.wait_terminal(&running, Duration::from_secs(20)).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(!stdout(&cancelled).contains("never"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_respects_its_cap_and_a_queued_execution_can_be_cancelled() {
    let isolation = Isolation::new("queue")
        .with("KILN__LIMITS__GLOBAL_CONCURRENCY", "2")
        .with("KILN__LIMITS__PER_USER_CONCURRENCY", "2");
    let stack = Stack::start(isolation).await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            api.submit(json!({"lang": "bash", "script": "sleep 1; echo done"}))
                .await,
        );
    }
    let queued = ids[5].clone();
    let (status, _) = api
        .post(&format!("/api/v1/executions/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);

    // Never more than two running at once. Judged on the runs' own times (started_at, and
    // finished_at, the moment the terminal event was made): the status projection lags behind
    // the saga, so polled statuses can briefly show a finished run beside its successor.
    let mut runs = Vec::new();
    for id in &ids[..5] {
        let done = api.wait_terminal(id, Duration::from_secs(60)).await;
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(done[field].as_str().unwrap_or_default())
                .unwrap_or_else(|error| panic!("{field} of {done}: {error}"))
        };
        runs.push((at("started_at"), at("finished_at")));
    }
    let most_running = runs
        .iter()
        .map(|(start, _)| {
            runs.iter()
                .filter(|(other_start, other_end)| other_start <= start && start < other_end)
                .count()
        })
        .max()
        .unwrap_or_default();
    assert!(
        most_running <= 2,
        "{most_running} ran at once with a cap of 2: {runs:?}"
    );
    assert!(most_running >= 1);
    let cancelled = api.wait_terminal(&queued, Duration::from_secs(5)).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(
        cancelled["started_at"].is_null(),
        "a cancelled queued execution never runs"
    );
    for id in &ids[..5] {
        let done = api.wait_terminal(id, Duration::from_secs(5)).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(stdout(&done), "done\n");
    }
}

/// Every language the host offers runs its own example (the one the web app shows), through
/// the whole pipeline. Go compiles first (`go run`), hence its long timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offered_language_runs_its_example() {
    let (_stack, api) = stack("examples").await;
    let (_, runtimes) = api.get("/api/v1/runtimes").await;
    let languages = runtimes["languages"].as_array().expect("languages").clone();
    assert!(
        languages.len() >= 3,
        "python, node and bash at least: {runtimes}"
    );
    let mut ids = Vec::new();
    for language in &languages {
        let lang = language["lang"].as_str().unwrap().to_owned();
        let example = language["versions"][0]["example"].as_str().unwrap();
        let timeout = if lang == "go" { 120 } else { 20 };
        let id = api
            .submit(json!({ "lang": lang, "script": example, "timeout_seconds": timeout }))
            .await;
        ids.push((lang, id));
    }
    for (lang, id) in ids {
        let done = api.wait_terminal(&id, Duration::from_secs(150)).await;
        assert_eq!(done["status"], "completed", "{lang}: {done}");
        assert_eq!(done["exit_code"], 0, "{lang}: {done}");
        assert!(
            stdout(&done).contains(&format!("hello from {lang}")),
            "{lang}: {done}"
        );
    }
}
