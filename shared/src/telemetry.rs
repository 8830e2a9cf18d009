//! Logs, traces and the W3C propagator, set up once per process.
//!
//! A tracer provider is always installed, even without an OTLP endpoint, so spans get real trace
//! ids that travel through Kafka headers and can be correlated later.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("OTLP exporter could not be built")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and shuts down the tracer provider when dropped (at the end of `main`).
#[must_use = "dropping the guard shuts tracing down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests read spans right after producing them).
    pub fn force_flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "span flush failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("tracer provider shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber for `service`, exporting traces over OTLP/HTTP when
/// `telemetry.otlp_endpoint` is set.
pub fn init(
    cfg: &TelemetryConfig,
    service: &'static str,
) -> Result<TelemetryGuard, TelemetryError> {
    let exporter = if cfg.otlp_endpoint.is_empty() {
        None
    } else {
        use opentelemetry_otlp::WithExportConfig;
        Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&cfg.otlp_endpoint)
                .build()?,
        )
    };
    init_with_exporter(cfg, service, exporter)
}

/// Like [`init`] with any exporter; tests pass an in-memory one.
pub fn init_with_exporter<E: SpanExporter + 'static>(
    cfg: &TelemetryConfig,
    service: &'static str,
    exporter: Option<E>,
) -> Result<TelemetryGuard, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment.name", cfg.environment.clone()),
        ])
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))));
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::builder().parse(directives)?,
        _ => EnvFilter::builder().parse(&cfg.log_level)?,
    };
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match cfg.log_format {
        LogFormat::Json => {
            let dispatch = crate::log_trace_ids::DispatchSlot::default();
            let format = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_target(true);
            registry
                .with(dispatch.clone())
                .with(
                    tracing_subscriber::fmt::layer()
                        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                        .event_format(crate::log_trace_ids::WithTraceIds {
                            inner: format,
                            dispatch,
                        }),
                )
                .try_init()?
        }
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// The W3C `traceparent` of the current span, when it belongs to a trace. Events carry it in
/// their metadata, so work that continues an execution later (the saga's outbox and scheduler,
/// pod-monitor watching an executor) stays in the execution's trace.
pub fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut carrier);
    });
    carrier.remove("traceparent")
}

/// The remote context a stored `traceparent` names; `None` when it is not a valid one.
pub fn context_from_traceparent(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}
