//! The objects the Kubernetes runtime creates, as pure functions of the execution and the config
//! (so the hardening is reviewed in one place and pinned by snapshot tests).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kiln_runner_protocol::pod::{
    ANNOTATION_META, COMPONENT, CONTAINER_FLAG, CONTAINER_NAME, LABEL_COMPONENT,
    LABEL_EXECUTION_ID, LABEL_LANGUAGE, LABEL_MANAGED_BY, LABEL_USER_ID, MANAGED_BY, RUNNER_PATH,
    SPEC_MOUNT, STATE_MOUNT, TMP_MOUNT, label_value,
};
use kiln_runner_protocol::{RunnerSpec, SPEC_FILE, STDIN_FILE, StatePaths};
use serde::de::DeserializeOwned;
use serde_json::json;
use shared::config::{KubernetesConfig, LanguageConfig, RuntimeConfig};
use shared::executions::ExecutorMeta;

use crate::runtime::{ExecutorSpec, RuntimeError, executor_name};

/// Between SIGTERM and SIGKILL when the runner stops a program (as in the local runtime).
const KILL_GRACE_MS: u64 = 100;
/// The pod's own grace after a delete: the runner turns SIGTERM into a cancelled result.
const TERMINATION_GRACE_SECONDS: i64 = 5;
/// The deny-all NetworkPolicy k8s-worker keeps in the executor namespace.
pub const DENY_ALL_POLICY: &str = "kiln-executors-deny-all";
/// Pod Security Admission: executors must pass the `restricted` profile.
pub const POD_SECURITY_LEVEL: &str = "restricted";
/// The field manager of everything k8s-worker applies.
pub const FIELD_MANAGER: &str = "kiln-k8s-worker";

/// The config that shapes executor pods: the namespace and `[kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    pub namespace: String,
    pub pod: KubernetesConfig,
}

impl PodSettings {
    pub fn from_config(runtime: &RuntimeConfig, k: &KubernetesConfig) -> PodSettings {
        PodSettings {
            namespace: runtime.kubernetes_namespace.clone(),
            pod: k.clone(),
        }
    }
}

/// The labels every executor pod carries; pod-monitor selects on the first two.
pub fn executor_labels(spec: &ExecutorSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_COMPONENT.to_owned(), COMPONENT.to_owned()),
        (LABEL_EXECUTION_ID.to_owned(), spec.execution_id.clone()),
        (LABEL_LANGUAGE.to_owned(), label_value(&spec.lang)),
    ]);
    if let Some(user) = spec.meta.user_id.as_deref().map(label_value)
        && !user.is_empty()
    {
        labels.insert(LABEL_USER_ID.to_owned(), user);
    }
    labels
}

/// What the runner runs: the language's command on the script in the read-only ConfigMap, with
/// the pod (not a wrapper or a cgroup of the runner's) confining it.
pub fn runner_spec(
    spec: &ExecutorSpec,
    language: &LanguageConfig,
) -> Result<RunnerSpec, RuntimeError> {
    let script = format!("{SPEC_MOUNT}/{}", language.file_name);
    let argv: Vec<String> = language
        .command
        .iter()
        .map(|arg| arg.replace("{file}", &script))
        .collect();
    let stdin = spec
        .stdin
        .as_ref()
        .map(|_| format!("{SPEC_MOUNT}/{STDIN_FILE}"));
    // Built from JSON so fields this runtime does not use keep their defaults.
    typed(
        "runner spec",
        json!({
            "execution_id": spec.execution_id,
            "argv": argv,
            "env": crate::local::program_env(&language.env),
            "stdin_path": stdin,
            "cwd": StatePaths::new(STATE_MOUNT).work(),
            "timeout_ms": spec.limits.timeout_seconds.saturating_mul(1000),
            "kill_grace_ms": KILL_GRACE_MS,
            "output_limit_bytes": spec.limits.max_output_bytes,
        }),
    )
}

fn typed<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, RuntimeError> {
    serde_json::from_value(value).map_err(|e| RuntimeError::Invalid(format!("{what}: {e}")))
}

