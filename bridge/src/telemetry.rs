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
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{Format, FormatFields, Json, Writer};
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
    use tracing_subscriber::Layer;
    let filter = match logs {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_DIRECTIVES.into()),
    };
    let logs = json_logs(std::io::stderr).with_filter(without_stage_spans(filter));
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
    // Not `.with(otel)` with an `Option`: a `None` layer is interested in
    // every span and event, which would open the spans the logs leave out.
    match otel {
        Some(otel) => tracing_subscriber::registry().with(logs).with(otel).try_init()?,
        None => tracing_subscriber::registry().with(logs).try_init()?,
    }
    Ok(Telemetry { provider })
}

/// The names of the spans of a delivery's stages, opened by `bridge::app`
/// inside its request span: they time the stages in a trace.
pub mod stage {
    /// Verifying the signature.
    pub const VERIFY: &str = "verify";
    /// Transcoding the JSON into Avro.
    pub const TRANSCODE: &str = "transcode";
    /// Producing the record and waiting for its acknowledgement.
    pub const PRODUCE: &str = "produce";
}

const STAGE_SPANS: [&str; 3] = [stage::VERIFY, stage::TRANSCODE, stage::PRODUCE];

/// `filter` for the logs, less the stage spans. A log line written within
/// a stage still carries the request span's fields (source, delivery id)
/// and says itself what failed. When traces are not exported no layer
/// wants the stage spans, so they are not even opened: three spans fewer
/// per webhook, which made the default `info` cost no more CPU than `warn`
/// (BENCHMARKS.md, 2026-11-25).
fn without_stage_spans<S>(filter: EnvFilter) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    let not_a_stage = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.target() == "bridge::app" && STAGE_SPANS.contains(&meta.name()))
    })
    // Says it leaves every level through, so that `filter`'s level stays
    // the process's maximum and disabled `debug!`s cost nothing.
    .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE);
    filter.and(not_a_stage)
}

/// JSON lines, each with the fields of the span it was written in.
fn json_logs<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, SpanFields, Format<Json>, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(SpanFields)
        .with_writer(writer)
}

/// A span's fields for the JSON logs, as one JSON object. tracing-subscriber's
/// own `JsonFields` gathers them into a map of `serde_json::Value`s, and on
/// every `span.record` parses what it wrote back, adds the field and writes
/// it all again: four times per webhook, more than the rest of its handling.
/// This writes each field as it comes and appends recorded ones in place.
struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        let mut object = JsonObject::default();
        fields.record(&mut object);
        writer.write_str(&object.finish())
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let mut object = JsonObject::default();
        fields.record(&mut object);
        let added = object.finish();
        let current = &mut current.fields;
        if !current.ends_with('}') || current == "{}" {
            *current = added;
        } else if added != "{}" {
            current.pop();
            current.push(',');
            current.push_str(&added[1..]);
        }
        Ok(())
    }
}

/// Fields written as the members of one JSON object.
#[derive(Default)]
struct JsonObject(Vec<u8>);

impl JsonObject {
    fn key(&mut self, field: &Field) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        let _ = serde_json::to_writer(&mut self.0, field.name());
        self.0.push(b':');
    }

    fn value(&mut self, field: &Field, value: impl serde::Serialize) {
        self.key(field);
        if serde_json::to_writer(&mut self.0, &value).is_err() {
            self.0.extend_from_slice(b"null");
        }
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        String::from_utf8(self.0).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl Visit for JsonObject {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.value(field, format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, value);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::Layer;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_carry_their_span_fields_including_those_recorded_later() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(json_logs(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "POST /webhooks/{source}",
                webhook.source = "stripe",
                url.path = %"/webhooks/stripe",
                quoted = "a \"b\" \\ c",
                attempt = 3u64,
                webhook.delivery_id = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            span.record("webhook.delivery_id", "evt_1");
            span.record("http.response.status_code", 401u16);
            span.in_scope(|| tracing::warn!(reason = "mismatch", "webhook refused"));
            tracing::info_span!("bare").in_scope(|| tracing::warn!("no fields"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let span = &lines[0]["span"];
        assert_eq!(span["name"], "POST /webhooks/{source}", "{text}");
        assert_eq!(span["webhook.source"], "stripe");
        assert_eq!(span["url.path"], "/webhooks/stripe");
        assert_eq!(span["quoted"], "a \"b\" \\ c");
        assert_eq!(span["attempt"], 3);
        assert_eq!(span["webhook.delivery_id"], "evt_1", "recorded after the span opened");
        assert_eq!(span["http.response.status_code"], 401);
        assert_eq!(lines[0]["fields"]["reason"], "mismatch");
        assert_eq!(lines[1]["span"], serde_json::json!({ "name": "bare" }), "{text}");
    }

    #[test]
    fn log_lines_written_within_a_stage_carry_the_request_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let logs = json_logs(move || writer.clone()).with_filter(without_stage_spans(EnvFilter::new("info")));
        let subscriber = tracing_subscriber::registry().with(logs);
        tracing::subscriber::with_default(subscriber, || {
            let request =
                tracing::info_span!(target: "bridge::app", "POST /webhooks/{source}", webhook.source = "stripe");
            let _in_request = request.enter();
            let produce = tracing::info_span!(target: "bridge::app", "produce", messaging.destination.name = "t");
            produce.in_scope(|| tracing::error!("record not acknowledged; answering 503"));
            // The same name elsewhere is not a stage of a delivery.
            tracing::info_span!(target: "consumers::runner", "produce", n = 1).in_scope(|| tracing::warn!("other"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0]["span"],
            serde_json::json!({ "name": "POST /webhooks/{source}", "webhook.source": "stripe" })
        );
        assert_eq!(lines[1]["span"], serde_json::json!({ "name": "produce", "n": 1 }), "{text}");
    }
}
