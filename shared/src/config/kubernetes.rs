//! `[kubernetes]`: how the Kubernetes runtime reaches the cluster and shapes executor pods. Read
//! only when `runtime.kind = "kubernetes"`; the namespace is `runtime.kubernetes_namespace` and the
//! image of each language is `runtime.languages[].image`.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, RuntimeKind};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; empty = in-cluster service account when running in a pod, else
    /// `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: String,
    /// The kubeconfig context; empty = its current context.
    pub context: String,
    /// e.g. `gvisor`; empty = the cluster's default runtime.
    pub runtime_class_name: String,
    /// `false` runs executors in a user namespace (`hostUsers: false`; needs Kubernetes 1.33+
    /// and a node that supports it).
    pub host_users: bool,
    /// The uid and gid executor containers run as (the images' `kiln` user).
    pub run_as_user: i64,
    /// The (token-less) service account executor pods run as.
    pub executor_service_account: String,
    pub image_pull_policy: String,
    /// A pod that cannot pull its image for this long fails with a system error instead of
    /// waiting for its deadline.
    pub image_pull_grace_seconds: u64,
    /// Added to an execution's timeout for the pod's `activeDeadlineSeconds`: scheduling and
    /// container start count against the deadline, the runner's own timeout does not.
    pub startup_grace_seconds: u64,
    /// CPU request and limit of an executor container, as Kubernetes quantities.
    pub cpu_request: String,
    pub cpu_limit: String,
    /// Memory request; the limit is the execution's memory limit plus `runner_overhead_mb`.
    pub memory_request_mb: u64,
    pub runner_overhead_mb: u64,
    /// Size limits of the writable `emptyDir`s: the work directory and `/tmp`.
    pub work_dir_size_mb: u64,
    pub tmp_size_mb: u64,
    /// pod-monitor relists every pod this often, catching any event its watch missed.
    pub reconcile_interval_seconds: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: String::new(),
            context: String::new(),
            runtime_class_name: String::new(),
            host_users: true,
            run_as_user: 10001,
            executor_service_account: "kiln-executor".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_grace_seconds: 60,
            startup_grace_seconds: 30,
            cpu_request: "100m".into(),
            cpu_limit: "1".into(),
            memory_request_mb: 64,
            runner_overhead_mb: 32,
            work_dir_size_mb: 64,
            tmp_size_mb: 256,
            reconcile_interval_seconds: 30,
        }
    }
}

/// A DNS-1123 label, as namespace, service account and runtime class names must be.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    /// Checked only for the Kubernetes runtime, so a local setup never trips over it.
    pub(crate) fn validate_kubernetes(&self) -> Result<(), ConfigError> {
        if self.runtime.kind != RuntimeKind::Kubernetes {
            return Ok(());
        }
        let k = &self.kubernetes;
        let namespace = &self.runtime.kubernetes_namespace;
        if !is_dns_label(namespace) {
            return Err(invalid(
                "runtime.kubernetes_namespace",
                "must be a DNS-1123 label",
            ));
        }
        if namespace == "default" || namespace.starts_with("kube-") {
            return Err(invalid(
                "runtime.kubernetes_namespace",
                "executors need their own namespace, not `default` or a `kube-*` one",
            ));
        }
        if !is_dns_label(&k.executor_service_account) {
            return Err(invalid(
                "kubernetes.executor_service_account",
                "must be a DNS-1123 label",
            ));
        }
        if !k.runtime_class_name.is_empty() && !is_dns_label(&k.runtime_class_name) {
            return Err(invalid(
                "kubernetes.runtime_class_name",
                "must be empty or a DNS-1123 label",
            ));
        }
        if !["Always", "IfNotPresent", "Never"].contains(&k.image_pull_policy.as_str()) {
            return Err(invalid(
                "kubernetes.image_pull_policy",
                "must be Always, IfNotPresent or Never",
            ));
        }
        if k.run_as_user <= 0 {
            return Err(invalid("kubernetes.run_as_user", "must be a non-root uid"));
        }
        let positive = [
            (
                "kubernetes.image_pull_grace_seconds",
                k.image_pull_grace_seconds,
            ),
            ("kubernetes.work_dir_size_mb", k.work_dir_size_mb),
            ("kubernetes.tmp_size_mb", k.tmp_size_mb),
            ("kubernetes.memory_request_mb", k.memory_request_mb),
            (
                "kubernetes.reconcile_interval_seconds",
                k.reconcile_interval_seconds,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key, "must be at least 1"));
        }
        for (key, value) in [
            ("kubernetes.cpu_request", &k.cpu_request),
            ("kubernetes.cpu_limit", &k.cpu_limit),
        ] {
            if !is_cpu_quantity(value) {
                return Err(invalid(key, "must be a CPU quantity such as 250m or 1"));
            }
        }
        for (i, language) in self.runtime.languages.iter().enumerate() {
            if language.image.trim().is_empty() {
                return Err(invalid(
                    &format!("runtime.languages[{i}].image"),
                    "the Kubernetes runtime needs an image for every language",
                ));
            }
        }
        Ok(())
    }
}

/// `250m`, `1`, `0.5`: the CPU quantities an operator writes.
fn is_cpu_quantity(value: &str) -> bool {
    let number = value.strip_suffix('m').unwrap_or(value);
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|b| *b == b'.').count() <= 1
        && number.parse::<f64>().is_ok_and(|n| n > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube_config() -> Config {
        let mut config = Config::default();
        config.runtime.kind = RuntimeKind::Kubernetes;
        config
    }

    fn invalid_key(config: &Config) -> Option<String> {
        match config.validate_kubernetes() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid_and_local_ignores_the_section() {
        assert!(kube_config().validate_kubernetes().is_ok());
        let mut local = Config::default();
        local.runtime.kubernetes_namespace = "default".into();
        assert!(local.validate_kubernetes().is_ok());
    }

    #[test]
    fn the_default_namespace_is_refused() {
        for namespace in ["default", "kube-system", "Not_A_Label", ""] {
            let mut config = kube_config();
            config.runtime.kubernetes_namespace = namespace.into();
            assert_eq!(
                invalid_key(&config).as_deref(),
                Some("runtime.kubernetes_namespace"),
                "{namespace}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut config = kube_config();
        config.kubernetes.cpu_limit = "lots".into();
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("kubernetes.cpu_limit")
        );
        let mut config = kube_config();
        config.kubernetes.run_as_user = 0;
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("kubernetes.run_as_user")
        );
        let mut config = kube_config();
        config.kubernetes.image_pull_grace_seconds = 0;
        assert_eq!(
            invalid_key(&config).as_deref(),
            Some("kubernetes.image_pull_grace_seconds")
        );
        assert!(is_cpu_quantity("250m") && is_cpu_quantity("0.5") && !is_cpu_quantity("0"));
    }
}
