//! Kafka plumbing shared by every service: topic administration, an idempotent producer that
//! carries trace context, and an at-least-once consumer loop with retries and a dead-letter topic.

mod admin;
mod client_config;
pub mod consumer;
pub mod dlq;
mod error;
mod handler;
pub mod headers;
mod message;
pub mod metrics;
mod producer;
pub mod retry;

pub use admin::{ensure_topics, ensure_topics_named};
pub use client_config::base_client_config;
pub use consumer::{ConsumerSettings, run_consumer};
pub use error::KafkaError;
pub use handler::{FailureKind, Handler, HandlerError};
pub use message::InboundMessage;
pub use producer::{Delivered, EventProducer};
