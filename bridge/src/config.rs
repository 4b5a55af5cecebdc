//! Typed configuration: a TOML file, every key overridable from the
//! environment as `BRIDGE_<SECTION>__<KEY>` (e.g. `BRIDGE_KAFKA__BROKERS`,
//! `BRIDGE_SOURCES__STRIPE__TOLERANCE_SECS`). Unknown keys are an error that
//! names the key. Secrets are never in the file: each source names an
//! environment variable (`secrets_env`, comma-separated for rotation) or a
//! file (`secrets_file`, one per line).

use crate::verify::generic_hmac::GenericScheme;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the bridge is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP side.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Kafka side.
    pub kafka: KafkaConfig,
    /// The Confluent-compatible Schema Registry.
    pub registry: RegistryConfig,
    /// Where the Avro payload schemas are.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Duplicate-delivery detection.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Webhook sources by name; each is served at `POST /webhooks/{name}`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest body accepted; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send its request body (slow clients
    /// are answered 408 and disconnected).
    pub body_timeout_ms: u64,
    /// How long to wait for the broker's acknowledgement before answering 503.
    pub ack_timeout_ms: u64,
    /// The `Retry-After` given with a 503, in seconds.
    pub retry_after_secs: u64,
    /// Most deliveries processed at once; beyond it the answer is 503 at
    /// once (back-pressure), so memory stays bounded under overload.
    pub max_in_flight: usize,
    /// Serve HTTPS (rustls) with this certificate and key; absent: plain HTTP
    /// (e.g. behind a TLS-terminating proxy).
    pub tls: Option<TlsConfig>,
    /// Environment variable holding the bearer token of the admin endpoints
    /// (`/admin/...`); without one they are disabled.
    pub admin_token_env: Option<String>,
    /// File holding the admin bearer token (instead of `admin_token_env`).
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            body_timeout_ms: 10_000,
            ack_timeout_ms: 10_000,
            retry_after_secs: 5,
            max_in_flight: 1024,
            tls: None,
            admin_token_env: None,
            admin_token_file: None,
        }
    }
}

/// HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Kafka and topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topic per event type; `{source}` and `{event_type}` are replaced and
    /// the result made a legal topic name.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// Partitions of topics the bridge creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Producer compression: none, gzip, snappy, lz4 or zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Where verified deliveries that cannot be parsed or typed go, raw.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Topic recording delivered ids (kept for the dedup window plus a day), for deduplication across restarts.
    #[serde(default = "default_deliveries_topic")]
    pub deliveries_topic: String,
    /// Extra librdkafka producer properties (e.g. `"linger.ms" = "5"`).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The defaults, for `brokers`.
    pub fn with_brokers(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic_template: default_topic_template(),
            partitions: default_partitions(),
            compression: default_compression(),
            dead_letter_topic: default_dead_letter_topic(),
            deliveries_topic: default_deliveries_topic(),
            producer: BTreeMap::new(),
        }
    }
}

fn default_topic_template() -> String {
    schemas::catalog::DEFAULT_TOPIC_TEMPLATE.into()
}
fn default_partitions() -> i32 {
    3
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_dead_letter_topic() -> String {
    "webhooks.dead-letter".into()
}
fn default_deliveries_topic() -> String {
    "_bridge_deliveries".into()
}

/// The schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of any Confluent-compatible registry.
    pub url: String,
}

/// The schema catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// The catalog directory (`<source>/<event>/v<N>.avsc`).
    pub dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("schemas/catalog") }
    }
}

/// Duplicate detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How long a delivery id is remembered (providers retry for up to 3 days).
    pub window_secs: u64,
    /// At most this many deliveries are remembered, whatever the window:
    /// past it the oldest are forgotten first (counted in
    /// `bridge_dedup_evicted_total`; `bridge_dedup_reach_seconds` says how
    /// far back deduplication still reaches). Each costs about 100 bytes.
    pub max_deliveries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        // 1 750 000 fills the view's 16 hash tables at 131 072 slots each
        // (≈ 160 MiB); a count a little above it would double them.
        Self { window_secs: 3 * 24 * 3600, max_deliveries: 1_750_000 }
    }
}

