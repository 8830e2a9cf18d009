//! KubeRuntime against a mocked Kubernetes API (tower-test): the exact requests it sends for
//! namespace setup, create (first delivery and redelivery), and cancel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{Method, Request, Response};
use k8s_worker::kube::KubeRuntime;
use k8s_worker::{ExecutorMeta, ExecutorRuntime, ExecutorSpec, RuntimeError};
use kube::client::Body;
use serde_json::{Value, json};
use shared::config::{Config, KubernetesConfig, RuntimeConfig};
use shared::events::ExecutionLimits;
use tower_test::mock::{Handle, pair};
use uuid::Uuid;

const NS: &str = "kiln-executors";

/// One expected request and the reply to give it.
struct Expect {
    method: Method,
    /// The path and query, exactly.
    uri: String,
    status: u16,
    reply: Value,
}

fn expect(method: Method, uri: &str, status: u16, reply: Value) -> Expect {
    Expect {
        method,
        uri: uri.to_owned(),
        status,
        reply,
    }
}

/// Serves `script` in order and returns the JSON bodies received; fails on any other request.
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
            bodies.push(if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            });
            respond.send_response(
                Response::builder()
                    .status(step.status)
                    .body(Body::from(serde_json::to_vec(&step.reply).unwrap()))
                    .unwrap(),
            );
        }
        bodies
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn runtime(
    namespace: &str,
) -> (
    Result<KubeRuntime, RuntimeError>,
    Handle<Request<Body>, Response<Body>>,
) {
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, namespace);
    let config = Config::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config.toml"),
    )
    .unwrap();
    let runtime_config = RuntimeConfig {
        kubernetes_namespace: namespace.into(),
        ..config.runtime
    };
    (
        KubeRuntime::new(client, &runtime_config, &KubernetesConfig::default()),
        handle,
    )
}

fn spec(id: &str, lang: &str) -> ExecutorSpec {
    ExecutorSpec {
        execution_id: id.into(),
        lang: lang.into(),
        lang_version: String::new(),
        script: "print(1)".into(),
        stdin: None,
        limits: ExecutionLimits {
            timeout_seconds: 5,
            memory_mb: 128,
            max_processes: 32,
            max_output_bytes: 4096,
            max_file_bytes: 4096,
        },
        meta: serde_json::from_value::<ExecutorMeta>(json!({
            "user_id": "u1", "correlation_id": Uuid::from_u128(1), "causation_id": Uuid::from_u128(2),
        }))
        .unwrap(),
        agent: None,
    }
}

fn pod_reply(id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("executor-{id}"), "namespace": NS, "uid": "uid-123"},
           "spec": {"containers": []}})
}

#[tokio::test]
async fn the_default_namespace_is_refused() {
    for namespace in ["default", "kube-system"] {
        let (runtime, _handle) = runtime(namespace);
        assert!(
            matches!(runtime, Err(RuntimeError::Invalid(_))),
            "{namespace}"
        );
    }
}

#[tokio::test]
async fn namespace_setup_applies_the_labels_and_the_deny_all_policy() {
    let (runtime, handle) = runtime(NS);
    let server = serve(
        handle,
        vec![
            expect(
                Method::PATCH,
                "/api/v1/namespaces/kiln-executors?&force=true&fieldManager=kiln-k8s-worker",
                200,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            ),
            expect(
                Method::PATCH,
                "/apis/networking.k8s.io/v1/namespaces/kiln-executors/networkpolicies/kiln-executors-deny-all?&force=true&fieldManager=kiln-k8s-worker",
                200,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "kiln-executors-deny-all"}, "spec": {"podSelector": {}}}),
            ),
        ],
    );
    runtime.unwrap().prepare_namespace().await.unwrap();
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(
        bodies[1]["spec"]["policyTypes"],
        json!(["Ingress", "Egress"])
    );
    assert_eq!(
        bodies[1]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "executor"
    );
}

