//! Kiln's `api`: HTTP API: stores executions and publishes execution_requested; serves SSE streams.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes only the service's own components.

use shared::app::{Components, ServiceContext};

pub const SERVICE_NAME: &str = "api";

/// Builds this service's components.
pub async fn build(_context: ServiceContext) -> anyhow::Result<Components> {
    Ok(Components::default())
}