/// The provider whose scheme a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Stripe.
    Stripe,
    /// GitHub.
    Github,
    /// Shopify.
    Shopify,
    /// Slack Events API.
    Slack,
    /// Twilio.
    Twilio,
    /// Standard Webhooks / Svix.
    StandardWebhooks,
    /// Any HMAC, configured in `[sources.<name>.generic]`.
    Generic,
    /// Square.
    Square,
    /// Paddle Billing.
    Paddle,
    /// Zoom.
    Zoom,
    /// Meta (WhatsApp, Messenger, Instagram).
    Meta,
    /// Discord (the secret is the application's Ed25519 public key, hex).
    Discord,
    /// Linear.
    Linear,
    /// Intercom.
    Intercom,
    /// Mailgun.
    Mailgun,
    /// SendGrid (the secret is the verification public key, base64 DER).
    Sendgrid,
    /// PagerDuty v3.
    Pagerduty,
    /// Jira Cloud.
    Jira,
    /// GitLab.
    Gitlab,
    /// Twitch EventSub.
    Twitch,
}

impl Provider {
    /// The catalog directory of the provider's schemas.
    pub fn catalog_name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::Twilio => "twilio",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Generic => "generic",
            Self::Square => "square",
            Self::Paddle => "paddle",
            Self::Zoom => "zoom",
            Self::Meta => "meta",
            Self::Discord => "discord",
            Self::Linear => "linear",
            Self::Intercom => "intercom",
            Self::Mailgun => "mailgun",
            Self::Sendgrid => "sendgrid",
            Self::Pagerduty => "pagerduty",
            Self::Jira => "jira",
            Self::Gitlab => "gitlab",
            Self::Twitch => "twitch",
        }
    }
}

/// One webhook source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The signature scheme and event conventions.
    pub provider: Provider,
    /// Environment variable holding the secrets, comma-separated (several: rotation).
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// File holding the secrets, one per line.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Window for signed timestamps, seconds either way.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
    /// Catalog directory for this source's schemas (default: the provider's).
    #[serde(default)]
    pub schemas: Option<String>,
    /// JSON pointer of the record key (e.g. `/data/object/id`): one entity's events stay in order.
    #[serde(default)]
    pub key_pointer: Option<String>,
    /// JSON pointer of the value that selects the schema version (Stripe: `/api_version`).
    #[serde(default)]
    pub version_pointer: Option<String>,
    /// Header that selects the schema version.
    #[serde(default)]
    pub version_header: Option<String>,
    /// JSON pointer of the event type (generic sources; overrides the provider's rule).
    #[serde(default)]
    pub event_type_pointer: Option<String>,
    /// Header of the event type (generic sources).
    #[serde(default)]
    pub event_type_header: Option<String>,
    /// Header of the delivery id (generic sources).
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// JSON pointer of the delivery id (generic sources).
    #[serde(default)]
    pub delivery_id_pointer: Option<String>,
    /// JSON pointer of when the event happened (generic sources).
    #[serde(default)]
    pub occurred_at_pointer: Option<String>,
    /// Request headers copied into the record's envelope (lowercase names).
    #[serde(default = "default_headers")]
    pub headers: Vec<String>,
    /// Keep the raw JSON body in the envelope, so fields the schema lacks are not lost.
    #[serde(default = "default_true")]
    pub keep_raw: bool,
    /// Most deliveries per second accepted from this source (a token bucket
    /// with a burst of the same size); beyond it the answer is 429 with
    /// `Retry-After`. `None`: unlimited.
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    /// The public URL the provider calls (Twilio signs it).
    #[serde(default)]
    pub public_url: Option<String>,
    /// GitHub, Meta: also accept the legacy SHA-1 `X-Hub-Signature` when the
    /// SHA-256 header is absent (old GitHub Enterprise Server, old Meta apps).
    #[serde(default)]
    pub accept_legacy_sha1: bool,
    /// Meta: environment variable holding the verify token of the `GET
    /// hub.challenge` subscription handshake.
    #[serde(default)]
    pub verify_token_env: Option<String>,
    /// Meta: file holding the verify token.
    #[serde(default)]
    pub verify_token_file: Option<PathBuf>,
    /// The generic HMAC scheme (provider = "generic").
    #[serde(default)]
    pub generic: Option<GenericScheme>,
}

fn default_tolerance() -> i64 {
    300
}
fn default_headers() -> Vec<String> {
    vec!["user-agent".into(), "content-type".into()]
}
fn default_true() -> bool {
    true
}

