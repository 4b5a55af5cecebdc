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
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a consumer does with the decoded records of a batch, inside its transaction.
pub trait Effect: Send + Sync {
    /// The consumer's name (its offsets are stored under it).
    fn name(&self) -> &'static str;

    /// Applies a batch's records, in their order, with the same outcome as
    /// applying each in a batch of its own. Must be idempotent per delivery
    /// id, since the same event may arrive twice (webhook retry,
    /// reconciliation), in the same batch or in another.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        records: &'a [Received],
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;
}

/// A decoded record of a batch, and its `process` span (continuing the
/// bridge's trace), which stays open until the batch commits.
#[derive(Debug)]
pub struct Received {
    /// The record.
    pub record: Decoded,
    /// Its span.
    pub span: tracing::Span,
}

/// The records of a batch less the later copies of a delivery it already
/// holds: a copy changes nothing, in the same batch as in a later one.
pub fn first_copies(records: &[Received]) -> Vec<&Decoded> {
    let mut seen = std::collections::HashSet::new();
    records.iter().map(|received| &received.record).filter(|record| seen.insert(record.delivery())).collect()
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

/// What a consumer exposes on `/metrics`.
#[derive(Debug, Default)]
pub struct ConsumerMetrics {
    processed: std::sync::Mutex<BTreeMap<String, u64>>,
    dead_lettered: std::sync::atomic::AtomicU64,
    lag: std::sync::Mutex<BTreeMap<(String, i32), i64>>,
    /// Per record: from the bridge's receipt to this consumer's commit.
    pub end_to_end: bridge::metrics::Histogram,
    /// Per batch: applying it and committing, divided by its records.
    pub processing: bridge::metrics::Histogram,
}

impl ConsumerMetrics {
    /// The Prometheus text exposition for consumer `name`.
    pub fn render(&self, name: &str) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP consumer_records_total Records applied, by topic.\n# TYPE consumer_records_total counter\n",
        );
        for (topic, n) in self.processed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "consumer_records_total{{consumer=\"{name}\",topic=\"{topic}\"}} {n}");
        }
        let dead = self.dead_lettered.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str("# HELP consumer_dead_lettered_total Undecodable records copied to the dead-letter topic.\n");
        out.push_str("# TYPE consumer_dead_lettered_total counter\n");
        let _ = writeln!(out, "consumer_dead_lettered_total{{consumer=\"{name}\"}} {dead}");
        out.push_str("# HELP consumer_lag_records Records on the partition not yet applied.\n# TYPE consumer_lag_records gauge\n");
        for ((topic, partition), lag) in self.lag.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "consumer_lag_records{{consumer=\"{name}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}"
            );
        }
        self.end_to_end.render(
            &mut out,
            "consumer_end_to_end_latency_seconds",
            "From the bridge's receipt to this consumer's commit.",
            "consumer",
        );
        self.processing.render(
            &mut out,
            "consumer_processing_seconds",
            "Applying and committing, per record.",
            "consumer",
        );
        out
    }
}

/// Serves `metrics` at `GET /metrics` on `listen`, until the process ends.
pub async fn serve_metrics(
    listen: std::net::SocketAddr,
    name: &'static str,
    metrics: std::sync::Arc<ConsumerMetrics>,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.render(name) }
        }),
    );
    let listener = schemas::net::listen(listen)?;
    tokio::spawn(async move {
        let _ = axum::serve(schemas::net::no_delay(listener), app).await;
    });
    Ok(())
}

/// Runs `effect` until `stop` resolves.
pub async fn run<E: Effect>(
    config: &Config,
    pool: &PgPool,
    effect: &E,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_observed(config, pool, effect, &ConsumerMetrics::default(), stop).await
}

