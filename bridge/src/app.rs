//! The delivery path: `POST /webhooks/{source}` → verify → parse → type →
//! deduplicate → pick the schema version → transcode → produce → answer.
//!
//! The answer is 2xx only once Kafka has acknowledged the record:
//! - 200 `accepted`: the typed record is on its topic;
//! - 202 `dead-lettered`: verified, but unparseable, untypeable or not
//!   transcodable: the raw body and the reason are on the dead-letter topic;
//! - 200 `duplicate`: this delivery id was already produced within the window;
//! - 401: forged or stale (nothing produced, counted); 404: unknown source;
//!   413: body over the limit; 409: the same delivery is in flight;
//!   503 + `Retry-After`: Kafka or the registry did not answer in time.

use crate::config::{Config, Provider, SourceConfig};
use crate::deliveries::{Admission, DeliveryLog, DeliveryRecord};
use crate::error::AppError;
use crate::events::{self, Described, Handshake};
use crate::metrics::{Metrics, Outcome};
use crate::schema_ids::SchemaIds;
use crate::sink::{KafkaSink, Produced, SinkError};
use crate::verify::{Inbound, Verified, Verifier};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rdkafka::message::{Header, OwnedHeaders};
use schemas::catalog::{Catalog, CatalogVersion, topic_name, value_subject};
use schemas::doc::Doc;
use schemas::envelope::{Envelope, frame_delivery, generic_payload_schema};
use schemas::transcode::Transcoder;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The time, injectable so tests can replay signed vectors at their `now`.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, unix seconds.
    Fixed(i64),
}

impl Clock {
    /// Milliseconds since the epoch.
    pub fn now_ms(self) -> i64 {
        match self {
            Self::System => chrono::Utc::now().timestamp_millis(),
            Self::Fixed(secs) => secs * 1000,
        }
    }
}

/// A configured source, ready to verify and describe deliveries.
#[derive(Debug)]
pub struct Source {
    /// Its name (the URL path segment).
    pub name: String,
    /// Its configuration.
    pub config: SourceConfig,
    /// Its verifier.
    pub verifier: Verifier,
    /// Its catalog directory.
    pub catalog_source: String,
    /// Its generic schema, for event types without a typed one.
    pub generic: Arc<Typed>,
    /// Meta's subscription verify token.
    pub verify_token: Option<crate::config::Secret>,
    /// The source's rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Its records' CloudEvents `ce_source` header: `/webhooks/{name}`.
    ce_source: String,
    /// Routes worked out for its event types, by event type and version selector.
    routes: std::sync::RwLock<HashMap<RouteKey, Arc<Route>>>,
}

/// An event type and its version selector.
type RouteKey = (String, Option<String>);

/// Where deliveries of one event type (and version selector) of a source
/// go, worked out from the catalog and the topic template once, not per delivery.
#[derive(Debug)]
struct Route {
    topic: String,
    subject: String,
    typed: Arc<Typed>,
    /// The records' CloudEvents `ce_type` header: `{provider}.{event type}`.
    ce_type: String,
    /// The records' `schema_version` header.
    schema_version: String,
}

/// Routes a source remembers; event types beyond this many (a generic
/// source fed ever-new types) are worked out per delivery instead.
const ROUTES_REMEMBERED: usize = 4096;

/// A token bucket: `rate` tokens per second, at most `rate` banked.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateLimit {
    /// A bucket refilled at `per_second`, starting full.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self { rate, state: std::sync::Mutex::new((rate, std::time::Instant::now())) }
    }

    /// Takes a token if one is there.
    pub fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// A schema version ready to encode with.
#[derive(Debug)]
pub struct Typed {
    /// The catalog version.
    pub version: CatalogVersion,
    /// Its transcoder (payload schema).
    pub transcoder: Transcoder,
    /// The registered schema's text.
    pub text: Arc<str>,
}

impl Typed {
    fn new(version: CatalogVersion) -> Self {
        Self {
            transcoder: Transcoder::new(version.payload.clone()),
            text: version.envelope_text.clone().into(),
            version,
        }
    }
}

