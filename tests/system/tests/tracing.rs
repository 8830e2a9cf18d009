//! One execution is one trace: api → saga-orchestrator → k8s-worker → pod-monitor →
//! result-processor, linked through Kafka headers and the trace context events carry.
//!
//! The services export to an OTLP/HTTP receiver inside this test (protobuf
//! `ExportTraceServiceRequest`, as the collector would receive it). The spans of the execution's
//! trace must form one tree: one root, every parent present, each service's spans reached from
//! another service's span. The services' JSON logs carry the same trace id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use stack::api::Api;
use stack::{Isolation, Stack};

const PIPELINE: [&str; 5] = [
    "api",
    "saga-orchestrator",
    "k8s-worker",
    "pod-monitor",
    "result-processor",
];

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut spans = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// Serves `POST /v1/traces` on a free port; returns the endpoint and what it received.
async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/v1/traces"), received)
}

/// What is wrong with the trace `trace_id` (empty when it is one complete tree over the pipeline).
fn problems(spans: &[ReceivedSpan], trace_id: &str) -> Vec<String> {
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let mut problems = Vec::new();
    let roots: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    if roots.len() != 1 {
        problems.push(format!("{} root spans: {roots:?}", roots.len()));
    }
    for span in &trace {
        if !span.parent_span_id.is_empty() && !by_id.contains_key(span.parent_span_id.as_str()) {
            problems.push(format!("parent of {span:?} not in the trace (yet)"));
        }
    }
    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for service in PIPELINE {
        if !services.contains(service) {
            problems.push(format!("no span of {service}"));
        }
    }
    // Each service after api is entered from another service: some span of it has a parent
    // span of a different service.
    for service in &PIPELINE[1..] {
        let entered = trace.iter().any(|s| {
            s.service == *service
                && by_id
                    .get(s.parent_span_id.as_str())
                    .is_some_and(|p| p.service != *service)
        });
        if !entered {
            problems.push(format!(
                "no span of {service} has a parent in another service"
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_is_one_trace_across_the_pipeline() {
    let (endpoint, received) = otlp_receiver().await;
    let stack =
        Stack::start(Isolation::new("tracing").with("KILN__TELEMETRY__OTLP_ENDPOINT", endpoint))
            .await;
    let api = Api::login(&stack.api(""), "user", "user123").await;
    let id = api
        .submit(json!({"lang": "python", "script": "print('traced')"}))
        .await;
    let execution = api.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(execution["status"], "completed", "{execution}");

    // The trace of the submission: the one holding api's publish of execution_requested.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (trace_id, found) = loop {
        let spans = received.lock().unwrap().clone();
        let trace_id = spans
            .iter()
            .find(|s| s.service == "api" && s.name.ends_with("execution_requested publish"))
            .map(|s| s.trace_id.clone());
        if let Some(trace_id) = trace_id {
            let found = problems(&spans, &trace_id);
            if found.is_empty() {
                break (trace_id, found);
            }
            if Instant::now() >= deadline {
                break (trace_id, found);
            }
        } else {
            assert!(
                Instant::now() < deadline,
                "api exported no execution_requested publish span; got {spans:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let spans = received.lock().unwrap().clone();
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    assert!(
        found.is_empty(),
        "{found:#?}\nspans of the trace: {in_trace:#?}"
    );

    // The trace id leads to the log lines: api logs the submission and k8s-worker the executor's
    // creation at info level, each inside the trace (the JSON log format adds trace_id, span_id).
    for name in ["api", "k8s-worker"] {
        let service = stack.services.iter().find(|s| s.name == name).unwrap();
        let log = std::fs::read_to_string(&service.log_path).unwrap();
        let needle = format!("\"trace_id\":\"{trace_id}\"");
        assert!(
            log.lines().any(|line| line.contains(&needle)),
            "{name} logged nothing with {needle}; log: {}",
            service.log_path.display()
        );
    }
}
