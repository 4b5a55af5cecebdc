//! Per test: a tansu broker, our registry, the bridge's internal path to
//! put events on the topics, and a PostgreSQL database of its own (dropped
//! afterwards).

#![allow(dead_code, unreachable_pub)]

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bridge::app::{App, Clock};
use schemas::registry::RunningRegistry;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::Broker;

pub use testbed::Database as TestDb;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Stack {
    pub broker: Broker,
    pub registry: RunningRegistry,
    pub app: Arc<App>,
    pub bridge_config_path: PathBuf,
    pub db: TestDb,
    dir: PathBuf,
}

impl Stack {
    pub async fn start() -> Self {
        let broker = Broker::start().expect("broker");
        let registry = RunningRegistry::start(&broker.bootstrap(), "_schemas", "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("registry");
        let dir = std::env::temp_dir().join(format!("consumers-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "unused-secret").expect("secret");
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[kafka]
brokers = "{brokers}"
partitions = 2
[registry]
url = "{registry}"
[catalog]
dir = "{catalog}"
[sources.stripe]
provider = "stripe"
secrets_file = "{secret}"
key_pointer = "/data/object/id"
version_pointer = "/api_version"
[sources.shopify]
provider = "shopify"
secrets_file = "{secret}"
key_pointer = "/id"
[sources.github]
provider = "github"
secrets_file = "{secret}"
key_pointer = "/repository/full_name"
[sources.acme]
provider = "generic"
secrets_file = "{secret}"
event_type_pointer = "/event"
delivery_id_header = "x-acme-delivery"
[sources.acme.generic]
header = "x-acme-signature"
"#,
            brokers = broker.bootstrap(),
            registry = registry.url,
            catalog = workspace().join("schemas/catalog").display(),
            secret = secret.display(),
        );
        let bridge_config_path = dir.join("bridge.toml");
        std::fs::write(&bridge_config_path, &text).expect("write");
        let config = bridge::config::Config::from_toml(&text).expect("bridge config");
        let app = App::build(config, Clock::System).await.expect("bridge app");
        Self { broker, registry, app, bridge_config_path, db: TestDb::create("test").expect("test database"), dir }
    }

    pub fn consumer_config_text(&self, extra: &str) -> String {
        format!(
            "[kafka]\nbrokers = \"{}\"\nbatch_size = 50\n[registry]\nurl = \"{}\"\n[postgres]\nurl = \"{}\"\n{extra}",
            self.broker.bootstrap(),
            self.registry.url,
            self.db.url
        )
    }

    pub fn consumer_config(&self, extra: &str) -> consumers::config::Config {
        consumers::config::Config::from_toml(&self.consumer_config_text(extra)).expect("consumer config")
    }

    pub fn write_consumer_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.join("consumers.toml");
        std::fs::write(&path, self.consumer_config_text(extra)).expect("write");
        path
    }

    /// Puts an event on its topic through the bridge's internal path.
    pub async fn ingest(&self, source: &str, headers: &[(&str, &str)], body: &Value) -> Value {
        let mut map = HeaderMap::new();
        map.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let response = self
            .app
            .ingest_internal(source, &map, Bytes::from(serde_json::to_vec(body).expect("json")), "webhook")
            .await
            .expect("ingested");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        serde_json::from_slice(&bytes).expect("json answer")
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        consumers::runner::connect(&self.db.url).await.expect("database")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `effect` (as its consumer would) until every `(query, expected)`
/// holds, then stops it.
pub async fn run_until<E: consumers::runner::Effect + 'static>(stack: &Stack, effect: E, until: &[(&str, i64)]) {
    let pool = stack.pool().await;
    let config = stack.consumer_config("");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            consumers::runner::run(&config, &pool, &effect, async {
                let _ = stopped.await;
            })
            .await
            .expect("consumer runs");
        })
    };
    for (query, expected) in until {
        wait_for_count(&pool, query, *expected, Duration::from_secs(20)).await;
    }
    let _ = stop.send(());
    consumer.await.expect("consumer stops");
}

/// Waits until `query` returns `expected`, or panics after `timeout`.
pub async fn wait_for_count(pool: &sqlx::PgPool, query: &str, expected: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (n,): (i64,) = sqlx::query_as(query).fetch_one(pool).await.expect("query");
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{query} = {n}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    serde_json::json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created, "type": kind,
        "livemode": false, "pending_webhooks": 1, "data": { "object": object }
    })
}

pub fn payment_intent(id: &str, amount: i64, status: &str) -> Value {
    serde_json::json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": "usd",
        "status": status, "customer": "cus_1", "created": 1_763_799_000, "livemode": false, "metadata": {}
    })
}

