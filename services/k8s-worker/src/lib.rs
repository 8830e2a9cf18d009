//! Kiln's `k8s-worker`: Creates and deletes the hardened executors (Kubernetes pods or local sandboxes).
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes only the service's own components.

use shared::app::{Components, ServiceContext};

pub const SERVICE_NAME: &str = "k8s-worker";

/// Builds this service's components.
pub async fn build(_context: ServiceContext) -> anyhow::Result<Components> {
    Ok(Components::default())
}