/// What an internal ingest did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// Produced to its topic now.
    Produced,
    /// Already delivered within the dedup window.
    Duplicate,
    /// Dead-lettered, still unusable, or refused: the answer says why.
    NotProduced {
        /// The HTTP status the route would have answered.
        status: StatusCode,
        /// The answer's JSON body.
        answer: Value,
    },
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub config: Config,
    /// Sources by name.
    pub sources: HashMap<String, Source>,
    /// Typed schemas by (catalog source, event dir, version).
    pub typed: HashMap<(String, String, u32), Arc<Typed>>,
    /// The catalog.
    pub catalog: Catalog,
    /// Schema ids.
    pub schema_ids: SchemaIds,
    /// The producer.
    pub sink: Arc<KafkaSink>,
    /// Dedup.
    pub deliveries: DeliveryLog,
    /// Counters.
    pub metrics: Metrics,
    /// The clock.
    pub clock: Clock,
    /// The admin endpoints' bearer token; `None` disables them.
    pub admin_token: Option<crate::config::Secret>,
    /// Permits for deliveries in flight (`server.max_in_flight`).
    pub in_flight: tokio::sync::Semaphore,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.server.max_body_bytes;
    Router::new()
        .route("/webhooks/{source}", post(receive).get(subscribe))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/deliveries/{source}/{delivery_id}", get(lookup_delivery))
        // The webhook route enforces the limit itself (413 with a reason).
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(app)
}

/// `GET /admin/deliveries/{source}/{delivery_id}` (bearer token): what the
/// bridge did with one delivery.
async fn lookup_delivery(
    State(app): State<Arc<App>>,
    Path((source, delivery_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    use subtle::ConstantTimeEq;
    let Some(token) = &app.admin_token else {
        return (StatusCode::FORBIDDEN, axum::Json(json!({ "error": "admin endpoints are disabled; set server.admin_token_env or server.admin_token_file" }))).into_response();
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) || presented.is_empty() {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "a valid admin bearer token is required" })))
            .into_response();
    }
    match app.deliveries.get(&source, &delivery_id) {
        Some(record) => (StatusCode::OK, axum::Json(delivery_json(&record))).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "error": format!("no delivery {delivery_id} of source {source} within the dedup window"),
                "hint": "refused (forged or stale) deliveries are counted in /metrics, never recorded by id",
            })),
        )
            .into_response(),
    }
}

/// A delivery record as shown to operators.
pub fn delivery_json(record: &DeliveryRecord) -> Value {
    json!({
        "source": record.source,
        "delivery_id": record.delivery_id,
        "received_at": chrono::DateTime::from_timestamp_millis(record.received_at_ms).map(|t| t.to_rfc3339()),
        "verification": "verified",
        "outcome": record.outcome,
        "origin": record.origin,
        "event_type": record.event_type,
        "schema_id": record.schema_id,
        "schema_version": record.schema_version,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "trace_id": record.trace_id,
    })
}

/// `GET /metrics`: the counters and histograms, how many deliveries the
/// deduplication window holds in memory, and the producer's statistics.
async fn metrics(State(app): State<Arc<App>>) -> String {
    use std::fmt::Write;
    let mut out = app.metrics.render();
    let log = &app.deliveries;
    let _ = writeln!(
        out,
        "# HELP bridge_dedup_window_deliveries Deliveries remembered for deduplication (dedup.window_secs).\n\
         # TYPE bridge_dedup_window_deliveries gauge\nbridge_dedup_window_deliveries {}\n\
         # HELP bridge_dedup_max_deliveries At most this many deliveries are remembered (dedup.max_deliveries).\n\
         # TYPE bridge_dedup_max_deliveries gauge\nbridge_dedup_max_deliveries {}\n\
         # HELP bridge_dedup_evicted_total Deliveries forgotten before their window ended, to stay within dedup.max_deliveries.\n\
         # TYPE bridge_dedup_evicted_total counter\nbridge_dedup_evicted_total {}\n\
         # HELP bridge_dedup_reach_seconds How far back a redelivery is recognised now: the window, or less once deliveries were evicted.\n\
         # TYPE bridge_dedup_reach_seconds gauge\nbridge_dedup_reach_seconds {}",
        log.len(),
        log.max_deliveries(),
        log.evicted(),
        log.reach_ms(app.clock.now_ms()) / 1000,
    );
    app.sink.render_metrics(&mut out);
    out
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let (broker, registry) = tokio::join!(app.sink.broker_reachable(), app.schema_ids.client().reachable());
    let status = if broker && registry { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "broker": broker, "registry": registry }))).into_response()
}

/// The answer to a delivery produced: written straight from its fields
/// (a `json!` value would build a map of owned strings per request).
#[derive(serde::Serialize)]
struct AcceptedAnswer<'a> {
    status: &'static str,
    delivery_id: &'a str,
    event_type: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    schema_id: u32,
    schema_version: u32,
}

fn accepted(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Where a verified delivery came in, for the envelope and the headers.
struct Delivery<'a> {
    source: &'a Source,
    headers: &'a HeaderMap,
    verified: &'a Verified,
    received_at_ms: i64,
    origin: &'static str,
}

