//! Kiln's `api`: HTTP API: stores executions and publishes execution_requested; serves SSE streams.
//!
//! The binary's life cycle (config, telemetry, infrastructure, health, drain) comes from
//! `shared::app`; this crate contributes the `/api/v1` routes. Tests build the same router with
//! [`AppState::new`] and [`router`].

pub mod admin;
pub mod auth;
pub mod error;
pub mod executions;
pub mod languages;
mod middleware;
pub mod notifications;
pub mod openapi;
pub mod pagination;
pub mod providers;
pub mod ratelimit;
pub mod runtimes;
pub mod scripts;
pub mod settings;
pub mod setup;
pub mod sse;
pub mod state;
pub mod web;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use shared::app::{Components, ServiceContext};
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;
pub use state::AppState;

pub const SERVICE_NAME: &str = "api";

/// Builds this service's components: indexes and default users, then the routes.
pub async fn build(context: ServiceContext) -> anyhow::Result<Components> {
    let infra = context.infra;
    let state = AppState::new(&context.config, infra.producer, infra.mongo, infra.redis)?;
    setup::prepare(&state).await?;
    let relay = executions::relay::run(
        state.db.clone(),
        state.producer.clone(),
        state.execution_updates.clone(),
        context.lifecycle.shutdown_token(),
    );
    Ok(Components::default()
        .with_routes(router(state))
        .spawn("request-relay", relay))
}

/// Routes that answer within the request timeout.
fn bounded_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::routes::routes())
        .merge(executions::routes::routes())
        .merge(runtimes::routes())
        .merge(providers::routes())
        .merge(scripts::routes())
        .merge(settings::routes())
        .merge(notifications::routes())
        .merge(admin::replay::routes())
        .merge(admin::dlq::routes())
        .merge(admin::rate_limits::routes())
}

/// Server-Sent Event streams: meant to stay open, so no timeout.
fn stream_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(sse::routes())
        .merge(notifications::stream_routes())
        .merge(admin::replay::stream_routes())
}

/// Every `/api/v1` route with its OpenAPI description, before any layer. [`router`] serves
/// exactly these and [`openapi::document`] describes exactly these.
pub fn api_routes() -> OpenApiRouter<AppState> {
    openapi::base()
        .merge(bounded_routes())
        .merge(stream_routes())
}

/// Every `/api/v1` route, and the web app for every other path. The request timeout and the
/// rate limits wrap all routes except the SSE streams (capped by count instead).
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.api.request_timeout_seconds.max(1));
    let bounded = bounded_routes()
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ));
    let (routes, _) = openapi::base()
        .merge(bounded)
        .merge(stream_routes())
        .split_for_parts();
    let web = web::WebApp::new(&state.api.static_dir);
    routes
        .fallback(move |request: Request| async move { web.serve(request).await })
        .layer(DefaultBodyLimit::max(state.api.max_body_bytes))
        .with_state(state)
}
