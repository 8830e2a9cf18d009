//! The Kubernetes runtime: one hardened pod per execution, with its inputs in a ConfigMap the pod
//! owns (so garbage collection removes it with the pod).
//!
//! `create` makes the pod first and then the ConfigMap with the pod's uid as owner: the kubelet
//! waits for a missing ConfigMap volume, and a crash between the two leaves no orphan (the
//! redelivered command finds the pod and creates the ConfigMap). Both requests treat 409
//! AlreadyExists as done, so the command is idempotent. pod-monitor deletes pods once their result
//! is published; `delete` here is the cancel path.

pub mod spec;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kiln_runner_protocol::pod::ANNOTATION_CANCELLED;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use shared::config::{KubernetesConfig, LanguageConfig, RuntimeConfig};
use shared::events::ExecutorRef;
use shared::kube_client::api_status;

use crate::runtime::{
    ExecutorRuntime, ExecutorSpec, RuntimeError, executor_name, validate_execution_id,
};
use spec::{FIELD_MANAGER, PodSettings};

/// Every namespaced (resource, verbs) this runtime uses; `k8s/executors/rbac.yaml` grants exactly
/// these (checked by a test). Plus `patch` on its own namespace, by name, for the labels.
pub const PERMISSIONS: &[(&str, &[&str])] = &[
    ("pods", &["create", "delete", "get", "patch"]),
    ("configmaps", &["create"]),
    ("networkpolicies", &["create", "patch"]),
];

const CONFLICT: u16 = 409;
const NOT_FOUND: u16 = 404;
const UNPROCESSABLE: u16 = 422;

#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    settings: PodSettings,
    /// Every configured language: the image, not this host, decides what runs.
    languages: Vec<LanguageConfig>,
}

impl KubeRuntime {
    /// A runtime over `client`; refuses a namespace shared with anything else.
    pub fn new(
        client: Client,
        runtime: &RuntimeConfig,
        kubernetes: &KubernetesConfig,
    ) -> Result<KubeRuntime, RuntimeError> {
        let settings = PodSettings::from_config(runtime, kubernetes);
        if settings.namespace == "default" || settings.namespace.starts_with("kube-") {
            return Err(RuntimeError::Invalid(format!(
                "executors must not run in namespace {:?}; use a dedicated one such as kiln-executors",
                settings.namespace
            )));
        }
        Ok(KubeRuntime {
            client,
            settings,
            languages: runtime.languages.clone(),
        })
    }

    /// Connects with `[kubernetes]` and prepares the namespace.
    pub async fn connect(
        runtime: &RuntimeConfig,
        kubernetes: &KubernetesConfig,
    ) -> Result<KubeRuntime, RuntimeError> {
        let client = shared::kube_client::connect(kubernetes)
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        let this = KubeRuntime::new(client, runtime, kubernetes)?;
        this.prepare_namespace().await?;
        Ok(this)
    }

    pub fn settings(&self) -> &PodSettings {
        &self.settings
    }

    pub fn languages(&self) -> &[LanguageConfig] {
        &self.languages
    }

    /// Applies (server-side, only the fields we own) the Pod Security `restricted` labels to the
    /// namespace and the deny-all NetworkPolicy. The namespace itself must already exist
    /// (`k8s/executors/namespace.yaml`): k8s-worker may not create namespaces.
    pub async fn prepare_namespace(&self) -> Result<(), RuntimeError> {
        let namespace = &self.settings.namespace;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .patch(
                namespace,
                &apply,
                &Patch::Apply(spec::namespace_labels(namespace)?),
            )
            .await
            .map_err(api_error(format!("labelling namespace {namespace}")))?;
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), namespace);
        policies
            .patch(
                spec::DENY_ALL_POLICY,
                &apply,
                &Patch::Apply(spec::deny_all_policy(namespace)?),
            )
            .await
            .map_err(api_error(format!("applying {}", spec::DENY_ALL_POLICY)))?;
        tracing::info!(%namespace, "executor namespace ready (restricted, deny-all network)");
        Ok(())
    }

    fn language(&self, spec: &ExecutorSpec) -> Result<&LanguageConfig, RuntimeError> {
        self.languages
            .iter()
            .find(|l| {
                l.lang == spec.lang
                    && (spec.lang_version.is_empty() || l.version == spec.lang_version)
            })
            .ok_or_else(|| RuntimeError::UnknownLanguage {
                lang: spec.lang.clone(),
                version: spec.lang_version.clone(),
            })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

/// API errors: an invalid object is permanent, anything else (unreachable, forbidden until an
/// operator fixes RBAC, throttled) is retried.
fn api_error(context: String) -> impl FnOnce(kube::Error) -> RuntimeError {
    move |error| match api_status(&error) {
        Some(UNPROCESSABLE) => RuntimeError::Invalid(format!("{context}: {error}")),
        _ => RuntimeError::Unavailable(format!("{context}: {error}")),
    }
}

impl ExecutorRuntime for KubeRuntime {
    async fn create(&self, spec: &ExecutorSpec) -> Result<ExecutorRef, RuntimeError> {
        validate_execution_id(&spec.execution_id)?;
        if spec.agent.is_some() {
            return Err(RuntimeError::Invalid(
                "agent executions run only on the local runtime".into(),
            ));
        }
        let language = self.language(spec)?;
        let name = executor_name(&spec.execution_id);
        let pod = spec::executor_pod(spec, language, &self.settings)?;
        let pods = self.pods();
        let created = match pods.create(&PostParams::default(), &pod).await {
            Ok(created) => created,
            Err(error) if api_status(&error) == Some(CONFLICT) => pods
                .get(&name)
                .await
                .map_err(api_error(format!("reading pod {name}")))?,
            Err(error) => return Err(api_error(format!("creating pod {name}"))(error)),
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let config_map = spec::executor_config_map(spec, language, &self.settings, &uid)?;
        let config_maps: Api<ConfigMap> =
            Api::namespaced(self.client.clone(), &self.settings.namespace);
        match config_maps
            .create(&PostParams::default(), &config_map)
            .await
        {
            Ok(_) => {}
            Err(error) if api_status(&error) == Some(CONFLICT) => {}
            Err(error) => return Err(api_error(format!("creating config map {name}"))(error)),
        }
        Ok(ExecutorRef {
            executor: name,
            node: created.spec.and_then(|s| s.node_name),
        })
    }

    async fn delete(&self, execution_id: &str, reason: &str) -> Result<(), RuntimeError> {
        if validate_execution_id(execution_id).is_err() {
            return Ok(()); // such an executor cannot exist
        }
        let name = executor_name(execution_id);
        let pods = self.pods();
        // The annotation tells pod-monitor the pod went on purpose (not lost).
        let mark =
            serde_json::json!({ "metadata": { "annotations": { ANNOTATION_CANCELLED: reason } } });
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&mark))
            .await
        {
            Ok(_) => {}
            Err(error) if api_status(&error) == Some(NOT_FOUND) => return Ok(()),
            Err(error) => return Err(api_error(format!("marking pod {name} cancelled"))(error)),
        }
        match pods.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(error) if api_status(&error) == Some(NOT_FOUND) => Ok(()),
            Err(error) => Err(api_error(format!("deleting pod {name}"))(error)),
        }
    }
}
