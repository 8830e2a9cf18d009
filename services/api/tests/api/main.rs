//! api against the real MongoDB, Redis and Kafka (`./deploy.sh infra`), each test with its own
//! database, Redis key prefix and topics.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod common;

mod auth;
mod dlq;
mod executions;
mod notifications;
mod openapi;
mod outbox;
mod ratelimit;
mod replay;
mod scripts;
mod settings;
mod sse;
mod web;
