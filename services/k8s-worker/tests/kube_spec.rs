//! The Kubernetes runtime's objects: snapshots of the pod and ConfigMap, and agreement between
//! the code and the manifests in `k8s/executors/` (names, labels, policies, RBAC, limits), plus a
//! strict schema check of every manifest against the Kubernetes API types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_worker::kube::spec::{
    DENY_ALL_POLICY, PodSettings, deny_all_policy, executor_config_map, executor_pod,
    namespace_labels,
};
use k8s_worker::{ExecutorMeta, ExecutorSpec};
use serde_json::Value;
use shared::config::{Config, KubernetesConfig, LanguageConfig, RuntimeConfig};
use shared::events::ExecutionLimits;
use uuid::Uuid;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped config.toml, so the languages and images are the real ones.
fn config() -> Config {
    Config::load(&repo().join("config.toml")).expect("config.toml loads")
}

fn language(config: &Config, lang: &str) -> LanguageConfig {
    config
        .runtime
        .languages
        .iter()
        .find(|l| l.lang == lang)
        .cloned()
        .unwrap()
}

fn spec(stdin: Option<&str>) -> ExecutorSpec {
    ExecutorSpec {
        execution_id: "0190f0a0-1111-7000-8000-000000000001".into(),
        lang: "python".into(),
        lang_version: "3.11".into(),
        script: "print('hi')\n".into(),
        stdin: stdin.map(Into::into),
        limits: ExecutionLimits {
            timeout_seconds: 10,
            memory_mb: 256,
            max_processes: 64,
            max_output_bytes: 1 << 20,
            max_file_bytes: 16 << 20,
        },
        // Through JSON, so fields other features add to the meta keep their defaults.
        meta: serde_json::from_value::<ExecutorMeta>(serde_json::json!({
            "user_id": "user@example.com",
            "correlation_id": Uuid::from_u128(2),
            "causation_id": Uuid::from_u128(3),
        }))
        .unwrap(),
        agent: None,
    }
}

fn settings(k: &KubernetesConfig) -> PodSettings {
    PodSettings::from_config(&RuntimeConfig::default(), k)
}

#[test]
fn pod_snapshot() {
    let config = config();
    let pod = executor_pod(
        &spec(None),
        &language(&config, "python"),
        &settings(&KubernetesConfig::default()),
    )
    .unwrap();
    insta::assert_yaml_snapshot!("executor_pod", pod);
}

#[test]
fn pod_snapshot_with_user_namespaces_and_gvisor() {
    let config = config();
    let k = KubernetesConfig {
        host_users: false,
        runtime_class_name: "gvisor".into(),
        ..KubernetesConfig::default()
    };
    let pod = executor_pod(&spec(None), &language(&config, "python"), &settings(&k)).unwrap();
    let pod_spec = pod.spec.unwrap();
    assert_eq!(pod_spec.host_users, Some(false));
    assert_eq!(pod_spec.runtime_class_name.as_deref(), Some("gvisor"));
}

#[test]
fn config_map_snapshot() {
    let config = config();
    let map = executor_config_map(
        &spec(Some("input\n")),
        &language(&config, "python"),
        &settings(&KubernetesConfig::default()),
        "7d3c1f4e-5b7a-4a39-9c1e-3f1b2d4c5e6f",
    )
    .unwrap();
    insta::assert_yaml_snapshot!("executor_config_map", map);
}

/// Every object of every manifest in `dir`, as JSON.
fn manifests(dir: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if !value.is_null() {
                out.push((path.display().to_string(), value));
            }
        }
    }
    out
}

fn find(objects: &[(String, Value)], kind: &str, name: &str) -> Value {
    objects
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} {name} in k8s/executors"))
}

/// Deserialises into the typed object and back: a misspelt or unknown field is dropped by the
/// typed object, so the round trip differs and the check fails (kubectl's strict validation).
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
) -> Result<(), String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if back == *value {
        Ok(())
    } else {
        Err(format!(
            "fields lost in the round trip:\n{value:#}\nbecame\n{back:#}"
        ))
    }
}

#[test]
fn every_executor_manifest_is_a_valid_kubernetes_object() {
    let objects = manifests("k8s/executors");
    assert!(objects.len() >= 10, "{}", objects.len());
    for (path, value) in &objects {
        let kind = value["kind"].as_str().unwrap_or_default();
        let checked = match kind {
            "Namespace" => round_trips::<Namespace>(value),
            "ServiceAccount" => round_trips::<ServiceAccount>(value),
            "Role" => round_trips::<Role>(value),
            "RoleBinding" => round_trips::<RoleBinding>(value),
            "ClusterRole" => round_trips::<ClusterRole>(value),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(value),
            "NetworkPolicy" => round_trips::<NetworkPolicy>(value),
            "ResourceQuota" => round_trips::<ResourceQuota>(value),
            "LimitRange" => round_trips::<LimitRange>(value),
            "DaemonSet" => round_trips::<DaemonSet>(value),
            other => Err(format!("unexpected kind {other}")),
        };
        if let Err(error) = checked {
            panic!("{path}: {kind} {}: {error}", value["metadata"]["name"]);
        }
    }
}