/// Meta's subscription handshake: `GET ?hub.mode=subscribe&hub.challenge=N&hub.verify_token=T`
/// is answered with `N` when `T` is the source's verify token.
async fn subscribe(
    State(app): State<Arc<App>>,
    Path(source_name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    use subtle::ConstantTimeEq;
    let source = app.sources.get(&source_name).ok_or_else(|| AppError::UnknownSource(source_name.clone()))?;
    let expected = source.verify_token.as_ref().map(|t| t.expose().as_bytes()).unwrap_or_default();
    let presented = query.get("hub.verify_token").map(String::as_bytes).unwrap_or_default();
    let token_ok = !expected.is_empty() && bool::from(expected.ct_eq(presented));
    if query.get("hub.mode").map(String::as_str) != Some("subscribe") || !token_ok {
        app.metrics.forged(&source.name, "verify_token");
        return Err(AppError::Forged(crate::verify::VerifyError::Mismatch));
    }
    app.metrics.delivery(&source.name, Outcome::Handshake);
    Ok((StatusCode::OK, query.get("hub.challenge").cloned().unwrap_or_default()).into_response())
}

async fn receive(
    State(app): State<Arc<App>>,
    Path(source_name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, AppError> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "POST /webhooks/{source}",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/webhooks/{source}",
        url.path = %uri.path(),
        http.response.status_code = tracing::field::Empty,
        webhook.source = %source_name,
        webhook.delivery_id = tracing::field::Empty,
        webhook.outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    crate::telemetry::continue_trace(&span, header("traceparent").filter(|v| is_traceparent(v)), header("tracestate"));
    if let Some(trace_id) = crate::telemetry::trace_id_of(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    let answer = async {
        let source = app.sources.get(&source_name).ok_or_else(|| AppError::UnknownSource(source_name.clone()))?;
        if source.rate_limit.as_ref().is_some_and(|limit| !limit.try_take()) {
            app.metrics.delivery(&source.name, Outcome::RateLimited);
            return Err(AppError::RateLimited(source.name.clone()));
        }
        let Ok(_permit) = app.in_flight.try_acquire() else {
            app.metrics.delivery(&source.name, Outcome::Overloaded);
            return Err(AppError::Unavailable(
                format!("{} deliveries are already in flight", app.config.server.max_in_flight),
                app.config.server.retry_after_secs,
            ));
        };
        let body = read_body(body, &app.config.server).await?;
        let received_at_ms = app.clock.now_ms();
        let verified = tracing::info_span!(
            crate::telemetry::stage::VERIFY,
            webhook.provider = source.config.provider.catalog_name()
        )
        .in_scope(|| source.verify_request(&uri, &headers, body, received_at_ms / 1000))
        .map_err(|error| {
            app.metrics.forged(&source.name, error.label());
            tracing::warn!(source = %source.name, reason = %error, "webhook refused");
            AppError::Forged(error)
        })?;
        let delivery = Delivery { source, headers: &headers, verified: &verified, received_at_ms, origin: "webhook" };
        app.handle_verified(&delivery).await
    }
    .instrument(span.clone())
    .await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    if app.sources.contains_key(&source_name) {
        app.metrics.ack_latency.observe(&source_name, started.elapsed().as_secs_f64());
    }
    span.record("http.response.status_code", status.as_u16());
    answer
}

/// Reads the whole body within `server.body_timeout_ms` (slow clients get
/// 408) and `server.max_body_bytes` (larger bodies get 413).
async fn read_body(body: axum::body::Body, server: &crate::config::ServerConfig) -> Result<Bytes, AppError> {
    let limit = server.max_body_bytes;
    let deadline = Duration::from_millis(server.body_timeout_ms);
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(deadline, http_body_util::BodyExt::collect(limited)).await {
        Err(_) => Err(AppError::SlowBody(server.body_timeout_ms)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(AppError::TooLarge(limit)),
        Ok(Err(error)) => Err(AppError::UnreadableBody(error.to_string())),
    }
}

impl App {
    /// Builds the shared state from `config`: reads secrets and the catalog,
    /// connects the producer, replays the delivery log.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context;
        let catalog = Catalog::load(&config.catalog.dir)
            .with_context(|| format!("loading the schema catalog from {}", config.catalog.dir.display()))?;
        let mut sources = HashMap::new();
        for (name, source) in &config.sources {
            sources.insert(name.clone(), Source::build(name, source)?);
        }
        let sink = Arc::new(KafkaSink::new(&config.kafka, Duration::from_millis(config.server.ack_timeout_ms))?);
        let window = Duration::from_secs(config.dedup.window_secs);
        let deliveries = DeliveryLog::open(
            &config.kafka.brokers,
            &config.kafka.deliveries_topic,
            window,
            config.dedup.max_deliveries,
        )
        .await
        .with_context(|| format!("opening the delivery log on {}", config.kafka.brokers))?;
        let admin_token = config.server.admin_token()?;
        Ok(Arc::new(Self {
            in_flight: tokio::sync::Semaphore::new(config.server.max_in_flight.max(1)),
            admin_token,
            typed: typed_schemas(&catalog),
            catalog,
            sources,
            schema_ids: SchemaIds::new(schemas::client::RegistryClient::new(&config.registry.url)),
            sink,
            deliveries,
            metrics: Metrics::default(),
            clock,
            config,
        }))
    }

    /// Writes the delivery log's pending batch and waits for every record in
    /// flight, at most `timeout` (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        self.deliveries.write_pending(&self.sink);
        self.sink.flush(timeout);
    }

    /// The internal path for events the bridge fetched itself from a
    /// provider's API (reconciliation, replay): no signature check, the same
    /// typing, schemas, topics and deduplication as webhooks, and `origin`
    /// recorded in the envelope.
    pub async fn ingest_internal(
        &self,
        source_name: &str,
        headers: &HeaderMap,
        body: Bytes,
        origin: &'static str,
    ) -> Result<Response, AppError> {
        let source = self.sources.get(source_name).ok_or_else(|| AppError::UnknownSource(source_name.to_owned()))?;
        let verified = Verified::trusted_internal(body);
        let received_at_ms = self.clock.now_ms();
        self.handle_verified(&Delivery { source, headers, verified: &verified, received_at_ms, origin }).await
    }

    /// [`App::ingest_internal`], with the answer read into what happened.
    pub async fn ingest_internal_outcome(
        &self,
        source_name: &str,
        headers: &HeaderMap,
        body: Bytes,
        origin: &'static str,
    ) -> Result<Ingested, AppError> {
        let response = self.ingest_internal(source_name, headers, body, origin).await?;
        let status = response.status();
        let answer = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        Ok(match (status, answer["status"].as_str()) {
            (StatusCode::OK, Some("accepted")) => Ingested::Produced,
            (StatusCode::OK, Some("duplicate")) => Ingested::Duplicate,
            _ => Ingested::NotProduced { status, answer },
        })
    }

    async fn handle_verified(&self, d: &Delivery<'_>) -> Result<Response, AppError> {
        let body = d.verified.body();
        let json = match events::body_json(d.headers, body) {
            Ok(json) => json,
            Err(reason) => return self.dead_letter(d, None, "parse", &reason).await,
        };
        if let Some(handshake) = events::handshake(d.source.config.provider, d.headers, &json) {
            self.metrics.delivery(&d.source.name, Outcome::Handshake);
            return Ok(match handshake {
                Handshake::SlackChallenge(challenge) | Handshake::TwitchChallenge(challenge) => {
                    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "text/plain")], challenge).into_response()
                }
                Handshake::GithubPing => accepted(StatusCode::OK, json!({ "status": "pong" })),
                Handshake::ZoomValidation(plain) => {
                    let encrypted = match &d.source.verifier {
                        Verifier::Zoom(zoom) => zoom.encrypt_token(&plain),
                        _ => String::new(),
                    };
                    accepted(StatusCode::OK, json!({ "plainToken": plain, "encryptedToken": encrypted }))
                }
                Handshake::DiscordPing => accepted(StatusCode::OK, json!({ "type": 1 })),
                Handshake::DiscordWebhookPing => StatusCode::NO_CONTENT.into_response(),
            });
        }
        let described = match events::describe(&d.source.config, d.headers, &json, body) {
            Ok(described) => described,
            Err(reason) => return self.dead_letter(d, None, "describe", &reason).await,
        };
        tracing::Span::current().record("webhook.delivery_id", described.delivery_id.as_str());
        let _in_flight = match self.deliveries.admit(&d.source.name, &described.delivery_id, d.received_at_ms) {
            Admission::New(mark) => Some(mark),
            // Replaying a dead letter: the earlier attempt is exactly what is being repaired.
            Admission::Duplicate(record) if d.origin == "replay" && record.outcome == "dead-lettered" => None,
            Admission::Duplicate(record) => {
                self.metrics.delivery(&d.source.name, Outcome::Duplicate);
                return Ok(accepted(
                    StatusCode::OK,
                    json!({ "status": "duplicate", "delivery_id": record.delivery_id, "topic": record.topic,
                            "partition": record.partition, "offset": record.offset }),
                ));
            }
            Admission::InFlight => {
                self.metrics.delivery(&d.source.name, Outcome::InFlight);
                return Err(AppError::InFlight(described.delivery_id));
            }
        };
        let route = self.route(d.source, &described);
        let (topic, typed, subject) = (&route.topic, &route.typed, &route.subject);
        let payload_json = if Arc::ptr_eq(typed, &d.source.generic) {
            let id = json.get("id").and_then(|v| match v {
                Doc::String(s) => Some(Doc::String(s.clone())),
                Doc::Number(n) if n.is_i64() => Some(Doc::String(n.to_string().into())),
                _ => None,
            });
            Doc::Object(vec![("id".into(), id.unwrap_or(Doc::Null)), ("json".into(), Doc::String(body_text(body)))])
        } else {
            json
        };
        let transcoding =
            tracing::info_span!(crate::telemetry::stage::TRANSCODE, webhook.schema_version = typed.version.version);
        let mut payload = Vec::with_capacity(body.len());
        if let Err(error) = transcoding.in_scope(|| typed.transcoder.encode(&payload_json, &mut payload)) {
            let reason = format!("does not fit {} v{}: {error}", typed.version.path.display(), typed.version.version);
            return self.dead_letter(d, Some(&described), "transcode", &reason).await;
        }
        let schema_id = match self.schema_ids.id_for(subject, &typed.text).await {
            Ok(id) => id,
            Err(schemas::client::ClientError::Incompatible(message)) => {
                let reason = format!("the registry refuses {} for {subject}: {message}", typed.version.path.display());
                return self.dead_letter(d, Some(&described), "registry", &reason).await;
            }
            Err(error) => {
                self.metrics.delivery(&d.source.name, Outcome::RegistryUnavailable);
                return Err(AppError::Unavailable(error.to_string(), self.config.server.retry_after_secs));
            }
        };
        let unauthenticated_payload = d.source.config.provider == Provider::Mailgun;
        let mut selected_headers: Vec<(&str, &str)> = d
            .source
            .config
            .headers
            .iter()
            .filter_map(|name| d.headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map(|v| (name.as_str(), v)))
            .collect();
        if unauthenticated_payload {
            selected_headers.push(("payload_authenticated", "false"));
        }
        let raw = d.source.config.keep_raw.then(|| body_text(body));
        let envelope = Envelope {
            delivery_id: &described.delivery_id,
            source: &d.source.name,
            event_type: &described.event_type,
            schema_version: typed.version.version as i32,
            received_at_ms: d.received_at_ms,
            occurred_at_ms: described.occurred_at_ms,
            origin: d.origin,
            headers: selected_headers,
            raw: raw.as_deref(),
        };
        let record = frame_delivery(schema_id, &envelope, &payload);
        let producing = tracing::info_span!(
            crate::telemetry::stage::PRODUCE,
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %topic,
            messaging.message.id = %described.delivery_id,
            messaging.kafka.destination.partition = tracing::field::Empty,
            messaging.kafka.offset = tracing::field::Empty,
        );
        let traceparent = crate::telemetry::traceparent_of(&producing);
        let (mut headers, traceparent_sent) = record_headers(d, &described, &route, schema_id, traceparent);
        if unauthenticated_payload {
            // Mailgun signs a token, not the payload: say so to every consumer.
            headers = headers.insert(Header { key: "payload_authenticated", value: Some("false") });
        }
        let produced = {
            use tracing::Instrument;
            self.produce(topic, described.key.as_deref().map(str::as_bytes), &record, headers, &d.source.name)
                .instrument(producing.clone())
                .await?
        };
        producing.record("messaging.kafka.destination.partition", produced.partition);
        producing.record("messaging.kafka.offset", produced.offset);
        self.deliveries.record(
            &self.sink,
            DeliveryRecord {
                source: d.source.name.clone(),
                delivery_id: described.delivery_id.clone(),
                received_at_ms: d.received_at_ms,
                outcome: "produced".into(),
                topic: produced.topic.clone(),
                partition: produced.partition,
                offset: produced.offset,
                event_type: Some(described.event_type.clone()),
                schema_id: Some(schema_id),
                schema_version: Some(typed.version.version),
                trace_id: traceparent_trace_id(&traceparent_sent),
                origin: Some(d.origin.to_owned()),
            },
        );
        self.metrics.delivery(&d.source.name, Outcome::Accepted);
        tracing::debug!(source = %d.source.name, delivery_id = %described.delivery_id, event_type = %described.event_type,
            topic = %produced.topic, partition = produced.partition, offset = produced.offset, schema_id, "delivery produced");
        let answer = AcceptedAnswer {
            status: "accepted",
            delivery_id: &described.delivery_id,
            event_type: &described.event_type,
            topic: &produced.topic,
            partition: produced.partition,
            offset: produced.offset,
            schema_id,
            schema_version: typed.version.version,
        };
        Ok((StatusCode::OK, axum::Json(answer)).into_response())
    }

    /// The route of a delivery: remembered per source, event type and selector.
    fn route(&self, source: &Source, described: &Described) -> Arc<Route> {
        let key = (described.event_type.clone(), described.selector.clone());
        if let Some(route) = source.routes.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return route.clone();
        }
        let topic = topic_name(&self.config.kafka.topic_template, &source.name, &described.event_type);
        let typed = self.schema_for(source, described);
        let route = Arc::new(Route {
            subject: value_subject(&topic),
            topic,
            ce_type: format!("{}.{}", source.config.provider.catalog_name(), described.event_type),
            schema_version: typed.version.version.to_string(),
            typed,
        });
        let mut routes = source.routes.write().unwrap_or_else(|e| e.into_inner());
        if routes.len() < ROUTES_REMEMBERED {
            routes.insert(key, route.clone());
        }
        route
    }

    fn schema_for(&self, source: &Source, described: &Described) -> Arc<Typed> {
        self.catalog
            .find(&source.catalog_source, &described.event_type)
            .map(|event| event.select(described.selector.as_deref()))
            .and_then(|version| {
                self.typed.get(&(source.catalog_source.clone(), event_dir(version), version.version)).cloned()
            })
            .unwrap_or_else(|| source.generic.clone())
    }

    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        record: &[u8],
        headers: OwnedHeaders,
        source: &str,
    ) -> Result<Produced, AppError> {
        let deadline = Duration::from_millis(self.config.server.ack_timeout_ms);
        let unavailable = |error: SinkError| {
            self.metrics.delivery(source, Outcome::BrokerUnavailable);
            tracing::error!(%error, topic, "record not acknowledged; answering 503");
            AppError::Unavailable(error.to_string(), self.config.server.retry_after_secs)
        };
        tokio::time::timeout(deadline, self.sink.ensure_topic(topic))
            .await
            .map_err(|_| unavailable(SinkError::Timeout(deadline)))?
            .map_err(unavailable)?;
        let started = std::time::Instant::now();
        let produced = self.sink.produce(topic, key, record, headers, deadline).await.map_err(unavailable)?;
        self.metrics.produce_latency.observe(topic, started.elapsed().as_secs_f64());
        Ok(produced)
    }

    async fn dead_letter(
        &self,
        d: &Delivery<'_>,
        described: Option<&Described>,
        stage: &str,
        reason: &str,
    ) -> Result<Response, AppError> {
        let body = d.verified.body();
        let delivery_id = described.map(|x| x.delivery_id.clone()).unwrap_or_else(|| events::body_digest_id(body));
        if d.origin == "replay" {
            // A replayed dead letter that still does not fit stays where it is.
            return Ok(accepted(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "status": "still-unusable", "delivery_id": delivery_id, "stage": stage, "reason": reason }),
            ));
        }
        if let Admission::Duplicate(record) = self.deliveries.admit(&d.source.name, &delivery_id, d.received_at_ms) {
            self.metrics.delivery(&d.source.name, Outcome::Duplicate);
            return Ok(accepted(StatusCode::OK, json!({ "status": "duplicate", "delivery_id": record.delivery_id })));
        }
        let content_type = d.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "dlq_reason", value: Some(reason) })
            .insert(Header { key: "dlq_stage", value: Some(stage) })
            .insert(Header { key: "source", value: Some(d.source.name.as_str()) })
            .insert(Header { key: "delivery_id", value: Some(delivery_id.as_str()) })
            .insert(Header { key: "event_type", value: described.map(|x| x.event_type.as_str()) })
            .insert(Header { key: "received_at", value: Some(&d.received_at_ms.to_string()) })
            .insert(Header { key: "original_content_type", value: Some(content_type.as_str()) })
            .insert(Header { key: "original_headers", value: Some(original_headers(d.headers).as_str()) });
        let topic = self.config.kafka.dead_letter_topic.clone();
        let produced = self.produce(&topic, Some(delivery_id.as_bytes()), body, headers, &d.source.name).await?;
        self.deliveries.record(
            &self.sink,
            DeliveryRecord {
                source: d.source.name.clone(),
                delivery_id: delivery_id.clone(),
                received_at_ms: d.received_at_ms,
                outcome: "dead-lettered".into(),
                topic: produced.topic.clone(),
                partition: produced.partition,
                offset: produced.offset,
                event_type: described.map(|x| x.event_type.clone()),
                schema_id: None,
                schema_version: None,
                trace_id: crate::telemetry::trace_id_of(&tracing::Span::current()),
                origin: Some(d.origin.to_owned()),
            },
        );
        self.metrics.delivery(&d.source.name, Outcome::DeadLettered);
        tracing::warn!(source = %d.source.name, %delivery_id, stage, reason, topic = %produced.topic, offset = produced.offset, "delivery dead-lettered");
        Ok(accepted(
            StatusCode::ACCEPTED,
            json!({ "status": "dead-lettered", "delivery_id": delivery_id, "stage": stage, "reason": reason,
                    "topic": produced.topic, "partition": produced.partition, "offset": produced.offset }),
        ))
    }
}

