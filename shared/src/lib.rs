//! Code shared by every Kiln service, split by concern.

pub mod agents;
pub mod app;
pub mod config;
pub mod dlq;
pub mod errors;
pub mod events;
pub mod executions;
pub mod health;
pub mod kafka;
#[cfg(feature = "kube")]
pub mod kube_client;
pub mod lifecycle;
mod log_trace_ids;
pub mod mongo;
pub mod notifications;
pub mod redis;
pub mod replay;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
