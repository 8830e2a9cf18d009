//! Kiln's `pod-monitor`: watches executors and turns what it sees into executor and execution
//! events (`pod_running`, `execution_started`, live `execution_output`, the terminal execution
//! event and `pod_terminated`).
//!
//! With `runtime.kind = "local"` it watches the local runtime's executor directories; with
//! `"kubernetes"`, the executor pods (`kube`).

mod executor_dir;
pub mod kube;
mod monitor;
mod outcome;
mod state;
mod utf8;
mod watcher;

use std::path::PathBuf;

use anyhow::Context as _;
use shared::app::{Components, ServiceContext};
use shared::config::RuntimeKind;

pub use kube::{KubeMonitor, PERMISSIONS as KUBE_PERMISSIONS};
pub use monitor::Monitor;

pub const SERVICE_NAME: &str = "pod-monitor";

/// Builds this service's components.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let runtime = &context.config.runtime;
    let shutdown = context.lifecycle.shutdown_token();
    if runtime.kind == RuntimeKind::Kubernetes {
        let client = shared::kube_client::connect(&context.config.kubernetes)
            .await
            .context("connecting to the Kubernetes API")?;
        let pods = ::kube::Api::namespaced(client, &runtime.kubernetes_namespace);
        let monitor = KubeMonitor::new(
            pods,
            context.infra.producer.clone(),
            &context.config.kubernetes,
            SERVICE_NAME,
        );
        return Ok(Components::default().spawn("executor-pod-watcher", monitor.run(shutdown)));
    }
    let root = absolute(&runtime.work_dir)?;
    let monitor = Monitor::new(
        root,
        context.infra.producer.clone(),
        context.config.monitor.clone(),
        SERVICE_NAME,
    );
    Ok(Components::default().spawn("local-executor-watcher", monitor.run(shutdown)))
}

/// `runtime.work_dir` is relative to the directory the services run from (the repository root).
fn absolute(path: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(path))
}
