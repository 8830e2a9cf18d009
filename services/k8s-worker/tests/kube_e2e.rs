//! Against a REAL kube-apiserver (opt-in: `scripts/kube-e2e.sh`, which starts etcd, kube-apiserver
//! and KWOK and applies k8s/executors). k8s-worker acts under its own service account
//! (impersonated), so its Role is proven sufficient, and Pod Security admission ("restricted",
//! enforced by the namespace labels) judges the real pod spec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_worker::kube::KubeRuntime;
use k8s_worker::{ExecutorMeta, ExecutorRuntime, ExecutorSpec};
use kube::api::{Api, ListParams};
use shared::config::{Config, KubernetesConfig};
use shared::events::ExecutionLimits;
use shared::kube_client::api_status;
use uuid::Uuid;

const NS: &str = "kiln-executors";

/// The e2e cluster as admin, or impersonating `user`.
async fn client(user: Option<&str>) -> kube::Client {
    shared::kube_client::e2e_client(user).await.unwrap()
}

fn spec(id: &str) -> ExecutorSpec {
    ExecutorSpec {
        execution_id: id.into(),
        lang: "python".into(),
        lang_version: String::new(),
        script: "print(1)".into(),
        stdin: Some("in".into()),
        limits: ExecutionLimits {
            timeout_seconds: 5,
            memory_mb: 128,
            max_processes: 32,
            max_output_bytes: 4096,
            max_file_bytes: 4096,
        },
        meta: serde_json::from_value::<ExecutorMeta>(serde_json::json!({
            "user_id": "u1", "correlation_id": Uuid::now_v7(), "causation_id": Uuid::now_v7(),
        }))
        .unwrap(),
        agent: None,
    }
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: scripts/kube-e2e.sh"]
async fn kube_e2e_worker_creates_admitted_pods_under_its_own_role() {
    let config = Config::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config.toml"),
    )
    .unwrap();
    let worker = client(Some("system:serviceaccount:kiln:kiln-k8s-worker")).await;
    let runtime = KubeRuntime::new(
        worker.clone(),
        &config.runtime,
        &KubernetesConfig::default(),
    )
    .unwrap();
    runtime.prepare_namespace().await.unwrap();

    let id = Uuid::now_v7().to_string();
    let created = runtime.create(&spec(&id)).await.unwrap();
    // A redelivered command: 409 on both objects, then success.
    assert_eq!(runtime.create(&spec(&id)).await.unwrap(), created);

    let admin = client(None).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let pod = pods.get(&created.executor).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let map = maps.get(&created.executor).await.unwrap();
    let owner = &map.metadata.owner_references.unwrap()[0];
    assert_eq!(Some(&owner.uid), pod.metadata.uid.as_ref());
    assert_eq!(map.data.unwrap()["stdin"], "in");

    // Least privilege: the worker cannot list or read logs.
    let as_worker: Api<Pod> = Api::namespaced(worker, NS);
    let denied = as_worker.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_status(&denied), Some(403));

    runtime.delete(&id, "user_cancelled").await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        match pods.get_opt(&created.executor).await.unwrap() {
            None => {
                gone = true;
                break;
            }
            Some(pod) => assert_eq!(
                pod.metadata.annotations.unwrap()["kiln.dev/cancelled"],
                "user_cancelled"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the pod was not deleted");
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: scripts/kube-e2e.sh"]
async fn kube_e2e_a_pod_violating_the_restricted_profile_is_rejected() {
    // Proves the namespace really enforces "restricted": the same pod without the hardening fails.
    let admin = client(None).await;
    let pods: Api<Pod> = Api::namespaced(admin, NS);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("loose-{}", Uuid::now_v7())},
        "spec": {"containers": [{"name": "c", "image": "kiln/executor-bash:5.2"}]},
    }))
    .unwrap();
    let error = pods.create(&Default::default(), &pod).await.unwrap_err();
    assert_eq!(api_status(&error), Some(403), "{error}");
    assert!(error.to_string().contains("restricted"), "{error}");
}