/// The round trip itself must catch a typo, or the check above proves nothing.
#[test]
fn the_schema_check_rejects_an_unknown_field() {
    let mut policy = find(
        &manifests("k8s/executors"),
        "NetworkPolicy",
        DENY_ALL_POLICY,
    );
    policy["spec"]["podSelectr"] = serde_json::json!({});
    assert!(round_trips::<NetworkPolicy>(&policy).is_err());
}

#[test]
fn code_and_manifests_agree() {
    let config = config();
    let objects = manifests("k8s/executors");
    let namespace = RuntimeConfig::default().kubernetes_namespace;
    assert_eq!(config.runtime.kubernetes_namespace, namespace);
    for (path, value) in &objects {
        if value["kind"] != "Namespace" && !value["kind"].as_str().unwrap().starts_with("Cluster") {
            assert_eq!(value["metadata"]["namespace"], namespace.as_str(), "{path}");
        }
    }

    // The namespace carries at least the Pod Security labels k8s-worker applies.
    let manifest_ns = find(&objects, "Namespace", &namespace);
    let code_ns = serde_json::to_value(namespace_labels(&namespace).unwrap()).unwrap();
    for (key, value) in code_ns["metadata"]["labels"].as_object().unwrap() {
        assert_eq!(
            &manifest_ns["metadata"]["labels"][key], value,
            "namespace label {key}"
        );
    }

    // The deny-all policy is the same object in both places, and it selects the executor pods.
    let manifest_policy = find(&objects, "NetworkPolicy", DENY_ALL_POLICY);
    let code_policy = serde_json::to_value(deny_all_policy(&namespace).unwrap()).unwrap();
    assert_eq!(manifest_policy, code_policy);
    let k = KubernetesConfig::default();
    for lang in ["python", "node", "bash", "ruby", "go"] {
        let mut s = spec(None);
        s.lang = lang.into();
        let language = language(&config, lang);
        s.limits.memory_mb = language.memory_mb.unwrap_or(config.limits.memory_mb);
        let pod =
            serde_json::to_value(executor_pod(&s, &language, &settings(&k)).unwrap()).unwrap();
        for (key, value) in code_policy["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &pod["metadata"]["labels"][key], value,
                "{lang}: label {key}"
            );
        }
        // The service account exists there, without a token.
        let account = find(
            &objects,
            "ServiceAccount",
            pod["spec"]["serviceAccountName"].as_str().unwrap(),
        );
        assert_eq!(account["automountServiceAccountToken"], false);
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        // The LimitRange admits the pod's container.
        let limit_range = find(&objects, "LimitRange", "kiln-executors");
        let max_memory = limit_range["spec"]["limits"][0]["max"]["memory"]
            .as_str()
            .unwrap();
        let max_mib: u64 = max_memory.trim_end_matches("Gi").parse::<u64>().unwrap() * 1024;
        let limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
            .as_str()
            .unwrap();
        assert!(
            limit.trim_end_matches("Mi").parse::<u64>().unwrap() <= max_mib,
            "{lang}: {limit}"
        );
    }

    // The pre-puller pulls exactly the configured images.
    let prepuller = find(&objects, "DaemonSet", "kiln-executor-prepuller");
    let pulled: BTreeSet<&str> = prepuller["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    let configured: BTreeSet<&str> = config
        .runtime
        .languages
        .iter()
        .map(|l| l.image.as_str())
        .collect();
    assert_eq!(pulled, configured);
    let quota = find(&objects, "ResourceQuota", "kiln-executors");
    assert!(quota["spec"]["hard"]["pods"].is_string());
}

/// The verbs k8s-worker's code uses (see src/kube/mod.rs), and nothing more, are granted.
#[test]
fn the_worker_role_grants_exactly_the_verbs_it_uses() {
    let objects = manifests("k8s/executors");
    let role = find(&objects, "Role", "kiln-k8s-worker");
    let granted: BTreeSet<(String, String)> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let resources: Vec<String> = serde_json::from_value(rule["resources"].clone()).unwrap();
            let verbs: Vec<String> = serde_json::from_value(rule["verbs"].clone()).unwrap();
            resources
                .into_iter()
                .flat_map(move |r| verbs.clone().into_iter().map(move |v| (r.clone(), v)))
        })
        .collect();
    let used: BTreeSet<(String, String)> = k8s_worker::kube::PERMISSIONS
        .iter()
        .flat_map(|(resource, verbs)| {
            verbs
                .iter()
                .map(move |v| ((*resource).to_owned(), (*v).to_owned()))
        })
        .collect();
    assert_eq!(granted, used);
    let binding = find(&objects, "RoleBinding", "kiln-k8s-worker");
    assert_eq!(binding["subjects"][0]["name"], "kiln-k8s-worker");
    assert_eq!(binding["subjects"][0]["namespace"], "kiln");
    let namespace_role = find(
        &objects,
        "ClusterRole",
        "kiln-k8s-worker-executor-namespace",
    );
    assert_eq!(
        namespace_role["rules"][0]["verbs"],
        serde_json::json!(["patch"])
    );
    assert_eq!(
        namespace_role["rules"][0]["resourceNames"],
        serde_json::json!(["kiln-executors"])
    );
}
