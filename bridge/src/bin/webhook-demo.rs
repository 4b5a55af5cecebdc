//! `webhook-demo`: send a signed webhook the way a provider would, and print
//! the records of a topic decoded through the schema registry. Used by
//! `scripts/dev`; handy for trying a source by hand.
//!
//! ```sh
//! webhook-demo send --url http://127.0.0.1:8080/webhooks/stripe --provider stripe \
//!     --secret-env STRIPE_WEBHOOK_SECRETS --file schemas/samples/stripe/payment_intent.succeeded.json
//! webhook-demo tail --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 \
//!     --topic webhooks.stripe.payment_intent.succeeded --count 1
//! ```

use anyhow::{Context, bail};
use bridge::verify::{Algorithm, mac};
use clap::{Parser, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "webhook-demo", about = "Send a signed webhook; print decoded records")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign a JSON file as the provider would and POST it.
    Send {
        /// The bridge route, e.g. http://127.0.0.1:8080/webhooks/stripe.
        #[arg(long)]
        url: String,
        /// stripe, github, shopify, slack or standard-webhooks.
        #[arg(long)]
        provider: String,
        /// Environment variable holding the secret (the first of a comma-separated list is used).
        #[arg(long)]
        secret_env: String,
        /// The JSON body.
        #[arg(long)]
        file: PathBuf,
        /// The event name for providers that send it in a header (GitHub, Shopify).
        #[arg(long, default_value = "")]
        event: String,
    },
    /// Print the records of a topic, decoded through the registry.
    Tail {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Schema registry URL.
        #[arg(long)]
        registry: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Stop after this many records.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 15)]
        timeout_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send { url, provider, secret_env, file, event } => {
            send(&url, &provider, &secret_env, &file, &event).await
        }
        Command::Tail { brokers, registry, topic, count, timeout_secs } => {
            tail(&brokers, &registry, &topic, count, Duration::from_secs(timeout_secs)).await
        }
    }
}

async fn send(url: &str, provider: &str, secret_env: &str, file: &PathBuf, event: &str) -> anyhow::Result<()> {
    let secrets = std::env::var(secret_env).with_context(|| format!("{secret_env} is not set"))?;
    let secret = secrets.split(',').next().unwrap_or_default().trim().to_owned();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    let now = chrono::Utc::now().timestamp();
    if provider == "stripe" {
        json["created"] = now.into();
    }
    let body = serde_json::to_vec(&json)?;
    let t = now.to_string();
    let delivery = uuid::Uuid::new_v4().to_string();
    let mut headers: Vec<(&str, String)> = vec![("content-type", "application/json".into())];
    match provider {
        "stripe" => {
            let signature = hex::encode(mac(Algorithm::Sha256, secret.as_bytes(), &[t.as_bytes(), b".", &body]));
            headers.push(("stripe-signature", format!("t={t},v1={signature}")));
        }
        "github" => {
            let signature = hex::encode(mac(Algorithm::Sha256, secret.as_bytes(), &[&body]));
            headers.extend([
                ("x-hub-signature-256", format!("sha256={signature}")),
                ("x-github-event", event.into()),
                ("x-github-delivery", delivery),
            ]);
        }
        "shopify" => {
            use base64::Engine;
            let signature =
                base64::engine::general_purpose::STANDARD.encode(mac(Algorithm::Sha256, secret.as_bytes(), &[&body]));
            headers.extend([
                ("x-shopify-hmac-sha256", signature),
                ("x-shopify-topic", event.into()),
                ("x-shopify-event-id", delivery),
            ]);
        }
        "slack" => {
            let signature =
                hex::encode(mac(Algorithm::Sha256, secret.as_bytes(), &[b"v0:", t.as_bytes(), b":", &body]));
            headers.extend([("x-slack-request-timestamp", t), ("x-slack-signature", format!("v0={signature}"))]);
        }
        "standard-webhooks" => {
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_"))?;
            let id = format!("msg_{}", delivery.replace('-', ""));
            let signature = base64::engine::general_purpose::STANDARD.encode(mac(
                Algorithm::Sha256,
                &key,
                &[id.as_bytes(), b".", t.as_bytes(), b".", &body],
            ));
            headers.extend([
                ("webhook-id", id),
                ("webhook-timestamp", t),
                ("webhook-signature", format!("v1,{signature}")),
            ]);
        }
        other => bail!("webhook-demo cannot sign for provider '{other}'"),
    }
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    println!("POST {url} → {status}\n{}", response.text().await?);
    if !status.is_success() {
        bail!("the bridge answered {status}");
    }
    Ok(())
}

async fn tail(brokers: &str, registry: &str, topic: &str, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let client = schemas::client::RegistryClient::new(registry);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "webhook-demo-tail")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions = metadata.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()).unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} does not exist (yet)");
    }
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while seen < count {
        if Instant::now() > deadline {
            bail!("only {seen} of {count} records arrived on {topic} within {timeout:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        let payload = message.payload().unwrap_or_default();
        let (id, body) = schemas::wire::unframe(payload)?;
        let schema = apache_avro::Schema::parse_str(&client.schema(id).await?)?;
        let value = schemas::wire::decode_avro(&schema, body)?;
        let json = serde_json::Value::try_from(value)?;
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into()))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "topic": topic, "partition": message.partition(), "offset": message.offset(), "schema_id": id,
                "key": message.key().map(String::from_utf8_lossy), "headers": headers, "value": json
            }))?
        );
        seen += 1;
    }
    Ok(())
}
