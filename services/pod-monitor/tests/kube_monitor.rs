//! The Kubernetes watcher against a mocked API (tower-test, asserting every request exactly) and
//! the real Kafka broker (asserting the events).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod observer;

use observer::{Events, Observer, observe};

use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kiln_runner_protocol::pod::{FrameStream, encode_frame};
use kube::client::Body;
use pod_monitor::KubeMonitor;
use serde_json::{Value, json};
use shared::config::KubernetesConfig;
use shared::events::{ErrorType, EventPayload, EventType};
use shared::kafka::EventProducer;
use shared::testing::wait_until;
use tower_test::mock::{Handle, pair};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const PODS: &str = "/api/v1/namespaces/kiln-executors/pods";
const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dkiln%2Capp.kubernetes.io%2Fcomponent%3Dexecutor";

#[derive(Clone)]
enum Reply {
    Json(Value),
    Text(String),
}

#[derive(Clone)]
struct Expect {
    method: Method,
    uri: String,
    status: u16,
    reply: Reply,
}

fn expect(method: Method, uri: String, status: u16, reply: Reply) -> Expect {
    Expect {
        method,
        uri,
        status,
        reply,
    }
}

fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<Expect>,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        for step in script {
            let (request, respond) = handle.next_request().await.expect("a request");
            assert_eq!(
                (request.method(), request.uri().to_string()),
                (&step.method, step.uri.clone()),
                "unexpected request"
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            bodies.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
            let body = match step.reply {
                Reply::Json(value) => serde_json::to_vec(&value).unwrap(),
                Reply::Text(text) => text.into_bytes(),
            };
            respond.send_response(
                Response::builder()
                    .status(step.status)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
        bodies
    })
}

struct Harness {
    events: Events,
    producer: EventProducer,
    _observer: Observer,
}

async fn harness() -> Harness {
    let observer = observe().await;
    Harness {
        events: observer.events.clone(),
        producer: observer.producer.clone(),
        _observer: observer,
    }
}

impl Harness {
    fn monitor(&self) -> (KubeMonitor, Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "kiln-executors");
        let pods = kube::Api::<Pod>::namespaced(client, "kiln-executors");
        let monitor = KubeMonitor::new(
            pods,
            self.producer.clone(),
            &KubernetesConfig::default(),
            "pod-monitor",
        );
        (monitor, handle)
    }
}

/// A recorded pod, renamed to a fresh execution so events of parallel tests never mix.
fn pod(fixture: &str, progress: Option<Value>) -> (String, Value) {
    let path = format!(
        "{}/tests/fixtures/pods/{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut pod: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let id = Uuid::now_v7().to_string();
    let meta = json!({"execution_id": id, "user_id": "user-1", "correlation_id": Uuid::now_v7(),
                      "causation_id": Uuid::now_v7(), "timeout_seconds": 5});
    pod["metadata"]["name"] = json!(format!("executor-{id}"));
    pod["metadata"]["labels"]["kiln.dev/execution-id"] = json!(id);
    pod["metadata"]["annotations"]["kiln.dev/executor-meta"] = json!(meta.to_string());
    if let Some(progress) = progress {
        pod["metadata"]["annotations"]["kiln.dev/monitor"] = json!(progress.to_string());
    }
    (id, pod)
}

fn list(items: Vec<Value>) -> Reply {
    Reply::Json(
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": items}),
    )
}

fn name_uri(id: &str, suffix: &str) -> String {
    format!("{PODS}/executor-{id}{suffix}")
}

/// What reporting a finished pod sends: record running, read the log, record finished, delete.
fn report_steps(id: &str, pod: &Value, log: String) -> Vec<Expect> {
    let echo = || Reply::Json(pod.clone());
    vec![
        expect(Method::PATCH, name_uri(id, "?"), 200, echo()),
        expect(
            Method::GET,
            name_uri(id, "/log?&container=executor"),
            200,
            Reply::Text(log),
        ),
        expect(Method::PATCH, name_uri(id, "?"), 200, echo()),
        expect(Method::DELETE, name_uri(id, "?"), 200, echo()),
    ]
}

#[tokio::test]
async fn a_finished_pod_is_reported_with_its_output_recorded_and_deleted() {
    let h = harness().await;
    let (mut monitor, handle) = h.monitor();
    let (id, pod) = pod("succeeded", None);
    let log = [
        encode_frame(FrameStream::Stdout, b"hel"),
        "kiln-runner: a diagnostic\n".to_owned(),
        encode_frame(FrameStream::Stderr, b"warn\n"),
        encode_frame(FrameStream::Stdout, b"lo\n"),
    ]
    .concat();
    let server = serve(
        handle,
        [
            vec![expect(
                Method::GET,
                format!("{PODS}?&{SELECTOR}"),
                200,
                list(vec![pod.clone()]),
            )],
            report_steps(&id, &pod, log),
        ]
        .concat(),
    );
    assert_eq!(monitor.reconcile().await.as_deref(), Some("100"));
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[1]["metadata"]["annotations"]["kiln.dev/monitor"],
        r#"{"running":true,"finished":false}"#
    );
    assert_eq!(
        bodies[3]["metadata"]["annotations"]["kiln.dev/monitor"],
        r#"{"running":true,"finished":true}"#
    );
    assert!(monitor.tracked().is_empty());

    // Topics are not ordered with each other: wait for every event this pod yields.
    let all = [
        EventType::PodRunning,
        EventType::ExecutionStarted,
        EventType::ExecutionCompleted,
        EventType::PodTerminated,
    ];
    assert!(
        wait_until(WAIT, || all.iter().all(|t| h.events.count(&id, *t) > 0)
            && h.events
                .of(&id)
                .iter()
                .filter(|e| e.event_type() == EventType::ExecutionOutput)
                .count()
                == 3)
        .await
    );
    let events = h.events.of(&id);
    let completed = events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::ExecutionCompleted(done) => Some(done.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            completed.outcome.stdout.as_str(),
            completed.outcome.stderr.as_str()
        ),
        ("hello\n", "warn\n")
    );
    assert_eq!(completed.outcome.exit_code, Some(0));
    let mut seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ExecutionOutput(chunk) => Some(chunk.seq),
            _ => None,
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert!(h.events.count(&id, EventType::ExecutionStarted) > 0);
    assert!(
        events
            .iter()
            .all(|e| e.metadata.user_id.as_deref() == Some("user-1"))
    );
}

