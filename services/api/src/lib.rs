//! Kiln's `api`: HTTP API: stores executions and publishes execution_requested; serves SSE streams.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes the `/api/v1` routes. Tests build the same router with
//! [`AppState::new`] and [`router`].

pub mod auth;
pub mod error;
pub mod executions;
pub mod languages;
mod middleware;
pub mod runtimes;
pub mod setup;
pub mod sse;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use shared::app::{Components, ServiceContext};

pub use error::ApiError;
pub use state::AppState;

pub const SERVICE_NAME: &str = "api";

/// Builds this service's components: indexes and default users, then the routes.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let infra = context.infra;
    let state = AppState::new(&context.config, infra.producer, infra.mongo, infra.redis)?;
    setup::prepare(&state).await?;
    Ok(Components::default().with_routes(router(state)))
}

/// Every `/api/v1` route. The request timeout wraps all of them except the SSE stream, which
/// is meant to stay open.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.api.request_timeout_seconds.max(1));
    let bounded = Router::new()
        .merge(auth::routes::routes())
        .merge(executions::routes::routes())
        .merge(runtimes::routes())
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            middleware::timeout,
        ));
    Router::new()
        .merge(bounded)
        .merge(sse::routes())
        .fallback(middleware::not_found)
        .layer(DefaultBodyLimit::max(state.api.max_body_bytes))
        .with_state(state)
}
