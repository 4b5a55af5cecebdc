//! Tracing, set up once per process: structured JSON logs on stderr, and,
//! when an OTLP endpoint is configured (the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! variables), OpenTelemetry spans exported over OTLP/HTTP (protobuf).
//!
//! Trace context travels as W3C `traceparent`: an incoming request's header
//! is the parent of the bridge's request span; the produce span's context is
//! written into the record's `traceparent` header; each consumer's process
//! span continues from it. One delivery is one trace, from HTTP to database.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the exporter alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span not yet sent (tests call this before asserting).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// What is logged (and exported) without `RUST_LOG`.
const DEFAULT_DIRECTIVES: &str = "info,rdkafka=warn,sqlx=warn,opentelemetry=warn,h2=warn,hyper=warn,reqwest=warn";

/// Sets up logs and, if the environment names an OTLP endpoint, tracing export.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()));
    init_with(service, configured.then_some(None), None)
}

/// Sets up logs and tracing export: `export` is `None` for no export,
/// `Some(None)` for the endpoint from the environment, `Some(Some(url))` for
/// an explicit traces URL (`http://host:4318/v1/traces`); `logs` is the log
/// filter (`None`: `RUST_LOG`, else the default).
///
/// The log filter filters the logs only: exported spans keep the default
/// level (`info`), so quieter logs (`RUST_LOG=warn`, which also spares the
/// request spans' cost when nothing is exported) do not cut traces short.
pub fn init_with(
    service: &'static str,
    export: Option<Option<String>>,
    logs: Option<&str>,
) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = match logs {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_DIRECTIVES.into()),
    };
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let provider = match export {
        None => None,
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            let exporter = builder.build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_filter(EnvFilter::new(DEFAULT_DIRECTIVES))
    });
    tracing_subscriber::registry().with(logs).with(otel).try_init()?;
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a [(String, String)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct HeaderInjector(Vec<(String, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Makes the span continue the trace of a `traceparent` (and `tracestate`), if valid.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let mut carrier = vec![("traceparent".to_owned(), traceparent.to_owned())];
    if let Some(state) = tracestate {
        carrier.push(("tracestate".to_owned(), state.to_owned()));
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(&carrier));
    let _ = span.set_parent(context);
}

/// The `traceparent` of a span, if it is being traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut injector = HeaderInjector(Vec::new());
    TraceContextPropagator::new().inject_context(&context, &mut injector);
    injector.0.into_iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v)
}

/// The trace id of a span (hex), if it is being traced.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}