/// A secret string: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// A single secret from an environment variable (preferred) or a file
    /// (trimmed); `None` when neither is configured. The error says which
    /// variable or file failed and for `what`.
    pub fn from_env_or_file(env: Option<&str>, file: Option<&Path>, what: &str) -> Result<Option<Self>, String> {
        if let Some(var) = env {
            return std::env::var(var)
                .map(|v| Some(Self::new(v)))
                .map_err(|_| format!("{var} (the {what}) is not set; export it"));
        }
        if let Some(path) = file {
            return std::fs::read_to_string(path)
                .map(|v| Some(Self::new(v.trim().to_owned())))
                .map_err(|e| format!("cannot read the {what} from {}: {e}", path.display()));
        }
        Ok(None)
    }

    /// The secret itself, for key derivation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Configuration that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment does not fit the schema (unknown key, wrong type, …).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A source's secrets cannot be read.
    #[error("source '{source_name}': {message}")]
    Secrets {
        /// The source.
        source_name: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A value is present but unusable.
    #[error("{field}: {message}")]
    Value {
        /// The key, dotted.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl Config {
    /// Reads `path`, then applies `BRIDGE_*` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Parses TOML text, then applies `BRIDGE_*` environment overrides.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .merge(Env::prefixed("BRIDGE_").split("__"))
            .extract()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let value = |field: &str, message: &str| ConfigError::Value { field: field.into(), message: message.into() };
        if !self.kafka.topic_template.contains("{event_type}") {
            return Err(value("kafka.topic_template", "must contain {event_type} so each event type gets its topic"));
        }
        if self.kafka.partitions < 1 {
            return Err(value("kafka.partitions", "must be at least 1"));
        }
        if self.dedup.max_deliveries < 1 {
            return Err(value("dedup.max_deliveries", "must be at least 1 (about 100 bytes of memory each)"));
        }
        for (name, source) in &self.sources {
            let field = |key: &str| format!("sources.{name}.{key}");
            if source.secrets_env.is_none() && source.secrets_file.is_none() {
                return Err(value(
                    &field("secrets_env"),
                    "set secrets_env (an environment variable name) or secrets_file",
                ));
            }
            if source.provider == Provider::Square && source.public_url.is_none() {
                return Err(value(
                    &field("public_url"),
                    "Square signs the notification URL; set it as registered in Square's dashboard",
                ));
            }
            if source.provider == Provider::Twilio && source.public_url.is_none() {
                return Err(value(
                    &field("public_url"),
                    "Twilio signs the public URL it calls; set it, e.g. \"https://hooks.example.com/webhooks/twilio\"",
                ));
            }
            if source.provider == Provider::Generic && source.generic.is_none() {
                return Err(value(
                    &field("generic"),
                    "a generic source needs a [sources.<name>.generic] table (header, algorithm, encoding)",
                ));
            }
            if source.tolerance_secs < 1 {
                return Err(value(&field("tolerance_secs"), "must be at least 1"));
            }
            for pointer in [
                &source.key_pointer,
                &source.version_pointer,
                &source.event_type_pointer,
                &source.delivery_id_pointer,
                &source.occurred_at_pointer,
            ]
            .into_iter()
            .flatten()
            {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(value(
                        &field("*_pointer"),
                        &format!("'{pointer}' is not a JSON pointer; they start with /"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    /// The admin token, if configured.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        Secret::from_env_or_file(self.admin_token_env.as_deref(), self.admin_token_file.as_deref(), "admin token")
            .map_err(|message| ConfigError::Value { field: "server.admin_token_env".into(), message })
    }
}

impl SourceConfig {
    /// Meta's verify token, if configured.
    pub fn verify_token(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        Secret::from_env_or_file(
            self.verify_token_env.as_deref(),
            self.verify_token_file.as_deref(),
            "Meta verify token",
        )
        .map_err(|message| ConfigError::Secrets { source_name: name.to_owned(), message })
    }

    /// Reads the source's secrets from its environment variable or file.
    pub fn secrets(&self, name: &str) -> Result<Vec<Secret>, ConfigError> {
        let fail = |message: String| ConfigError::Secrets { source_name: name.to_owned(), message };
        let text = if let Some(var) = &self.secrets_env {
            std::env::var(var).map_err(|_| fail(format!("environment variable {var} (secrets_env) is not set; export the webhook secret(s) there, comma-separated")))?
        } else if let Some(path) = &self.secrets_file {
            std::fs::read_to_string(path)
                .map_err(|error| fail(format!("cannot read secrets_file {}: {error}", path.display())))?
        } else {
            return Err(fail("no secrets_env or secrets_file".into()));
        };
        let separator = if self.secrets_env.is_some() { ',' } else { '\n' };
        let secrets: Vec<Secret> = text
            .split(separator)
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.starts_with('#'))
            .map(|s| Secret::new(s.to_owned()))
            .collect();
        if secrets.is_empty() {
            return Err(fail("the configured secrets are empty".into()));
        }
        Ok(secrets)
    }
}
