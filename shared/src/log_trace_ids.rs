//! `trace_id` and `span_id` in every JSON log line written inside a span, so a log line leads to
//! its trace (Jaeger) and a trace to its log lines.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Remembers the dispatcher the subscriber is installed in: the formatter asks the
/// OpenTelemetry layer, through it, for the trace id of an event's span.
#[derive(Clone, Default)]
pub(crate) struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        // Registered once per subscriber; a second registration changes nothing.
        if self.0.set(dispatch.downgrade()).is_err() {
            tracing::trace!("dispatch already registered");
        }
    }
}

/// Wraps a JSON event formatter and prepends the ids of the event's span to its object.
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    pub(crate) dispatch: DispatchSlot,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.parent_span().and_then(|span| {
            let dispatch = self.dispatch.0.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span_context = cx.span().span_context().clone();
            span_context
                .is_valid()
                .then(|| (span_context.trace_id(), span_context.span_id()))
        });
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest)) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            _ => writer.write_str(&line),
        }
    }
}
