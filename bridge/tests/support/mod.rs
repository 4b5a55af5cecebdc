//! A whole stack per test: a tansu broker, our registry, and the bridge on
//! free loopback ports, with one source per provider. Helpers sign requests
//! as each provider does and read records back through the registry.

#![allow(dead_code, unreachable_pub)]

use apache_avro::types::Value as Avro;
use bridge::verify::{Algorithm, mac};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schemas::registry::RunningRegistry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use testbed::Broker;

pub const STRIPE_SECRET: &str = "whsec_test_stripe_secret_0123456789";
pub const GITHUB_SECRET: &str = "github-secret";
pub const SHOPIFY_SECRET: &str = "shpss_shopify_secret";
pub const SLACK_SECRET: &str = "slack-signing-secret";
pub const TWILIO_SECRET: &str = "twilio-auth-token";
pub const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ACME_SECRET: &str = "acme-secret";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const ZOOM_SECRET: &str = "zoom_secret_token_0123456789";
pub const META_VERIFY_TOKEN: &str = "meatyhamhock";
/// RFC 8032 section 7.1 TEST 1 key pair, as the shared Discord vectors use it.
pub const DISCORD_PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
pub const DISCORD_PRIVATE_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
pub const TWITCH_SECRET: &str = "twitch_eventsub_secret_1234567890";
pub const TWILIO_URL: &str = "https://hooks.example.com/webhooks/twilio";

pub struct Stack {
    pub broker: Broker,
    pub registry: RunningRegistry,
    pub url: String,
    pub config: bridge::config::Config,
    bridge: Option<Instance>,
    dir: PathBuf,
}

/// A bridge running in this process until stopped (or dropped: aborted).
pub struct Instance {
    pub url: String,
    pub app: Arc<bridge::app::App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    pub async fn start(config: bridge::config::Config) -> Self {
        let application = bridge::Application::build(config).await.expect("bridge builds");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        Self {
            url: format!("http://{}", application.local_addr()),
            app: application.app(),
            stop: Some(stop),
            task: Some(tokio::spawn(async move {
                application
                    .run_until_stopped(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("bridge runs");
            })),
        }
    }

    /// Graceful stop (as on SIGTERM): in-flight finished, producer flushed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("bridge stops cleanly");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn config_text(brokers: &str, registry: &str, dir: &std::path::Path, extra: &str) -> String {
    config_text_with_catalog(brokers, registry, dir, extra, &workspace().join("schemas/catalog"))
}

pub fn config_text_with_catalog(
    brokers: &str,
    registry: &str,
    dir: &std::path::Path,
    extra: &str,
    catalog: &std::path::Path,
) -> String {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).expect("write secret");
        path.display().to_string()
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
ack_timeout_ms = 3000
retry_after_secs = 7
max_body_bytes = 65536
body_timeout_ms = 1000
admin_token_file = "{admin}"
[kafka]
brokers = "{brokers}"
partitions = 2
[registry]
url = "{registry}"
[catalog]
dir = "{catalog}"
[sources.stripe]
provider = "stripe"
secrets_file = "{stripe}"
key_pointer = "/data/object/id"
version_pointer = "/api_version"
[sources.github]
provider = "github"
secrets_file = "{github}"
key_pointer = "/repository/full_name"
[sources.shopify]
provider = "shopify"
secrets_file = "{shopify}"
key_pointer = "/id"
headers = ["x-shopify-shop-domain"]
[sources.slack]
provider = "slack"
secrets_file = "{slack}"
[sources.twilio]
provider = "twilio"
secrets_file = "{twilio}"
public_url = "{TWILIO_URL}"
[sources.svix]
provider = "standard-webhooks"
secrets_file = "{svix}"
[sources.acme]
provider = "generic"
secrets_file = "{acme}"
event_type_pointer = "/event"
delivery_id_header = "x-acme-delivery"
occurred_at_pointer = "/occurred_at"
[sources.acme.generic]
header = "x-acme-signature"
prefix = "sha256="
timestamp_header = "x-acme-timestamp"
[sources.zoom]
provider = "zoom"
secrets_file = "{zoom}"
[sources.meta]
provider = "meta"
secrets_file = "{meta}"
verify_token_file = "{meta_token}"
[sources.discord]
provider = "discord"
secrets_file = "{discord}"
[sources.twitch]
provider = "twitch"
secrets_file = "{twitch}"
tolerance_secs = 600
[sources.limited]
provider = "stripe"
secrets_file = "{stripe}"
rate_limit_per_sec = 3
{extra}
"#,
        catalog = catalog.display(),
        stripe = secret("stripe", &format!("whsec_old_rotated_out\n{STRIPE_SECRET}")),
        github = secret("github", GITHUB_SECRET),
        shopify = secret("shopify", SHOPIFY_SECRET),
        slack = secret("slack", SLACK_SECRET),
        twilio = secret("twilio", TWILIO_SECRET),
        svix = secret("svix", SVIX_SECRET),
        acme = secret("acme", ACME_SECRET),
        admin = secret("admin-token", ADMIN_TOKEN),
        zoom = secret("zoom", ZOOM_SECRET),
        meta = secret("meta", "meta-app-secret"),
        meta_token = secret("meta-token", META_VERIFY_TOKEN),
        discord = secret("discord", DISCORD_PUBLIC_KEY),
        twitch = secret("twitch", TWITCH_SECRET),
    )
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Self {
        Self::start_with_catalog(extra, &workspace().join("schemas/catalog")).await
    }

    /// The config file of this stack's bridge, for the command-line tools.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.join("bridge.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub async fn start_with_catalog(extra: &str, catalog: &std::path::Path) -> Self {
        Self::start_on(Broker::start().expect("broker starts"), extra, catalog).await
    }

    /// A stack on a broker the test started (durable storage, say).
    pub async fn start_on_broker(broker: Broker, extra: &str) -> Self {
        Self::start_on(broker, extra, &workspace().join("schemas/catalog")).await
    }

    async fn start_on(broker: Broker, extra: &str, catalog: &std::path::Path) -> Self {
        let registry = RunningRegistry::start(&broker.bootstrap(), "_schemas", "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("registry starts");
        let dir = std::env::temp_dir().join(format!("bridge-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = config_text_with_catalog(&broker.bootstrap(), &registry.url, &dir, extra, catalog);
        let config = bridge::config::Config::from_toml(&text).expect("test config is valid");
        std::fs::write(dir.join("bridge.toml"), &text).expect("write config");
        let mut stack = Self { broker, registry, url: String::new(), config, bridge: None, dir };
        stack.start_bridge().await;
        stack
    }

    pub async fn start_bridge(&mut self) {
        let instance = Instance::start(self.config.clone()).await;
        self.url = instance.url.clone();
        self.bridge = Some(instance);
    }

    /// The running bridge's shared state.
    pub fn app(&self) -> Arc<bridge::app::App> {
        self.bridge.as_ref().map(|bridge| bridge.app.clone()).expect("the bridge is running")
    }

    /// Graceful stop (as on SIGTERM): in-flight finished, producer flushed.
    pub async fn stop_bridge(&mut self) {
        if let Some(bridge) = self.bridge.take() {
            bridge.stop().await;
        }
    }

    pub async fn post(
        &self,
        source: &str,
        headers: &[(&str, String)],
        body: impl Into<Vec<u8>>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut request = reqwest::Client::new().post(format!("{}/webhooks/{source}", self.url)).body(body.into());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("bridge answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), headers)
    }

    /// The bridge's `/metrics` page.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url)).await.expect("scrape").text().await.expect("text")
    }

    pub fn decoder(&self) -> AvroDecoder {
        AvroDecoder::new(SrSettings::new(self.registry.url.clone()))
    }

    /// Every record on `topic` (all partitions), waiting until `count` are there.
    pub fn records(&self, topic: &str, count: usize) -> Vec<OwnedMessage> {
        read_records(&self.broker.bootstrap(), topic, count, Duration::from_secs(10))
    }

    /// How many records `topic` holds (0 if it does not exist). Counted by
    /// reading them: tansu 0.6 gives a partition's high watermark as its last
    /// record batch's first offset + 1, so the watermarks tell only whether
    /// there are records and how many at least.
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.broker.bootstrap()).create().expect("consumer");
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else { return 0 };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return 0 };
        let at_least = found
            .partitions()
            .iter()
            .map(|p| {
                consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).map(|(lo, hi)| hi - lo).unwrap_or(0)
            })
            .sum::<i64>();
        if at_least == 0 {
            return 0;
        }
        self.records(topic, at_least as usize).len() as i64
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.bridge.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn read_records(brokers: &str, topic: &str, count: usize, timeout: Duration) -> Vec<OwnedMessage> {
    testbed::read_records(brokers, topic, count, timeout).expect("records")
}