/// The body as text: borrowed when it is UTF-8 (as every body that parsed
/// as JSON is), with U+FFFD for the bad bytes otherwise. `from_utf8` checks
/// first because it is the fast check: `from_utf8_lossy` walks the bytes in
/// chunks, about five instructions a byte (49 000 for a 9 KB GitHub push).
fn body_text(body: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(body),
    }
}

/// The request headers as a JSON object, for the dead-letter record, so a
/// replay can type the delivery again (credentials left out).
fn original_headers(headers: &HeaderMap) -> String {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "cookie" | "proxy-authorization"))
        .filter_map(|(name, value)| {
            value.to_str().ok().map(|v| (name.as_str().to_owned(), Value::String(v.to_owned())))
        })
        .collect();
    Value::Object(map).to_string()
}

fn event_dir(version: &CatalogVersion) -> String {
    version.path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default().to_owned()
}

/// The CloudEvents Kafka binary-binding headers, trace context and ids.
fn record_headers(
    d: &Delivery<'_>,
    described: &Described,
    route: &Route,
    schema_id: u32,
    traced: Option<String>,
) -> (OwnedHeaders, String) {
    let time_ms = described.occurred_at_ms.unwrap_or(d.received_at_ms);
    let time = chrono::DateTime::from_timestamp_millis(time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // The produce span's context when tracing exports; else the caller's, else a new one.
    let traceparent = traced
        .or_else(|| {
            d.headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|v| is_traceparent(v)).map(str::to_owned)
        })
        .unwrap_or_else(new_traceparent);
    let schema_id = schema_id.to_string();
    let headers = OwnedHeaders::new_with_capacity(10)
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(described.delivery_id.as_str()) })
        .insert(Header { key: "ce_source", value: Some(d.source.ce_source.as_str()) })
        .insert(Header { key: "ce_type", value: Some(route.ce_type.as_str()) })
        .insert(Header { key: "ce_time", value: Some(time.as_str()) })
        .insert(Header { key: "content-type", value: Some("application/avro") })
        .insert(Header { key: "traceparent", value: Some(traceparent.as_str()) })
        .insert(Header { key: "delivery_id", value: Some(described.delivery_id.as_str()) })
        .insert(Header { key: "schema_version", value: Some(route.schema_version.as_str()) })
        .insert(Header { key: "schema_id", value: Some(schema_id.as_str()) });
    (headers, traceparent)
}

