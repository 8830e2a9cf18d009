//! Kiln's `saga-orchestrator`: Queue, concurrency slots and execution sagas with their compensations.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes only the service's own components.

use shared::app::{Components, ServiceContext};

pub const SERVICE_NAME: &str = "saga-orchestrator";

/// Builds this service's components.
pub async fn build(_context: ServiceContext) -> anyhow::Result<Components> {
    Ok(Components::default())
}
