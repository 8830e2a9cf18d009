//! Kiln's `k8s-worker`: Creates and deletes the hardened executors (Kubernetes pods or local sandboxes).
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes the consumer of the executor commands and the runtimes
//! behind it.

mod handler;
pub mod kube;
pub mod languages;
pub mod local;
pub mod runtime;

use std::sync::Arc;

use anyhow::Context as _;
use shared::app::{Components, ServiceContext};
use shared::config::RuntimeKind;
use shared::events::EventType;
use shared::kafka::{ConsumerSettings, run_consumer};

pub use handler::Worker;
pub use kube::KubeRuntime;
pub use local::LocalRuntime;
pub use runtime::{ExecutorMeta, ExecutorRuntime, ExecutorSpec, RuntimeError};

pub const SERVICE_NAME: &str = "k8s-worker";

/// Builds this service's components: the command consumer over the configured runtime.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let config = &context.config;
    match config.runtime.kind {
        RuntimeKind::Local => {
            let base = std::env::current_dir().context("reading the current directory")?;
            let runtime = LocalRuntime::new(&config.runtime)
                .await
                .context("starting the local sandbox runtime")?
                .with_agents(local::Agents::new(&config.agents, &base));
            tracing::info!(
                work_dir = %runtime.work_root().display(),
                languages = ?runtime.languages().all().iter().map(|l| format!("{} {}", l.lang, l.version)).collect::<Vec<_>>(),
                "local runtime ready"
            );
            Ok(serve(&context, runtime))
        }
        RuntimeKind::Kubernetes => {
            let runtime = KubeRuntime::connect(&config.runtime, &config.kubernetes)
                .await
                .context("starting the Kubernetes runtime")?;
            tracing::info!(namespace = %runtime.settings().namespace, "kubernetes runtime ready");
            Ok(serve(&context, runtime))
        }
    }
}

/// The command consumer over `runtime`.
fn serve<R: ExecutorRuntime>(context: &ServiceContext, runtime: R) -> Components {
    let config = &context.config;
    let settings = ConsumerSettings::for_event_types(
        &config.services.k8s_worker.consumer_group,
        &config.kafka.topic_prefix,
        &[EventType::CreatePodCommand, EventType::DeletePodCommand],
        SERVICE_NAME,
        context.lifecycle.drain_timeout(),
    );
    let producer = context.infra.producer.clone();
    let worker = Worker::new(Arc::new(runtime), producer.clone());
    let consumer = run_consumer(
        config.kafka.clone(),
        settings,
        Arc::new(worker),
        producer,
        context.lifecycle.shutdown_token(),
    );
    Components::default().spawn("executor-commands", async move {
        consumer.await.context("executor command consumer")
    })
}
