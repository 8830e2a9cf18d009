//! `/health/live`, `/health/ready` and `/metrics`, served by every binary.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::app::Infra;
use crate::lifecycle::Lifecycle;

pub const BUILD_INFO: &str = "kiln_build_info";
pub const HTTP_REQUESTS: &str = "kiln_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "kiln_http_request_duration_seconds";

/// Histogram buckets (seconds) for every duration metric: real histograms, so quantiles can be
/// aggregated across replicas, from 1 ms (an in-memory step) to 60 s (a long execution).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_SECONDS)
            .and_then(|builder| builder.install_recorder())
        {
            Ok(handle) => {
                // Histograms keep samples until upkeep folds them; without it memory grows.
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                Some(handle)
            }
            Err(error) => {
                tracing::error!(%error, "prometheus recorder could not be installed; /metrics is empty");
                None
            }
        })
        .as_ref()
}

/// What the health endpoints know about the process: its life cycle, and once the service is
/// built, its infrastructure clients and routes.
#[derive(Clone)]
pub struct Health {
    lifecycle: Lifecycle,
    check_timeout: Duration,
    ready: Arc<OnceLock<(Infra, Router)>>,
    process: Arc<metrics_process::Collector>,
}

impl Health {
    pub fn new(lifecycle: Lifecycle, check_timeout: Duration) -> Self {
        let process = metrics_process::Collector::default();
        process.describe();
        Self {
            lifecycle,
            check_timeout,
            ready: Arc::new(OnceLock::new()),
            process: Arc::new(process),
        }
    }

    /// Called once the service is built: readiness starts checking `infra`, and `routes` are
    /// served (before this they answer 503 `starting`).
    pub fn set_ready(&self, infra: Infra, routes: Router) {
        let routes = routes.layer(axum::middleware::from_fn(track_http));
        if self.ready.set((infra, routes)).is_err() {
            tracing::warn!("service routes were already set");
        }
    }
}

/// Health and metrics routes, with the service's own routes behind them once they exist.
pub fn router(health: Health) -> Router {
    // Install now so the recorder exists before the first metric is recorded.
    prometheus();
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(track_http))
        .fallback(service_routes)
        .with_state(health)
}

async fn service_routes(State(health): State<Health>, request: Request) -> Response {
    match health.ready.get() {
        Some((_, routes)) => match routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        },
        None => starting(),
    }
}

fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "code": "starting", "message": "the service is starting" })),
    )
        .into_response()
}

async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "alive" }))).into_response()
}

async fn ready(State(state): State<Health>) -> Response {
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let Some((infra, _)) = state.ready.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "starting" })),
        )
            .into_response();
    };
    let timeout = state.check_timeout;
    let (kafka, mongo, redis) = tokio::join!(
        check(timeout, infra.producer.check_connected(timeout)),
        check(timeout, crate::mongo::ping(&infra.mongo)),
        check(timeout, crate::redis::ping(&infra.redis)),
    );
    let all_ok = [&kafka, &mongo, &redis].iter().all(|c| *c == "ok");
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if all_ok { "ready" } else { "not_ready" },
        "checks": { "kafka": kafka, "mongo": mongo, "redis": redis },
    });
    (status, axum::Json(body)).into_response()
}

async fn check<E: std::error::Error + 'static>(
    timeout: Duration,
    probe: impl Future<Output = Result<(), E>>,
) -> String {
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(error)) => crate::errors::display_chain(&error),
        Err(_) => format!("no answer within {} ms", timeout.as_millis()),
    }
}

/// A constant 1 labelled with what is running, so dashboards can tell versions apart.
pub fn record_build_info(service: &'static str) {
    prometheus();
    ::metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// Counts and times every HTTP request by route template (never by raw path: ids would explode
/// the label set).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    // A server span per request (probes and scrapes excepted: they would drown the traces), so an
    // execution's trace starts at the request that submitted it.
    let response = if route.starts_with("/health/") || route == "/metrics" {
        next.run(request).await
    } else {
        let span = tracing::info_span!(
            "http.request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        let response = next.run(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    };
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    ::metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn metrics(State(state): State<Health>) -> Response {
    state.process.collect();
    let body = prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
