//! Every metric a Grafana dashboard or a Prometheus alert reads is one the code exports.
//!
//! The whole stack runs one execution (and opens its event stream), then every service's
//! `/metrics` is scraped. A metric used by a dashboard must appear in that scrape, unless it only
//! exists after a rarer event (a dead letter, a retry, a replay: `EVENT_DRIVEN` below); those must
//! at least be declared in the code. Both catch a renamed metric, a typo, and a summary read as a
//! histogram (`_bucket`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stack::api::Api;
use stack::{Isolation, SERVICES, Stack, workspace_root};

/// Metrics that appear only after an event one successful execution does not cause.
const EVENT_DRIVEN: &[&str] = &[
    "kiln_kafka_dead_lettered_total",
    "kiln_kafka_handler_retries_total",
    "kiln_kafka_partition_pauses_total",
    "kiln_results_failed_total",
    "kiln_results_duplicates_ignored_total",
    "kiln_dlq_received_total",
    "kiln_dlq_retried_total",
    "kiln_dlq_parked_total",
    "kiln_dlq_discarded_total",
    "kiln_replay_events_replayed_total",
];

/// Metric names in a PromQL expression: identifiers outside quoted strings that start with a
/// prefix Kiln or its process collector exports.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' {
            for (_, d) in chars.by_ref() {
                if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &expr[start..end];
            if word.starts_with("kiln_") || word.starts_with("process_") {
                into.insert(word.to_owned());
            }
        }
    }
}

fn collect_exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => into.push(expr.clone()),
                    _ => collect_exprs(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// `(file, metric)` for every metric named in a dashboard or alert expression.
fn used_metrics() -> Vec<(String, String)> {
    let root = workspace_root().join("observability");
    let mut sources: Vec<(String, Value)> = Vec::new();
    for entry in std::fs::read_dir(root.join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            sources.push((path.display().to_string(), json));
        }
    }
    let alerts = root.join("prometheus/alerts.yml");
    let yaml: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&alerts).unwrap()).unwrap();
    sources.push((alerts.display().to_string(), yaml));
    assert!(sources.len() >= 3, "dashboards and alerts found");

    let mut used = Vec::new();
    for (file, value) in sources {
        let mut exprs = Vec::new();
        collect_exprs(&value, &mut exprs);
        assert!(!exprs.is_empty(), "{file} has no expressions");
        let mut names = BTreeSet::new();
        for expr in &exprs {
            metric_names(expr, &mut names);
        }
        used.extend(names.into_iter().map(|n| (file.clone(), n)));
    }
    used
}

/// Every `"kiln_..."` string literal in the services' and shared's Rust sources.
fn declared_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, into: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    if literal.starts_with("kiln_")
                        && literal
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        into.insert(literal.to_owned());
                    }
                }
            }
        }
    }
    let mut declared = BTreeSet::new();
    walk(&workspace_root().join("services"), &mut declared);
    walk(&workspace_root().join("shared/src"), &mut declared);
    declared
}

/// A histogram's series names end in `_bucket`, `_sum` or `_count`; the code names the histogram.
fn base_name(metric: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| metric.strip_suffix(suffix))
        .unwrap_or(metric)
}

/// Metric names in Prometheus text exposition.
fn exposed(text: &str, into: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        into.insert(line[..end].to_owned());
    }
}

#[test]
fn every_dashboard_metric_is_declared_in_the_code() {
    let declared = declared_metrics();
    let missing: Vec<_> = used_metrics()
        .into_iter()
        .filter(|(_, m)| m.starts_with("kiln_") && !declared.contains(base_name(m)))
        .collect();
    assert!(missing.is_empty(), "not declared in the code: {missing:#?}");
}

#[test]
fn the_extractor_skips_label_values_and_functions() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"histogram_quantile(0.95, sum by (le) (rate(kiln_a_bucket{topic=~"kiln_not_me"}[5m]))) / process_b"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["kiln_a_bucket", "process_b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_after_an_execution() {
    let stack = Stack::start(Isolation::new("dashboards")).await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    let id = api
        .submit(json!({"lang": "python", "script": "print('metrics')"}))
        .await;
    let execution = api.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(execution["status"], "completed", "{execution}");
    // The event stream of the finished execution: creates the SSE gauge.
    let response = api
        .client
        .get(stack.api(&format!("/api/v1/executions/{id}/events")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    let used = used_metrics();
    let declared = declared_metrics();
    // Gauges refreshed by periodic work (scheduler passes, librdkafka statistics every 5 s) may
    // lag the execution: scrape until everything is there or the deadline passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut scraped = BTreeSet::new();
        for name in SERVICES {
            exposed(&stack.metrics(name).await, &mut scraped);
        }
        let missing: Vec<_> = used
            .iter()
            .filter(|(_, m)| !scraped.contains(m.as_str()))
            .filter(|(_, m)| {
                !(EVENT_DRIVEN.contains(&base_name(m)) && declared.contains(base_name(m)))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "used by dashboards or alerts but not exported: {missing:#?}\nexported: {scraped:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
