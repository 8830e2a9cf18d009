//! Kiln's `dlq-processor`: Retries, parks and re-drives dead-lettered messages.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes only the service's own components.

use shared::app::{Components, ServiceContext};

pub const SERVICE_NAME: &str = "dlq-processor";

/// Builds this service's components.
pub async fn build(_context: ServiceContext) -> anyhow::Result<Components> {
    Ok(Components::default())
}