#[tokio::test]
async fn a_pod_reported_before_a_restart_is_only_deleted() {
    let h = harness().await;
    let (mut monitor, handle) = h.monitor();
    let (id, pod) = pod(
        "succeeded",
        Some(json!({"running": true, "finished": true})),
    );
    let server = serve(
        handle,
        vec![
            expect(
                Method::GET,
                format!("{PODS}?&{SELECTOR}"),
                200,
                list(vec![pod.clone()]),
            ),
            // Deleted meanwhile by someone else: a 404 is fine.
            expect(
                Method::DELETE,
                name_uri(&id, "?"),
                404,
                Reply::Json(
                    json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "status": "Failure", "message": "gone"}),
                ),
            ),
        ],
    );
    monitor.reconcile().await.unwrap();
    server.await.unwrap();
    assert!(monitor.tracked().is_empty());
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_execution_after_the_grace() {
    let h = harness().await;
    let (mut monitor, handle) = h.monitor();
    // The fixture was created in 2026-01, far beyond the 60 s grace.
    let (id, pod) = pod("image-pull-backoff", None);
    let server = serve(
        handle,
        vec![
            expect(
                Method::GET,
                format!("{PODS}?&{SELECTOR}"),
                200,
                list(vec![pod.clone()]),
            ),
            expect(
                Method::PATCH,
                name_uri(&id, "?"),
                200,
                Reply::Json(pod.clone()),
            ),
            expect(
                Method::DELETE,
                name_uri(&id, "?"),
                200,
                Reply::Json(pod.clone()),
            ),
        ],
    );
    monitor.reconcile().await.unwrap();
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[1]["metadata"]["annotations"]["kiln.dev/monitor"],
        r#"{"running":false,"finished":true}"#
    );
    assert!(
        wait_until(WAIT, || h.events.count(&id, EventType::PodTerminated) > 0
            && h.events.count(&id, EventType::ExecutionFailed) > 0)
        .await
    );
    let failed = h
        .events
        .of(&id)
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::ExecutionFailed(f) => Some(f),
            _ => None,
        })
        .unwrap();
    assert_eq!(failed.error_type, ErrorType::SystemError);
    assert_eq!(h.events.count(&id, EventType::ExecutionStarted), 0);
}

#[tokio::test]
async fn the_watch_resumes_from_the_list_version_and_stops_on_410_gone() {
    let h = harness().await;
    let (mut monitor, handle) = h.monitor();
    let (id, pod) = pod("deadline-exceeded", None);
    let stream = [
        json!({"type": "ADDED", "object": pod}).to_string(),
        json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "205"}}}).to_string(),
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version: 100 (150)", "reason": "Expired", "code": 410}}).to_string(),
    ]
    .join("\n")
        + "\n";
    let server = serve(
        handle,
        [
            vec![expect(
                Method::GET,
                format!("{PODS}?&watch=true&timeoutSeconds=30&{SELECTOR}&allowWatchBookmarks=true&resourceVersion=100"),
                200,
                Reply::Text(stream),
            )],
            report_steps(&id, &pod, encode_frame(FrameStream::Stdout, b"partial")),
        ]
        .concat(),
    );
    // Returns (to relist) once the server says 410 Gone.
    tokio::time::timeout(WAIT, monitor.watch("100".into()))
        .await
        .unwrap();
    server.await.unwrap();
    assert!(
        wait_until(WAIT, || h.events.count(&id, EventType::ExecutionTimeout)
            > 0)
        .await
    );
    let timeout = h
        .events
        .of(&id)
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::ExecutionTimeout(t) => Some(t),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (timeout.timeout_seconds, timeout.outcome.stdout.as_str()),
        (5, "partial")
    );
}

/// `k8s/executors/rbac.yaml` grants pod-monitor exactly the verbs its code uses.
#[test]
fn the_monitor_role_grants_exactly_the_verbs_it_uses() {
    let path = format!(
        "{}/../../k8s/executors/rbac.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let role = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|v| v["kind"] == "Role" && v["metadata"]["name"] == "kiln-pod-monitor")
        .unwrap();
    let mut granted = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                granted.push(format!(
                    "{}:{}",
                    resource.as_str().unwrap(),
                    verb.as_str().unwrap()
                ));
            }
        }
    }
    let mut used: Vec<String> = pod_monitor::KUBE_PERMISSIONS
        .iter()
        .flat_map(|(r, verbs)| verbs.iter().map(move |v| format!("{r}:{v}")))
        .collect();
    granted.sort();
    used.sort();
    assert_eq!(granted, used);
}
