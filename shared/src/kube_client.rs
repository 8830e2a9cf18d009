//! The Kubernetes client both k8s-worker and pod-monitor build from `[kubernetes]` (behind the
//! `kube` feature, so services that never talk to a cluster do not compile the client).

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::config::KubernetesConfig;

#[derive(Debug, thiserror::Error)]
pub enum KubeConnectError {
    #[error("reading kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no cluster configuration (in-cluster or kubeconfig): {0}")]
    Infer(String),
    #[error("building the Kubernetes client: {0}")]
    Client(String),
}

/// A client from, in order: the configured kubeconfig file, else the in-cluster service account
/// when running in a pod, else `$KUBECONFIG` / `~/.kube/config` (with the configured context).
pub async fn connect(config: &KubernetesConfig) -> Result<Client, KubeConnectError> {
    let options = KubeConfigOptions {
        context: Some(config.context.clone()).filter(|c| !c.is_empty()),
        ..KubeConfigOptions::default()
    };
    let resolved = if !config.kubeconfig.is_empty() {
        let kubeconfig_error = |message: String| KubeConnectError::Kubeconfig {
            path: config.kubeconfig.clone(),
            message,
        };
        let file = Kubeconfig::read_from(&config.kubeconfig)
            .map_err(|e| kubeconfig_error(e.to_string()))?;
        Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| kubeconfig_error(e.to_string()))?
    } else if options.context.is_some() {
        Config::from_kubeconfig(&options)
            .await
            .map_err(|e| KubeConnectError::Infer(e.to_string()))?
    } else {
        Config::infer()
            .await
            .map_err(|e| KubeConnectError::Infer(e.to_string()))?
    };
    Client::try_from(resolved).map_err(|e| KubeConnectError::Client(e.to_string()))
}

/// The HTTP status of an API error (`None` for transport and decoding errors).
pub fn api_status(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The opt-in test cluster of `scripts/kube-e2e.sh` (its kubeconfig in `KILN_E2E_KUBECONFIG`), as
/// its admin or impersonating `user` (e.g. `system:serviceaccount:kiln:kiln-pod-monitor`), so a
/// test proves what that account's RBAC allows.
#[cfg(feature = "testing")]
pub async fn e2e_client(user: Option<&str>) -> Result<Client, KubeConnectError> {
    let path = std::env::var("KILN_E2E_KUBECONFIG").map_err(|_| {
        KubeConnectError::Infer("KILN_E2E_KUBECONFIG is not set (run scripts/kube-e2e.sh)".into())
    })?;
    let kubeconfig_error = |e: String| KubeConnectError::Kubeconfig {
        path: path.clone(),
        message: e,
    };
    let file = Kubeconfig::read_from(&path).map_err(|e| kubeconfig_error(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(e.to_string()))?;
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ]);
    }
    Client::try_from(config).map_err(|e| KubeConnectError::Client(e.to_string()))
}
