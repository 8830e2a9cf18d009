//! Agent executions through the running services, driven by the fake provider
//! (`tests/fake-agent`, built as `target/<profile>/kiln-fake-agent`): its prompt is a script.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stack::api::Api;
use stack::{Isolation, Stack};

/// A provider key only the fake agent may see.
fn secret() -> String {
    format!("sekrit-{}", uuid::Uuid::now_v7().simple())
}

async fn start(secret: &str) -> (Stack, Api) {
    // The fake agent is found relative to the services' directory, like the runner.
    stack::binary("kiln-fake-agent");
    let secrets_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agents-{}.env", uuid::Uuid::now_v7().simple()));
    std::fs::write(
        &secrets_file,
        format!("# test keys\nFAKE_AGENT_API_KEY={secret}\n"),
    )
    .unwrap();
    let isolation = Isolation::new("agents")
        .with(
            "KILN__AGENTS__SECRETS_FILE",
            secrets_file.display().to_string(),
        )
        .with(
            "KILN__AGENTS__PROVIDERS__FAKE__BINARY",
            stack::binary("kiln-fake-agent").display().to_string(),
        )
        .with("KILN__AGENTS__DEFAULT_MAX_COST_USD", "0.1")
        .with("KILN__AGENTS__DAILY_BUDGET_USD", "3.0");
    let stack = Stack::start(isolation).await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    (stack, api)
}

fn agent(prompt: &str) -> Value {
    json!({"kind": "agent", "provider": "fake", "prompt": prompt})
}

fn report(execution: &Value) -> &Value {
    &execution["agent"]["result"]
}

fn changed<'a>(execution: &'a Value, path: &str) -> Option<&'a Value> {
    report(execution)["changed_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
}

async fn wait_status(api: &Api, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, execution) = api.get(&format!("/api/v1/executions/{id}")).await;
        if execution["status"] == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never {wanted}: {execution}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SSE stream of `id` until its `result` event, as text.
