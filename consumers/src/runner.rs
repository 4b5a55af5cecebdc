//! The loop every consumer runs: read the topics matching a pattern, apply
//! each record's effect in PostgreSQL, and store the next offset of each
//! partition **in the same transaction** as the effects. Offsets are never
//! committed to Kafka: on start (and after any error) each partition is read
//! from the offset the database holds, so a crash at any point yields the same
//! database as an uninterrupted run: exactly-once effect.
//!
//! Topics are matched by pattern against the broker's metadata every few
//! seconds, so topics the bridge creates later are picked up. One instance
//! per consumer name reads every partition.
//!
//! A record that cannot be decoded is copied to the dead-letter topic (and
//! acknowledged there) before its offset is stored: it never stops its
//! partition. A registry outage is not a bad record: the batch is rolled
//! back and retried.

use crate::config::Config;
use crate::record::{DecodeError, Decoded, Decoder};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a consumer does with each decoded record, inside the transaction.
pub trait Effect: Send + Sync {
    /// The consumer's name (its offsets are stored under it).
    fn name(&self) -> &'static str;

    /// Applies one record. Must be idempotent per delivery id, since the
    /// same event may arrive twice (webhook retry, reconciliation).
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        record: &'a Decoded,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;
}

/// Connects to PostgreSQL and runs the migrations.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|error| anyhow::anyhow!("connecting to PostgreSQL at {url}: {error}"))?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Runs `effect` until `stop` resolves.
pub async fn run<E: Effect>(
    config: &Config,
    pool: &PgPool,
    effect: &E,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pattern = regex::Regex::new(&config.kafka.topic_pattern)?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("webhook-consumers-{}", effect.name()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let decoder = Decoder::new(&config.registry.url);
    let mut assigned: Vec<(String, i32)> = Vec::new();
    let mut last_refresh = Instant::now() - Duration::from_secs(60);
    tokio::pin!(stop);
    loop {
        if last_refresh.elapsed() > Duration::from_secs(2) {
            let partitions = matching_partitions(&consumer, &pattern, &config.kafka.exclude_topics).await?;
            if partitions != assigned {
                assign_from_database(&consumer, pool, effect.name(), &partitions).await?;
                tracing::info!(
                    consumer = effect.name(),
                    partitions = partitions.len(),
                    "assigned partitions from stored offsets"
                );
                assigned = partitions;
            }
            last_refresh = Instant::now();
        }
        if assigned.is_empty() {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        let batch = tokio::select! {
            _ = &mut stop => return Ok(()),
            batch = next_batch(&consumer, config.kafka.batch_size) => batch,
        };
        if batch.is_empty() {
            continue;
        }
        let dead_letters =
            DeadLetters { producer: &producer, brokers: &config.kafka.brokers, topic: &config.kafka.dead_letter_topic };
        if let Err(error) = apply_batch(pool, effect, &decoder, &dead_letters, &batch).await {
            tracing::warn!(consumer = effect.name(), %error, "batch rolled back; re-reading from the stored offsets");
            drop(batch);
            assign_from_database(&consumer, pool, effect.name(), &assigned).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn matching_partitions(
    consumer: &StreamConsumer,
    pattern: &regex::Regex,
    exclude: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5))?;
    let mut out: Vec<(String, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| pattern.is_match(t.name()) && !exclude.iter().any(|x| x == t.name()))
        .flat_map(|t| t.partitions().iter().map(move |p| (t.name().to_owned(), p.id())))
        .collect();
    out.sort();
    Ok(out)
}

async fn assign_from_database(
    consumer: &StreamConsumer,
    pool: &PgPool,
    name: &str,
    partitions: &[(String, i32)],
) -> anyhow::Result<()> {
    let stored: Vec<(String, i32, i64)> =
        sqlx::query_as(r#"SELECT topic, "partition", next_offset FROM consumer_offsets WHERE consumer = $1"#)
            .bind(name)
            .fetch_all(pool)
            .await?;
    let stored: BTreeMap<(String, i32), i64> = stored.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in partitions {
        let offset = stored.get(&(topic.clone(), *partition)).map_or(Offset::Beginning, |o| Offset::Offset(*o));
        assignment.add_partition_offset(topic, *partition, offset)?;
    }
    consumer.assign(&assignment)?;
    Ok(())
}

async fn next_batch(consumer: &StreamConsumer, max: usize) -> Vec<BorrowedMessage<'_>> {
    let mut batch = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message),
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading from Kafka failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

async fn apply_batch<E: Effect>(
    pool: &PgPool,
    effect: &E,
    decoder: &Decoder,
    dead_letters: &DeadLetters<'_>,
    batch: &[BorrowedMessage<'_>],
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in batch {
        match decoder.decode(message).await {
            Ok(record) => {
                use tracing::Instrument;
                let span = tracing::info_span!(
                    "process",
                    otel.kind = "consumer",
                    messaging.system = "kafka",
                    messaging.operation.type = "process",
                    messaging.consumer.group.name = effect.name(),
                    messaging.destination.name = %record.topic,
                    messaging.kafka.destination.partition = record.partition,
                    messaging.kafka.offset = record.offset,
                    messaging.message.id = record.text("/delivery_id").unwrap_or_default(),
                );
                bridge::telemetry::continue_trace(&span, record.traceparent.as_deref(), None);
                effect.apply(&mut tx, &record).instrument(span).await?
            }
            Err(DecodeError::Unavailable(reason)) => anyhow::bail!("{reason}"),
            Err(DecodeError::Undecodable(reason)) => {
                dead_letters.send(message, effect.name(), &reason).await?;
                tracing::warn!(consumer = effect.name(), topic = message.topic(), offset = message.offset(), %reason, "record dead-lettered");
            }
        }
        next.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
    }
    for ((topic, partition), offset) in &next {
        sqlx::query(
            r#"INSERT INTO consumer_offsets (consumer, topic, "partition", next_offset) VALUES ($1, $2, $3, $4)
               ON CONFLICT (consumer, topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"#,
        )
        .bind(effect.name())
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

struct DeadLetters<'a> {
    producer: &'a FutureProducer,
    brokers: &'a str,
    topic: &'a str,
}

impl DeadLetters<'_> {
    /// Copies `message` to the dead-letter topic and waits for the ack.
    async fn send(&self, message: &BorrowedMessage<'_>, consumer: &str, reason: &str) -> anyhow::Result<()> {
        schemas::topics::ensure_topic(self.brokers, self.topic, 1, &[]).await?;
        let offset = message.offset().to_string();
        let partition = message.partition().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "dlq_reason", value: Some(reason) })
            .insert(Header { key: "dlq_consumer", value: Some(consumer) })
            .insert(Header { key: "dlq_topic", value: Some(message.topic()) })
            .insert(Header { key: "dlq_partition", value: Some(partition.as_str()) })
            .insert(Header { key: "dlq_offset", value: Some(offset.as_str()) });
        let mut record =
            FutureRecord::<[u8], [u8]>::to(self.topic).payload(message.payload().unwrap_or_default()).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| anyhow::anyhow!("dead-lettering failed: {error}"))?;
        Ok(())
    }
}
