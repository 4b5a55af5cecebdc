//! The consumers' configuration: a TOML file, every key overridable from the
//! environment as `CONSUMERS_<SECTION>__<KEY>`; unknown keys are errors.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::path::Path;

/// Everything the consumers are configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// The schema registry the records were written with.
    pub registry: RegistryConfig,
    /// The database.
    pub postgres: PostgresConfig,
    /// Reconciliation polling.
    #[serde(default)]
    pub reconcile: Option<crate::reconcile::ReconcileConfig>,
}

/// Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Regular expression of the topics to consume.
    #[serde(default = "default_pattern")]
    pub topic_pattern: String,
    /// Topics matching the pattern that are not events (dead letters).
    #[serde(default = "default_exclude")]
    pub exclude_topics: Vec<String>,
    /// Where records that cannot be decoded go, unchanged.
    #[serde(default = "default_dead_letter")]
    pub dead_letter_topic: String,
    /// Most records applied in one database transaction.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_pattern() -> String {
    r"^webhooks\.".into()
}
fn default_exclude() -> Vec<String> {
    vec!["webhooks.dead-letter".into(), "webhooks.consumer-dead-letter".into()]
}
fn default_dead_letter() -> String {
    "webhooks.consumer-dead-letter".into()
}
fn default_batch() -> usize {
    500
}

/// The registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL.
    pub url: String,
}

/// PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://postgres@127.0.0.1:5432/webhooks`.
    pub url: String,
}

impl Config {
    /// Reads `path`, then applies `CONSUMERS_*` environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Parses TOML text, then applies `CONSUMERS_*` environment overrides.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let config: Config = figment
            // CONSUMERS_METRICS_LISTEN is a command-line option's variable, not a config key.
            .merge(Env::prefixed("CONSUMERS_").split("__").ignore(&["metrics_listen"]))
            .extract()
            .map_err(|error| anyhow::anyhow!("invalid consumers configuration: {error}"))?;
        regex::Regex::new(&config.kafka.topic_pattern)
            .map_err(|error| anyhow::anyhow!("kafka.topic_pattern is not a regular expression: {error}"))?;
        Ok(config)
    }
}