/// One event as the sync reads it off a topic (what the decoder gives).
fn decoded(n: i64, ce_type: &str, delivery: &str, payload: serde_json::Value) -> consumers::record::Decoded {
    let (provider, event_type) = ce_type.split_once('.').expect("provider.event_type");
    // A second apart (a few minutes in all); most sent by their provider
    // up to a third of a second before.
    let received_ms = 1_763_800_000_000i64 + n * 1000;
    let occurred_ms = (n % 3 != 0).then_some(received_ms - (n % 50) * 7);
    consumers::record::Decoded {
        topic: format!("webhooks.{ce_type}"),
        partition: 0,
        offset: n,
        schema_id: 1,
        ce_type: Some(ce_type.to_owned()),
        traceparent: None,
        envelope: serde_json::json!({
            "source": provider, "delivery_id": delivery, "event_type": event_type, "schema_version": 1,
            "origin": "webhook", "received_at": received_ms, "occurred_at": occurred_ms, "payload": payload,
        }),
    }
}

/// `count` events over a few entities of every kind the sync keeps, with
/// few distinct ordering values (many ties), copies of deliveries (some
/// with another payload: the first copy counts) and events that change no
/// entity. The same every time.
pub fn mixed_events(count: i64) -> Vec<consumers::record::Decoded> {
    let mut records = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below) as i64
    };
    for n in 0..count {
        let version = 1_000 + next(4);
        // A copy's kind is mostly its original's: a later copy of the same
        // delivery, with another ordering field and state.
        let origin = if n > 10 && next(8) == 0 { next(n as u64) } else { n };
        let delivery = format!("d{origin}");
        let id = next(3);
        let kind = if next(4) == 0 { next(7) } else { origin % 7 };
        let record = match kind {
            0 => decoded(
                n,
                "stripe.payment_intent.succeeded",
                &delivery,
                serde_json::json!({ "id": delivery, "created": version, "data": { "object": {
                    "id": format!("pi_{id}"), "object": "payment_intent", "amount": n, "currency": "usd",
                    "status": format!("s{n}"), "customer": "cus_1" } } }),
            ),
            1 => decoded(
                n,
                "stripe.charge.refunded",
                &delivery,
                serde_json::json!({ "id": delivery, "created": version, "data": { "object": {
                    "id": format!("ch_{id}"), "object": "charge", "amount": 500, "amount_refunded": n,
                    "currency": "eur", "refunded": n % 2 == 0, "status": "succeeded", "payment_intent": "pi_1" } } }),
            ),
            2 => decoded(
                n,
                "stripe.customer.updated",
                &delivery,
                serde_json::json!({ "id": delivery, "created": version, "data": { "object": {
                    "id": format!("cus_{id}"), "object": "customer", "email": format!("{n}@example.com"),
                    "name": null, "phone": "+1" } } }),
            ),
            3 => decoded(
                n,
                "shopify.orders/updated",
                &delivery,
                serde_json::json!({ "id": 820_000 + id, "name": format!("#{n}"), "email": "a@b.c", "currency": "EUR",
                    "total_price": format!("{n}.50"), "financial_status": "paid", "updated_at": version }),
            ),
            4 => decoded(
                n,
                "github.pull_request",
                &delivery,
                serde_json::json!({ "repository": { "full_name": "acme/api" }, "pull_request": {
                    "number": id, "title": format!("t{n}"), "state": "open", "merged": false, "updated_at": version } }),
            ),
            5 => decoded(
                n,
                "stripe.invoice.paid",
                &delivery,
                serde_json::json!({ "id": delivery, "created": version,
                    "data": { "object": { "id": format!("in_{id}"), "object": "invoice" } } }),
            ),
            _ => decoded(n, "github.push", &delivery, serde_json::json!({ "ref": format!("refs/heads/b{n}") })),
        };
        records.push(record);
    }

    records
}

/// Every row of each query, as text, sorted per query.
pub async fn rows_as_text(pool: &sqlx::PgPool, queries: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for query in queries {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM ({query}) AS t ORDER BY 1"))
            .fetch_all(pool)
            .await
            .expect(query);
        out.extend(rows.into_iter().map(|(row,)| row));
    }
    out
}

/// The same records applied by `effect` into two databases: one record per
/// transaction, and as batches (one of 200, then of 7).
pub struct BothWays {
    pub one_at_a_time: sqlx::PgPool,
    pub batched: sqlx::PgPool,
    _databases: (TestDb, TestDb),
}

pub async fn apply_both_ways<E: consumers::runner::Effect>(
    effect: &E,
    records: &[consumers::record::Decoded],
) -> BothWays {
    use consumers::runner::Received;
    let received: Vec<Received> =
        records.iter().map(|record| Received { record: record.clone(), span: tracing::Span::none() }).collect();
    let (first_batch, rest) = received.split_at(200.min(received.len()));
    let apply = async |kind: &str, batches: Vec<&[Received]>| {
        let database = TestDb::create(&format!("{}_{kind}", effect.name())).expect("database");
        let pool = consumers::runner::connect(&database.url).await.expect("connect");
        for batch in batches {
            let mut tx = pool.begin().await.expect("begin");
            effect.apply(&mut tx, batch).await.expect("apply");
            tx.commit().await.expect("commit");
        }
        (database, pool)
    };
    let (first, one_at_a_time) = apply("sequential", received.chunks(1).collect()).await;
    let (second, batched) = apply("batched", std::iter::once(first_batch).chain(rest.chunks(7)).collect()).await;
    BothWays { one_at_a_time, batched, _databases: (first, second) }
}
