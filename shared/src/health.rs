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

use crate::app::Infra;
use crate::lifecycle::Lifecycle;

pub const BUILD_INFO: &str = "kiln_build_info";
pub const HTTP_REQUESTS: &str = "kiln_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "kiln_http_request_duration_seconds";

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
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

#[derive(Clone)]
struct HealthState {
    infra: Infra,
    lifecycle: Lifecycle,
    check_timeout: Duration,
    process: Arc<metrics_process::Collector>,
}

pub fn router(infra: Infra, lifecycle: Lifecycle, check_timeout: Duration) -> Router {
    // Install now so the recorder exists before the first metric is recorded.
    prometheus();
    let process = metrics_process::Collector::default();
    process.describe();
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            infra,
            lifecycle,
            check_timeout,
            process: Arc::new(process),
        })
}

async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "alive" }))).into_response()
}

async fn ready(State(state): State<HealthState>) -> Response {
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let timeout = state.check_timeout;
    let infra = &state.infra;
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
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    ::metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn metrics(State(state): State<HealthState>) -> Response {
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
