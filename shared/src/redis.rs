//! Redis connection and health check.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::RedisConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis URL is invalid")]
    Url(#[source] redis::RedisError),
    #[error("redis connection failed")]
    Connect(#[source] redis::RedisError),
    #[error("redis ping failed")]
    Ping(#[source] redis::RedisError),
}

/// A reconnecting connection; clones share it.
pub async fn connect(cfg: &RedisConfig) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(cfg.url.expose_secret()).map_err(RedisError::Url)?;
    let timeout = Duration::from_millis(cfg.response_timeout_ms);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(RedisError::Connect)
}

pub async fn ping(conn: &ConnectionManager) -> Result<(), RedisError> {
    let mut conn = conn.clone();
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(RedisError::Ping)
}