async fn sse(api: &Api, id: &str) -> String {
    let mut response = api
        .client
        .get(format!("{}/api/v1/executions/{id}/events", api.base))
        .bearer_auth(&api.token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("event: result") {
            break;
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_isolated_with_their_diff_usage_budget_and_live_output() {
    let key = secret();
    let (stack, api) = start(&key).await;

    let (status, providers) = api.get("/api/v1/providers").await;
    assert_eq!(status, 200, "{providers}");
    let listed = |name: &str| {
        providers["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(listed("fake")["available"], true, "{providers}");
    for name in ["claude-code", "codex", "aider"] {
        assert!(listed(name).is_object(), "{name} described: {providers}");
    }

    // Refused before anything is queued.
    let rejected = [
        (
            json!({"kind": "agent", "provider": "nope", "prompt": "say hi"}),
            400,
            "unknown_provider",
        ),
        (
            json!({"kind": "agent", "provider": "fake", "prompt": "say hi",
                   "files": [{"path": "../escape.txt", "content": "x"}]}),
            400,
            "invalid_path",
        ),
        (
            json!({"kind": "agent", "provider": "fake", "prompt": "say hi",
                   "files": [{"path": "/etc/passwd", "content": "x"}]}),
            400,
            "invalid_path",
        ),
        (
            json!({"kind": "agent", "provider": "fake", "prompt": "--help"}),
            400,
            "invalid_prompt",
        ),
        (
            json!({"kind": "agent", "provider": "fake", "prompt": "say hi", "timeout_seconds": 100000}),
            400,
            "invalid_timeout",
        ),
    ];
    for (body, status, code) in rejected {
        let (got, answer) = api.post("/api/v1/execute", body.clone()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body} -> {answer}"
        );
    }

    // The workspace diff, usage and cost, the secret in the agent's environment only.
    let diff = api
        .submit(json!({
            "kind": "agent", "provider": "fake", "model": "fake-2",
            "prompt": "say starting\nsleep 0.5\nwrite src/lib.rs pub fn new() {}\nwrite notes/todo.md - done\ndelete gone.txt\nusage 100 20 0.01\nusage 5 5 0.002\nenv FAKE_AGENT_API_KEY\nnet\nsay finished",
            "files": [
                {"path": "keep.txt", "content": "unchanged"},
                {"path": "src/lib.rs", "content": "pub fn old() {}"},
                {"path": "gone.txt", "content": "bye"},
                {"path": "blob.bin", "content": "AAEC/w==", "encoding": "base64"}
            ]
        }))
        .await;
    let live = sse(&api, &diff).await;
    assert!(
        live.contains("event: output") && live.contains("starting"),
        "agent output streams live: {live}"
    );
    let done = api.wait_terminal(&diff, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["lang"], "agent");
    assert_eq!(done["agent"]["model"], "fake-2");
    let r = report(&done);
    assert_eq!(r["final_text"], "finished", "{done}");
    assert_eq!(r["usage"]["input_tokens"], 105);
    assert_eq!(r["usage"]["output_tokens"], 25);
    assert!(
        (r["cost_usd"].as_f64().unwrap() - 0.012).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(changed(&done, "src/lib.rs").unwrap()["change"], "modified");
    assert_eq!(
        changed(&done, "src/lib.rs").unwrap()["content"],
        "pub fn new() {}"
    );
    assert_eq!(
        changed(&done, "notes/todo.md").unwrap()["change"],
        "created"
    );
    assert_eq!(changed(&done, "gone.txt").unwrap()["change"], "deleted");
    assert!(
        changed(&done, "keep.txt").is_none() && changed(&done, "blob.bin").is_none(),
        "{r}"
    );
    let stdout = done["stdout"].as_str().unwrap();
    assert!(stdout.contains("FAKE_AGENT_API_KEY is set"), "{stdout}");
    assert!(
        stdout.contains("network unreachable"),
        "network is off by default: {stdout}"
    );
    assert!(
        !done.to_string().contains(&key),
        "the key is never in a result"
    );

    // Stopped at its budget: the second usage line crosses max_tokens.
    let budget = api
        .submit(json!({
            "kind": "agent", "provider": "fake", "max_tokens": 50,
            "prompt": "usage 10 10 0.001\nsleep 0.3\nusage 40 40 0.001\nsleep 20\nsay never"
        }))
        .await;
    // Timeout and cancel mid-run.
    let slow = api
        .submit(json!({"kind": "agent", "provider": "fake", "prompt": "say slow\nsleep 30", "timeout_seconds": 2}))
        .await;
    let cancel = api.submit(agent("say working\nsleep 30\nsay never")).await;
    let failing = api.submit(agent("say trying\nfail 4")).await;
    let flood = api.submit(agent("flood 200000\nsay survived")).await;
    // A script sees neither the key nor its name, in its environment or any process's.
    let script = api
        .submit(json!({"lang": "bash", "script": "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo end"}))
        .await;

    wait_status(&api, &cancel, "running").await;
    let (status, _) = api
        .post(&format!("/api/v1/executions/{cancel}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);

    let budget = api.wait_terminal(&budget, Duration::from_secs(60)).await;
    assert_eq!(budget["status"], "failed", "{budget}");
    assert_eq!(budget["error_type"], "budget_exceeded", "{budget}");
    assert!(
        report(&budget)["budget_exceeded"]
            .as_str()
            .unwrap()
            .contains("token")
    );
    assert_eq!(report(&budget)["usage"]["input_tokens"], 50);
    assert!(!budget["stdout"].as_str().unwrap().contains("never"));

    let slow = api.wait_terminal(&slow, Duration::from_secs(60)).await;
    assert_eq!(slow["status"], "timeout", "{slow}");
    assert!(slow["stdout"].as_str().unwrap().contains("slow"));

    let cancel = api.wait_terminal(&cancel, Duration::from_secs(60)).await;
    assert_eq!(cancel["status"], "cancelled", "{cancel}");
    assert!(
        !cancel["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("never")
    );

    let failing = api.wait_terminal(&failing, Duration::from_secs(60)).await;
    assert_eq!(
        (failing["status"].as_str(), failing["exit_code"].as_i64()),
        (Some("completed"), Some(4)),
        "{failing}"
    );

    // Output beyond the limit is dropped, the agent is not blocked, and it finishes.
    let flood = api.wait_terminal(&flood, Duration::from_secs(60)).await;
    assert_eq!(flood["status"], "completed", "{}", flood["error_message"]);
    assert_eq!(flood["stdout_truncated"], true);
    assert_eq!(report(&flood)["final_text"], "survived");

    let script = api.wait_terminal(&script, Duration::from_secs(60)).await;
    assert_eq!(script["status"], "completed", "{script}");
    let out = script["stdout"].as_str().unwrap();
    assert!(out.contains("end") && out.contains("PATH="), "{out}");
    assert!(
        !out.contains(&key) && !out.contains("FAKE_AGENT_API_KEY"),
        "{out}"
    );

    // The daily budget (3 USD here) is reserved per run from its cost cap: a run that may cost
    // more than what is left is refused before it is queued.
    let (status, answer) = api
        .post(
            "/api/v1/execute",
            json!({"kind": "agent", "provider": "fake", "prompt": "say hi", "max_cost_usd": 2.95}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (429, Some("daily_budget_exceeded")),
        "{answer}"
    );

    // No service ever logged the key.
    for service in &stack.services {
        let log = std::fs::read_to_string(&service.log_path).unwrap_or_default();
        assert!(!log.contains(&key), "{} logged the key", service.name);
    }
}