/// The values of the `/metrics` lines that start with `prefix` (a name and
/// `" "`, or a name and the start of its labels), in order.
pub fn metric_values(metrics: &str, prefix: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse().ok()))
        .collect()
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

pub fn field<'v>(record: &'v Avro, path: &str) -> &'v Avro {
    let mut current = record;
    for name in path.split('.') {
        current = match current {
            Avro::Union(_, inner) => match inner.as_ref() {
                Avro::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
                _ => None,
            },
            Avro::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
        .unwrap_or_else(|| panic!("no field {name} in {current:?}"));
    }
    current
}

pub fn string(value: &Avro) -> &str {
    match value {
        Avro::String(s) => s,
        Avro::Union(_, inner) => string(inner),
        other => panic!("not a string: {other:?}"),
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn hex_mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(algorithm, key, parts))
}

pub fn b64_mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(mac(algorithm, key, parts))
}

pub fn sample(name: &str) -> serde_json::Value {
    let path = workspace().join("schemas/samples").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("sample")).expect("sample JSON")
}

/// The Stripe `payment_intent.succeeded` sample with event id `id`.
pub fn stripe_body(id: &str) -> Vec<u8> {
    let mut event = sample("stripe/payment_intent.succeeded.json");
    event["id"] = id.into();
    serde_json::to_vec(&event).expect("json")
}

/// A POST of `body` to `{url}/webhooks/stripe`, signed now with the stripe source's secret.
pub fn signed_stripe_post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    let headers = stripe_headers(&body, STRIPE_SECRET, now());
    let mut request = client.post(format!("{url}/webhooks/stripe")).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

pub fn stripe_headers(body: &[u8], secret: &str, at: i64) -> Vec<(&'static str, String)> {
    let t = at.to_string();
    let signature = hex_mac(Algorithm::Sha256, secret.as_bytes(), &[t.as_bytes(), b".", body]);
    vec![("stripe-signature", format!("t={t},v1={signature}")), ("content-type", "application/json".into())]
}

pub fn github_headers(body: &[u8], event: &str, delivery: &str) -> Vec<(&'static str, String)> {
    let signature = hex_mac(Algorithm::Sha256, GITHUB_SECRET.as_bytes(), &[body]);
    vec![
        ("x-hub-signature-256", format!("sha256={signature}")),
        ("x-github-event", event.into()),
        ("x-github-delivery", delivery.into()),
        ("content-type", "application/json".into()),
    ]
}