/// The executor pod: one hardened container running `kiln-runner --container`.
pub fn executor_pod(
    spec: &ExecutorSpec,
    language: &LanguageConfig,
    settings: &PodSettings,
) -> Result<Pod, RuntimeError> {
    let name = executor_name(&spec.execution_id);
    // The create command's meta plus what pod-monitor reports with it, through JSON so fields
    // added to both (trace context) travel without being named here.
    let mut meta = serde_json::to_value(&spec.meta)
        .map_err(|e| RuntimeError::Invalid(format!("executor meta: {e}")))?;
    meta["execution_id"] = json!(spec.execution_id);
    meta["timeout_seconds"] = json!(spec.limits.timeout_seconds);
    let meta: ExecutorMeta = typed("executor meta", meta)?;
    let meta = serde_json::to_string(&meta)
        .map_err(|e| RuntimeError::Invalid(format!("executor meta: {e}")))?;
    let memory_limit_mb = spec
        .limits
        .memory_mb
        .saturating_add(settings.pod.runner_overhead_mb);
    let memory_request_mb = settings.pod.memory_request_mb.min(memory_limit_mb);
    let deadline = spec
        .limits
        .timeout_seconds
        .saturating_add(settings.pod.startup_grace_seconds);
    let uid = settings.pod.run_as_user;
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "serviceAccountName": settings.pod.executor_service_account,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [{
            "name": CONTAINER_NAME,
            "image": language.image,
            "imagePullPolicy": settings.pod.image_pull_policy,
            "command": [RUNNER_PATH, CONTAINER_FLAG, SPEC_MOUNT, STATE_MOUNT],
            "workingDir": STATE_MOUNT,
            "terminationMessagePath": kiln_runner_protocol::pod::TERMINATION_LOG,
            "terminationMessagePolicy": "File",
            "resources": {
                "requests": {
                    "cpu": settings.pod.cpu_request,
                    "memory": format!("{memory_request_mb}Mi"),
                },
                "limits": {
                    "cpu": settings.pod.cpu_limit,
                    "memory": format!("{memory_limit_mb}Mi"),
                },
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": uid,
                "runAsGroup": uid,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "volumeMounts": [
                { "name": "spec", "mountPath": SPEC_MOUNT, "readOnly": true },
                { "name": "state", "mountPath": STATE_MOUNT },
                { "name": "tmp", "mountPath": TMP_MOUNT },
            ],
        }],
        "volumes": [
            { "name": "spec", "configMap": { "name": name, "defaultMode": 0o444 } },
            { "name": "state", "emptyDir": { "sizeLimit": format!("{}Mi", settings.pod.work_dir_size_mb) } },
            { "name": "tmp", "emptyDir": { "sizeLimit": format!("{}Mi", settings.pod.tmp_size_mb) } },
        ],
    });
    if !settings.pod.host_users {
        pod_spec["hostUsers"] = json!(false);
    }
    if !settings.pod.runtime_class_name.is_empty() {
        pod_spec["runtimeClassName"] = json!(settings.pod.runtime_class_name);
    }
    typed(
        "executor pod",
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": settings.namespace,
                "labels": executor_labels(spec),
                "annotations": { ANNOTATION_META: meta },
            },
            "spec": pod_spec,
        }),
    )
}

/// The pod's inputs: the runner spec, the script and stdin. Owned by the pod, so deleting the pod
/// deletes it.
pub fn executor_config_map(
    spec: &ExecutorSpec,
    language: &LanguageConfig,
    settings: &PodSettings,
    pod_uid: &str,
) -> Result<ConfigMap, RuntimeError> {
    let runner = serde_json::to_string_pretty(&runner_spec(spec, language)?)
        .map_err(|e| RuntimeError::Invalid(format!("runner spec: {e}")))?;
    let mut data = BTreeMap::from([
        (SPEC_FILE.to_owned(), runner),
        (language.file_name.clone(), spec.script.clone()),
    ]);
    if let Some(stdin) = &spec.stdin {
        data.insert(STDIN_FILE.to_owned(), stdin.clone());
    }
    let name = executor_name(&spec.execution_id);
    typed(
        "executor config map",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": settings.namespace,
                "labels": executor_labels(spec),
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "uid": pod_uid,
                    "controller": true,
                    "blockOwnerDeletion": false,
                }],
            },
            "immutable": true,
            "data": data,
        }),
    )
}

/// The Pod Security labels k8s-worker applies to the executor namespace (only these fields).
pub fn namespace_labels(namespace: &str) -> Result<Namespace, RuntimeError> {
    let mut labels = BTreeMap::new();
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            POD_SECURITY_LEVEL.to_owned(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".to_owned(),
        );
    }
    typed(
        "namespace",
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": namespace, "labels": labels },
        }),
    )
}

/// No traffic in or out of any executor pod: user code gets no network at all.
pub fn deny_all_policy(namespace: &str) -> Result<NetworkPolicy, RuntimeError> {
    typed(
        "network policy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": DENY_ALL_POLICY,
                "namespace": namespace,
                "labels": { LABEL_MANAGED_BY: MANAGED_BY },
            },
            "spec": {
                "podSelector": { "matchLabels": { LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: COMPONENT } },
                "policyTypes": ["Ingress", "Egress"],
            },
        }),
    )
}
