//! The Kubernetes watcher against a REAL kube-apiserver (opt-in: `scripts/kube-e2e.sh`), acting
//! under its own service account (impersonated), with KWOK moving pods to Running and the test
//! setting terminal states through the status subresource, as a kubelet would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod observer;

use observer::observe;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pod_monitor::KubeMonitor;
use serde_json::json;
use shared::config::KubernetesConfig;
use shared::events::{EventPayload, EventType};
use shared::testing::{wait_until, wait_until_async};
use uuid::Uuid;

const NS: &str = "kiln-executors";
const WAIT: Duration = Duration::from_secs(30);

async fn client(user: Option<&str>) -> kube::Client {
    shared::kube_client::e2e_client(user).await.unwrap()
}

/// A minimal executor pod that passes the "restricted" profile, bound to the KWOK node.
fn executor_pod(id: &str) -> Pod {
    let meta = json!({"execution_id": id, "user_id": "u1", "correlation_id": Uuid::now_v7(),
                      "causation_id": Uuid::now_v7(), "timeout_seconds": 5});
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("executor-{id}"),
            "labels": {"app.kubernetes.io/managed-by": "kiln", "app.kubernetes.io/component": "executor", "kiln.dev/execution-id": id},
            "annotations": {"kiln.dev/executor-meta": meta.to_string()},
        },
        "spec": {
            "nodeName": "kwok-node-0",
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "executor", "image": "kiln/executor-bash:5.2",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: scripts/kube-e2e.sh"]
async fn kube_e2e_monitor_reports_running_and_finished_pods_and_deletes_them() {
    let observer = observe().await;
    let (events, producer) = (observer.events.clone(), observer.producer.clone());

    let admin: Api<Pod> = Api::namespaced(client(None).await, NS);
    let id = Uuid::now_v7().to_string();
    let name = format!("executor-{id}");
    admin
        .create(&PostParams::default(), &executor_pod(&id))
        .await
        .unwrap();
    // KWOK plays the kubelet: the pod becomes Running.
    assert!(
        wait_until_async(WAIT, || async {
            admin
                .get(&name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Running")
        })
        .await,
        "KWOK did not run the pod"
    );

    let monitor_client = client(Some("system:serviceaccount:kiln:kiln-pod-monitor")).await;
    let mut monitor = KubeMonitor::new(
        Api::namespaced(monitor_client, NS),
        producer,
        &KubernetesConfig::default(),
        "pod-monitor",
    );
    monitor.reconcile().await.expect("list allowed by the Role");
    assert!(wait_until(WAIT, || events.count(&id, EventType::PodRunning) > 0).await);
    let recorded = admin
        .get(&name)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        recorded["kiln.dev/monitor"],
        r#"{"running":true,"finished":false}"#
    );

    // The program ends: the kubelet's status update, with the runner's result as termination message.
    let result = json!({"exit_code": 0, "signal": null, "timed_out": false, "oom_killed": false, "pids_limited": false,
                        "stdout_truncated": false, "stderr_truncated": false, "wall_ms": 7, "cpu_ms": 1, "peak_memory_kb": 10,
                        "started_at": null, "finished_at": null, "error": null});
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "executor", "image": "kiln/executor-bash:5.2", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": result.to_string(), "startedAt": now, "finishedAt": now}},
    }]}});
    admin
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    monitor.reconcile().await.unwrap();
    assert!(
        wait_until(WAIT, || [
            EventType::ExecutionCompleted,
            EventType::PodTerminated
        ]
        .iter()
        .all(|t| events.count(&id, *t) > 0))
        .await
    );
    let completed = events.of(&id).into_iter().find_map(|e| match e.payload {
        EventPayload::ExecutionCompleted(done) => Some(done),
        _ => None,
    });
    assert_eq!(completed.unwrap().outcome.exit_code, Some(0));
    // Deleted by the monitor (KWOK finishes the graceful delete).
    assert!(
        wait_until_async(WAIT, || async {
            admin.get_opt(&name).await.unwrap().is_none()
        })
        .await,
        "pod not deleted"
    );
    assert!(!monitor.tracked().contains(&name));
}

/// The watch resumes from the list's resourceVersion and sees what happened after the list.
/// (A 410 Gone could not be provoked here: kube-apiserver 1.34 served a watch from version 1
/// even after etcd compaction, from its watch cache; 410 handling is covered by the mocked API.)
#[tokio::test]
#[ignore = "needs a real kube-apiserver: scripts/kube-e2e.sh"]
async fn kube_e2e_the_watch_continues_from_the_list_version() {
    let monitor_client = client(Some("system:serviceaccount:kiln:kiln-pod-monitor")).await;
    let observer = observe().await;
    let producer = observer.producer.clone();
    let settings = KubernetesConfig {
        reconcile_interval_seconds: 3,
        ..KubernetesConfig::default()
    };
    let mut monitor = KubeMonitor::new(
        Api::namespaced(monitor_client, NS),
        producer,
        &settings,
        "pod-monitor",
    );
    let version = monitor.reconcile().await.unwrap();

    let admin: Api<Pod> = Api::namespaced(client(None).await, NS);
    let id = Uuid::now_v7().to_string();
    admin
        .create(&PostParams::default(), &executor_pod(&id))
        .await
        .unwrap();
    let started = Instant::now();
    monitor.watch(version).await; // ends at the 3 s server-side timeout
    assert!(started.elapsed() < WAIT);
    assert!(
        monitor.tracked().contains(&format!("executor-{id}")),
        "{:?}",
        monitor.tracked()
    );
    admin
        .delete(&format!("executor-{id}"), &Default::default())
        .await
        .unwrap();
}
