//! What every handler shares: configuration slices, infrastructure clients and the registries.

use std::ops::Deref;
use std::sync::Arc;

use mongodb::Database;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use shared::config::{ApiConfig, Config, LimitsConfig};
use shared::kafka::EventProducer;

use crate::auth::jwt::JwtKey;
use crate::languages::LanguageRegistry;
use crate::sse::StreamLimiter;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("api.jwt_secret is empty")]
    EmptyJwtSecret,
    #[error("api.jwt_secret cannot key HMAC-SHA256")]
    JwtKey,
    #[error("redis URL is invalid")]
    RedisUrl(#[source] redis::RedisError),
}

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub api: ApiConfig,
    pub limits: LimitsConfig,
    pub redis_key_prefix: String,
    pub producer: EventProducer,
    pub db: Database,
    /// Short commands (shared, auto-reconnecting).
    pub redis: ConnectionManager,
    /// Opens one dedicated connection per SSE stream: `XREAD BLOCK` holds its connection, so it
    /// must not block the shared one.
    pub redis_client: redis::Client,
    pub languages: LanguageRegistry,
    /// Coding agent providers (`kind: "agent"`).
    pub providers: crate::executions::agent::Providers,
    pub jwt: JwtKey,
    pub streams: StreamLimiter,
    pub rate_limiter: crate::ratelimit::RateLimiter,
    pub token_cache: crate::auth::token_cache::TokenCache,
    /// Small updates of `executions` (the api's outbox marks), batched.
    pub execution_updates: shared::mongo::batch::UpdateBatcher,
    /// New executions: concurrent submissions share one insert command.
    pub execution_inserts: shared::mongo::batch::InsertBatcher,
    /// A real argon2id hash to verify against when the user does not exist, so an unknown user
    /// costs the same time as a wrong password.
    pub(crate) dummy_hash: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db.name())
            .finish_non_exhaustive()
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: &Config,
        producer: EventProducer,
        db: Database,
        redis: ConnectionManager,
    ) -> Result<Self, StateError> {
        let secret = config.api.jwt_secret.expose_secret();
        if secret.is_empty() {
            return Err(StateError::EmptyJwtSecret);
        }
        let redis_client =
            redis::Client::open(config.redis.url.expose_secret()).map_err(StateError::RedisUrl)?;
        // Off the latency path (outbox marks cleared after the relay re-announced them):
        // batches linger so one command clears many marks.
        let execution_updates = shared::mongo::batch::UpdateBatcher::spawn_lingering(
            db.clone(),
            shared::executions::EXECUTIONS_COLLECTION,
            256,
            std::time::Duration::from_millis(200),
        );
        let execution_inserts = shared::mongo::batch::InsertBatcher::spawn(
            db.collection(shared::executions::EXECUTIONS_COLLECTION),
            256,
        );
        let rate_limiter = crate::ratelimit::RateLimiter::new(config, &db);
        Ok(Self(Arc::new(Inner {
            api: config.api.clone(),
            limits: config.limits.clone(),
            redis_key_prefix: config.redis.key_prefix.clone(),
            producer,
            db,
            redis,
            redis_client,
            languages: LanguageRegistry::from_config(&config.runtime),
            providers: crate::executions::agent::Providers::new(
                &config.agents,
                config.runtime.kind,
            ),
            jwt: JwtKey::new(secret.as_bytes()).map_err(|_| StateError::JwtKey)?,
            streams: StreamLimiter::new(config.rate_limit.max_streams_per_user),
            rate_limiter,
            token_cache: crate::auth::token_cache::TokenCache::default(),
            execution_updates,
            execution_inserts,
            dummy_hash: tokio::sync::OnceCell::new(),
        })))
    }
}