#[tokio::test]
async fn create_makes_the_pod_then_a_config_map_it_owns() {
    let (runtime, handle) = runtime(NS);
    let id = "exec-1";
    let server = serve(
        handle,
        vec![
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/pods?",
                201,
                pod_reply(id),
            ),
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/configmaps?",
                201,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "executor-exec-1"}}),
            ),
        ],
    );
    let executor = runtime.unwrap().create(&spec(id, "python")).await.unwrap();
    assert_eq!(executor.executor, "executor-exec-1");
    let bodies = server.await.unwrap();
    assert_eq!(bodies[0]["metadata"]["name"], "executor-exec-1");
    assert_eq!(
        bodies[0]["spec"]["containers"][0]["image"],
        "kiln/executor-python:3.11"
    );
    assert_eq!(
        bodies[1]["metadata"]["ownerReferences"][0]["uid"],
        "uid-123"
    );
    assert_eq!(bodies[1]["data"]["main.py"], "print(1)");
}

#[tokio::test]
async fn a_redelivered_create_finds_the_pod_and_the_config_map() {
    let (runtime, handle) = runtime(NS);
    let id = "exec-2";
    let server = serve(
        handle,
        vec![
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/pods?",
                409,
                status(409, "AlreadyExists"),
            ),
            expect(
                Method::GET,
                "/api/v1/namespaces/kiln-executors/pods/executor-exec-2",
                200,
                pod_reply(id),
            ),
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/configmaps?",
                409,
                status(409, "AlreadyExists"),
            ),
        ],
    );
    runtime.unwrap().create(&spec(id, "python")).await.unwrap();
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[2]["metadata"]["ownerReferences"][0]["uid"],
        "uid-123"
    );
}

#[tokio::test]
async fn an_unknown_language_sends_nothing_and_is_permanent() {
    let (runtime, _handle) = runtime(NS);
    let error = runtime
        .unwrap()
        .create(&spec("exec-3", "cobol"))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
}

#[tokio::test]
async fn an_api_failure_is_retried_and_an_invalid_pod_is_not() {
    let (runtime, handle) = runtime(NS);
    let server = serve(
        handle,
        vec![
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/pods?",
                403,
                status(403, "Forbidden"),
            ),
            expect(
                Method::POST,
                "/api/v1/namespaces/kiln-executors/pods?",
                422,
                status(422, "Invalid"),
            ),
        ],
    );
    let runtime = runtime.unwrap();
    assert!(
        !runtime
            .create(&spec("exec-4", "python"))
            .await
            .unwrap_err()
            .is_permanent()
    );
    assert!(
        runtime
            .create(&spec("exec-4", "python"))
            .await
            .unwrap_err()
            .is_permanent()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn delete_marks_the_pod_cancelled_then_deletes_it() {
    let (runtime, handle) = runtime(NS);
    let server = serve(
        handle,
        vec![
            expect(
                Method::PATCH,
                "/api/v1/namespaces/kiln-executors/pods/executor-exec-5?",
                200,
                pod_reply("exec-5"),
            ),
            expect(
                Method::DELETE,
                "/api/v1/namespaces/kiln-executors/pods/executor-exec-5?",
                200,
                pod_reply("exec-5"),
            ),
            // Already gone: the mark gets 404 and nothing else is sent.
            expect(
                Method::PATCH,
                "/api/v1/namespaces/kiln-executors/pods/executor-exec-6?",
                404,
                status(404, "NotFound"),
            ),
        ],
    );
    let runtime = runtime.unwrap();
    runtime.delete("exec-5", "user_cancelled").await.unwrap();
    runtime.delete("exec-6", "user_cancelled").await.unwrap();
    runtime.delete("../etc", "x").await.unwrap();
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[0]["metadata"]["annotations"]["kiln.dev/cancelled"],
        "user_cancelled"
    );
    assert_eq!(bodies[1]["propagationPolicy"], "Background");
}