/// Runs `effect` until `stop` resolves, recording into `metrics`.
pub async fn run_observed<E: Effect>(
    config: &Config,
    pool: &PgPool,
    effect: &E,
    metrics: &ConsumerMetrics,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pattern = regex::Regex::new(&config.kafka.topic_pattern)?;
    // Shared with the blocking threads that ask it for metadata and watermarks.
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", format!("webhook-consumers-{}", effect.name()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?,
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let decoder = Decoder::new(&config.registry.url);
    let dead_letters = DeadLetters {
        producer: &producer,
        topics: schemas::topics::KnownTopics::new(&config.kafka.brokers),
        topic: &config.kafka.dead_letter_topic,
    };
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
            record_lag(&consumer, pool, effect.name(), &assigned, metrics).await;
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
        let started = Instant::now();
        let applied = apply_batch(pool, effect, &decoder, &dead_letters, &batch).await;
        if let Ok(outcome) = &applied {
            let per_record = started.elapsed().as_secs_f64() / batch.len() as f64;
            let now_ms = chrono::Utc::now().timestamp_millis();
            for received_ms in &outcome.received_at_ms {
                metrics.end_to_end.observe(effect.name(), (now_ms - received_ms).max(0) as f64 / 1000.0);
            }
            let mut processed = metrics.processed.lock().unwrap_or_else(|e| e.into_inner());
            for message in &batch {
                metrics.processing.observe(effect.name(), per_record);
                *processed.entry(message.topic().to_owned()).or_default() += 1;
            }
            metrics.dead_lettered.fetch_add(outcome.dead_lettered, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(error) = applied {
            tracing::warn!(consumer = effect.name(), %error, "batch rolled back; re-reading from the stored offsets");
            drop(batch);
            assign_from_database(&consumer, pool, effect.name(), &assigned).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn matching_partitions(
    consumer: &Arc<StreamConsumer>,
    pattern: &regex::Regex,
    exclude: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let metadata =
        schemas::topics::blocking(consumer, |consumer| consumer.fetch_metadata(None, Duration::from_secs(5))).await??;
    let mut out: Vec<(String, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| pattern.is_match(t.name()) && !exclude.iter().any(|x| x == t.name()))
        .flat_map(|t| t.partitions().iter().map(move |p| (t.name().to_owned(), p.id())))
        .collect();
    out.sort();
    Ok(out)
}

/// The next offset the database holds for each (topic, partition) consumer `name` has read.
async fn stored_offsets(pool: &PgPool, name: &str) -> sqlx::Result<BTreeMap<(String, i32), i64>> {
    let stored: Vec<(String, i32, i64)> =
        sqlx::query_as(r#"SELECT topic, "partition", next_offset FROM consumer_offsets WHERE consumer = $1"#)
            .bind(name)
            .fetch_all(pool)
            .await?;
    Ok(stored.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
}

async fn assign_from_database(
    consumer: &StreamConsumer,
    pool: &PgPool,
    name: &str,
    partitions: &[(String, i32)],
) -> anyhow::Result<()> {
    let stored = stored_offsets(pool, name).await?;
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

/// What a committed batch did.
struct BatchOutcome {
    received_at_ms: Vec<i64>,
    dead_lettered: u64,
}

/// Stores each assigned partition's lag: its high watermark minus the stored offset.
async fn record_lag(
    consumer: &Arc<StreamConsumer>,
    pool: &PgPool,
    name: &str,
    assigned: &[(String, i32)],
    metrics: &ConsumerMetrics,
) {
    let Ok(stored) = stored_offsets(pool, name).await else {
        return;
    };
    let partitions = assigned.to_vec();
    let Ok(watermarks) = schemas::topics::blocking(consumer, move |consumer| {
        partitions
            .into_iter()
            .filter_map(|(topic, partition)| {
                let watermarks = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2)).ok()?;
                Some(((topic, partition), watermarks))
            })
            .collect::<Vec<_>>()
    })
    .await
    else {
        return;
    };
    let lag = watermarks
        .into_iter()
        .map(|(key, (low, high))| {
            let next = stored.get(&key).copied().unwrap_or(low);
            (key, (high - next).max(0))
        })
        .collect();
    *metrics.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
}

async fn apply_batch<E: Effect>(
    pool: &PgPool,
    effect: &E,
    decoder: &Decoder,
    dead_letters: &DeadLetters<'_>,
    batch: &[BorrowedMessage<'_>],
) -> anyhow::Result<BatchOutcome> {
    let mut tx = pool.begin().await?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut outcome = BatchOutcome { received_at_ms: Vec::with_capacity(batch.len()), dead_lettered: 0 };
    let mut records = Vec::with_capacity(batch.len());
    let mut dead = Vec::new();
    for message in batch {
        match decoder.decode(message).await {
            Ok(record) => {
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
                outcome.received_at_ms.extend(record.int("/received_at"));
                records.push(Received { record, span });
            }
            Err(DecodeError::Unavailable(reason)) => anyhow::bail!("{reason}"),
            Err(DecodeError::Undecodable(reason)) => {
                dead.push(dead_letters.queue(message, effect.name(), &reason).await?);
                outcome.dead_lettered += 1;
                tracing::warn!(consumer = effect.name(), topic = message.topic(), offset = message.offset(), %reason, "record dead-lettered");
            }
        }
        next.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
    }
    // The offsets past a dead letter commit only once the broker holds it.
    acknowledged(dead).await?;
    effect.apply(&mut tx, &records).await?;
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
    Ok(outcome)
}

struct DeadLetters<'a> {
    producer: &'a FutureProducer,
    /// The dead-letter topic is created before the first dead letter, not
    /// before each.
    topics: schemas::topics::KnownTopics,
    topic: &'a str,
}

impl DeadLetters<'_> {
    /// Queues a copy of `message` for the dead-letter topic, in the order
    /// called; the future returned resolves on the broker's ack
    /// ([`acknowledged`]). A batch's dead letters go out together, not one
    /// produce round trip (and linger) each.
    async fn queue(
        &self,
        message: &BorrowedMessage<'_>,
        consumer: &str,
        reason: &str,
    ) -> anyhow::Result<DeliveryFuture> {
        self.topics.ensure(self.topic, 1).await?;
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
        self.producer.send_result(record).map_err(|(error, _)| anyhow::anyhow!("dead-lettering failed: {error}"))
    }
}

/// Waits until the broker has acknowledged every dead letter queued.
async fn acknowledged(queued: Vec<DeliveryFuture>) -> anyhow::Result<()> {
    for delivery in futures::future::join_all(queued).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => anyhow::bail!("dead-lettering failed: {error}"),
            Err(_) => anyhow::bail!("dead-lettering failed: the producer was closed"),
        }
    }
    Ok(())
}
