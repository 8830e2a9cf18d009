//! Helpers for tests that run against the real Kafka, MongoDB and Redis started by
//! `./deploy.sh infra`. Enabled by the `testing` feature (dev-dependencies only).

use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::config::{Config, ConfigError};

/// The repository's `config.toml` plus `KILN__*` overrides, isolated for one test: its own topic
/// prefix (fresh topics), its own database, 2 partitions, short sessions and fast retries.
/// A child process of a test inherits its parent's prefix and database through
/// `KILN_TEST_PREFIX` and `KILN_TEST_DATABASE`.
pub fn test_config() -> Result<Config, ConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let mut config = Config::load(&path)?;
    config.kafka.topic_prefix = std::env::var("KILN_TEST_PREFIX")
        .unwrap_or_else(|_| format!("t{}_", Uuid::now_v7().simple()));
    config.kafka.partitions = 2;
    config.kafka.session_timeout_ms = 6_000;
    config.kafka.revoke_drain_timeout_ms = 2_000;
    config.kafka.retry.initial_backoff_ms = 10;
    config.kafka.retry.max_backoff_ms = 50;
    config.kafka.retry.max_attempts = 5;
    config.mongo.database = std::env::var("KILN_TEST_DATABASE")
        .unwrap_or_else(|_| format!("kiln_test_{}", Uuid::now_v7().simple()));
    config.redis.key_prefix = format!("{}:", config.kafka.topic_prefix);
    Ok(config)
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// [`wait_until`] for a condition that has to await (a MongoDB read, an HTTP call).
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition().await
}

/// Deletes every topic that starts with `prefix` (tests clean up after themselves).
pub async fn delete_topics_with_prefix(
    config: &crate::config::KafkaConfig,
    prefix: &str,
) -> Result<(), crate::kafka::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        crate::kafka::base_client_config(config, "kiln-test-cleanup")
            .create()
            .map_err(crate::kafka::KafkaError::Client)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(crate::kafka::KafkaError::Metadata)?;
    let names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    admin
        .delete_topics(&refs, &AdminOptions::new())
        .await
        .map_err(crate::kafka::KafkaError::Client)?;
    Ok(())
}

/// A port nobody listens on, below Linux's ephemeral range (32768+). A port the kernel handed
/// out with `bind(0)` comes from that range, and any outgoing connection (a Kafka client's, in
/// a parallel test) may take it before the service binds it: "Address already in use". Each
/// test process walks its own sequence (seeded by its pid), so parallel test binaries rarely
/// try the same port, and a port in use is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        // Below SPAN, so it fits: the sum stays under 32 000.
        let port = FIRST + (NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
