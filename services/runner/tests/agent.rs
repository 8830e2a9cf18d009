//! The runner following an agent (no sandbox wrapper): secrets pass from its own environment
//! only when named, the budget stops the run as soon as the output crosses it, and the report
//! carries the final text, usage, cost and the workspace's changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_runner_protocol::agent::{AgentWatch, FileChange, OutputParser, Usd};
use kiln_runner_protocol::{RunnerResult, RunnerSpec, StatePaths};

fn state_dir(name: &str) -> StatePaths {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("runner-agent-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(dir.join("work")).unwrap();
    StatePaths::new(dir)
}

fn spec(paths: &StatePaths, script: &str, watch: AgentWatch) -> RunnerSpec {
    RunnerSpec {
        execution_id: "agent".into(),
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        stdin_path: None,
        cwd: paths.work(),
        run_as: None,
        timeout_ms: 20_000,
        kill_grace_ms: 50,
        output_limit_bytes: 1 << 20,
        cgroup: None,
        agent: Some(watch),
    }
}

fn watch() -> AgentWatch {
    AgentWatch {
        parser: OutputParser::Jsonl,
        max_tokens: None,
        max_cost: None,
        pass_env: vec!["AGENT_KEY".into()],
        max_changed_file_bytes: 1024,
        max_changed_total_bytes: 4096,
        max_changed_files: 10,
    }
}

fn run(paths: &StatePaths, spec: &RunnerSpec) -> RunnerResult {
    std::fs::write(paths.spec(), serde_json::to_vec(spec).unwrap()).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_kiln-runner"))
        .arg(&paths.dir)
        .env_clear()
        .env("AGENT_KEY", "k-123")
        .env("OTHER_KEY", "o-456")
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    serde_json::from_slice(&std::fs::read(paths.result()).unwrap()).unwrap()
}

#[test]
fn named_secrets_pass_and_the_report_has_text_usage_cost_and_changes() {
    let paths = state_dir("report");
    std::fs::write(paths.work().join("old.txt"), "old").unwrap();
    let script = r#"
        echo "{\"type\":\"usage\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4},\"cost_usd\":0.5}"
        echo "{\"type\":\"assistant\",\"text\":\"key=${AGENT_KEY:-none} other=${OTHER_KEY:-none}\"}"
        echo new > new.txt; rm old.txt
    "#;
    let result = run(&paths, &spec(&paths, script, watch()));
    assert_eq!(result.exit_code, Some(0), "{result:?}");
    let report = result.agent.unwrap();
    assert_eq!(report.final_text, "key=k-123 other=none");
    assert_eq!(report.usage.unwrap().total(), 7);
    assert_eq!(report.cost_usd, Some(Usd::from_dollars(0.5)));
    let changes: Vec<(&str, FileChange)> = report
        .changed_files
        .iter()
        .map(|c| (c.path.as_str(), c.change))
        .collect();
    assert_eq!(
        changes,
        [
            ("new.txt", FileChange::Created),
            ("old.txt", FileChange::Deleted)
        ]
    );
    assert!(report.budget_exceeded.is_none());
    let spec_text = std::fs::read_to_string(paths.spec()).unwrap();
    assert!(
        !spec_text.contains("k-123"),
        "secret values never reach the state directory"
    );
}

#[test]
fn the_cost_budget_stops_the_agent_while_it_runs() {
    let paths = state_dir("budget");
    let script = r#"
        echo "{\"type\":\"usage\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1},\"cost_usd\":0.4}"
        sleep 0.2
        echo "{\"type\":\"usage\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1},\"cost_usd\":0.4}"
        sleep 10
        echo never
    "#;
    let budget = AgentWatch {
        max_cost: Some(Usd::from_dollars(0.5)),
        ..watch()
    };
    let started = Instant::now();
    let result = run(&paths, &spec(&paths, script, budget));
    assert!(started.elapsed() < Duration::from_secs(5), "stopped early");
    assert!(!result.timed_out && !result.cancelled, "{result:?}");
    let report = result.agent.unwrap();
    assert!(report.budget_exceeded.unwrap().contains("cost"));
    assert_eq!(report.cost_usd, Some(Usd::from_dollars(0.8)));
    let stdout = std::fs::read_to_string(paths.stdout()).unwrap();
    assert!(!stdout.contains("never"));
}