/// The trace id in a `traceparent`.
fn traceparent_trace_id(traceparent: &str) -> Option<String> {
    traceparent.split('-').nth(1).map(str::to_owned)
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1] != "00000000000000000000000000000000"
}

fn new_traceparent() -> String {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let (trace, span) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    hex::encode_to_slice(trace.as_bytes(), &mut text[3..35]).expect("16 bytes are 32 hex digits");
    hex::encode_to_slice(&span.as_bytes()[..8], &mut text[36..52]).expect("8 bytes are 16 hex digits");
    String::from_utf8(text.to_vec()).expect("hex digits and dashes are UTF-8")
}

impl Source {
    /// Verifies a request as the route does: the public URL is the
    /// configured one plus the request's query.
    pub fn verify_request(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        now_secs: i64,
    ) -> Result<Verified, crate::verify::VerifyError> {
        let public_url = self.config.public_url.as_ref().map(|base| match uri.query() {
            Some(query) => format!("{base}?{query}"),
            None => base.clone(),
        });
        let inbound = Inbound { headers, body: &body, public_url: public_url.as_deref(), now: now_secs };
        self.verifier.verify(&inbound, body.clone())
    }

    /// Builds a source from its config, reading its secrets.
    pub fn build(name: &str, config: &SourceConfig) -> anyhow::Result<Self> {
        use crate::verify::*;
        let secrets: Vec<String> = config.secrets(name)?.iter().map(|s| s.expose().to_owned()).collect();
        let tolerance = config.tolerance_secs;
        let verifier = match config.provider {
            Provider::Stripe => Verifier::Stripe(stripe::Stripe::new(&secrets, tolerance)),
            Provider::Github => Verifier::Github(github::Github::new(&secrets, config.accept_legacy_sha1)),
            Provider::Shopify => Verifier::Shopify(shopify::Shopify::new(&secrets)),
            Provider::Slack => Verifier::Slack(slack::Slack::new(&secrets, tolerance)),
            Provider::Twilio => Verifier::Twilio(twilio::Twilio::new(&secrets)),
            Provider::StandardWebhooks => Verifier::StandardWebhooks(
                standard_webhooks::StandardWebhooks::new(&secrets, tolerance)
                    .map_err(|e| anyhow::anyhow!("source '{name}': {e}"))?,
            ),
            Provider::Generic => Verifier::GenericHmac(generic_hmac::GenericHmac::new(
                config
                    .generic
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("source '{name}' needs a [sources.{name}.generic] table"))?,
                &secrets,
                tolerance,
            )),
            Provider::Square => Verifier::Square(square::Square::new(&secrets)),
            Provider::Paddle => Verifier::Paddle(paddle::Paddle::new(&secrets, tolerance)),
            Provider::Zoom => Verifier::Zoom(zoom::Zoom::new(&secrets, tolerance)),
            Provider::Meta => Verifier::Meta(meta::Meta::new(&secrets, config.accept_legacy_sha1)),
            Provider::Discord => {
                Verifier::Discord(discord::Discord::new(&secrets).map_err(|e| anyhow::anyhow!("source '{name}': {e}"))?)
            }
            Provider::Linear => Verifier::Linear(linear::Linear::new(&secrets, tolerance)),
            Provider::Intercom => Verifier::Intercom(intercom::Intercom::new(&secrets)),
            Provider::Mailgun => Verifier::Mailgun(mailgun::Mailgun::new(&secrets)),
            Provider::Sendgrid => Verifier::Sendgrid(
                sendgrid::Sendgrid::new(&secrets).map_err(|e| anyhow::anyhow!("source '{name}': {e}"))?,
            ),
            Provider::Pagerduty => Verifier::Pagerduty(pagerduty::Pagerduty::new(&secrets)),
            Provider::Jira => Verifier::Jira(jira::Jira::new(&secrets)),
            Provider::Gitlab => Verifier::Gitlab(
                gitlab::Gitlab::new(&secrets, tolerance).map_err(|e| anyhow::anyhow!("source '{name}': {e}"))?,
            ),
            Provider::Twitch => Verifier::Twitch(twitch::Twitch::new(&secrets, tolerance)),
        };
        let verify_token = config.verify_token(name)?;
        let catalog_source = config.schemas.clone().unwrap_or_else(|| config.provider.catalog_name().to_owned());
        let generic = CatalogVersion::from_payload(
            1,
            format!("<built-in generic schema of {name}>").into(),
            generic_payload_schema(name),
        )?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            verifier,
            catalog_source,
            generic: Arc::new(Typed::new(generic)),
            verify_token,
            rate_limit: config.rate_limit_per_sec.map(RateLimit::new),
            ce_source: format!("/webhooks/{name}"),
            routes: std::sync::RwLock::default(),
        })
    }
}

/// Prepares every typed schema of the catalog for encoding.
pub fn typed_schemas(catalog: &Catalog) -> HashMap<(String, String, u32), Arc<Typed>> {
    let mut typed = HashMap::new();
    for event in catalog.events() {
        for version in &event.versions {
            typed.insert(
                (event.source.clone(), event.event.clone(), version.version),
                Arc::new(Typed::new(version.clone())),
            );
        }
    }
    typed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_traceparent_is_valid_sampled_and_new_each_time() {
        let (first, second) = (new_traceparent(), new_traceparent());
        for traceparent in [&first, &second] {
            assert!(is_traceparent(traceparent), "{traceparent}");
            assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"), "{traceparent}");
            assert_eq!(traceparent.len(), 55, "{traceparent}");
        }
        assert_ne!(first[3..35], second[3..35], "trace ids");
        assert_ne!(first[36..52], second[36..52], "span ids");
    }
}
