//! The delivery log: which deliveries the bridge has already put on Kafka,
//! for deduplication within a window, also across restarts.
//!
//! Each delivery the bridge produced (or dead-lettered) is recorded, with
//! where it landed, in the topic `_bridge_deliveries`. The deliveries of
//! 50 ms (`BATCH_LINGER`) are written together as one Kafka record (a JSON
//! array), so the log costs the broker one record per batch, not one per
//! delivery.
//! The topic keeps records for the dedup window and a day more
//! (`cleanup.policy=delete`, `retention.ms`): what is older can no longer
//! make a duplicate, so a restart reads one window, not the whole history:
//! on start the topic is read from the first record written within the
//! window (less a margin for the broker's clock), and a background task
//! keeps reading it (a fetch every 250 ms, or sooner once 1 MiB is
//! waiting), so several bridge instances share one view; each skips the
//! records it wrote itself (header `bridge_instance`).
//!
//! A delivery is recorded after its own record is acknowledged: a crash
//! before the batch is written costs at most a duplicate on redelivery,
//! never a loss.
//!
//! The view holds every delivery of the window (3 days by default) in
//! memory, so it is built for size and for steady latency: a delivery is
//! keyed by 128 bits of the SHA-256 of `source/delivery-id` (a false
//! duplicate would need a collision of those), its entry is about 80 bytes
//! (the strings all deliveries of a topic share are held once), and the view
//! is split into shards with a lock each, so growing or pruning one never
//! stalls the deliveries of the others.
//!
//! The view is also bounded by count (`dedup.max_deliveries`, each shard
//! its share): a shard over its share forgets its oldest eighth at once, so
//! memory stops growing at a known size whatever the rate, and
//! deduplication then reaches back less far than the window. How many were
//! forgotten that way and how far back it still reaches are kept for the
//! metrics and the bridge's warning.
//!
//! Two copies of the same delivery racing each other: the first holds an
//! in-flight mark; the second is answered 409 with `Retry-After` and, retried,
//! is recognised as a duplicate.

use crate::sink::KafkaSink;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the log remembers of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The source name.
    pub source: String,
    /// The provider's delivery id.
    pub delivery_id: String,
    /// When the bridge received it (ms).
    pub received_at_ms: i64,
    /// `produced` or `dead-lettered`.
    pub outcome: String,
    /// Where the record landed.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its event type, if known.
    #[serde(default)]
    pub event_type: Option<String>,
    /// The schema id, if encoded.
    #[serde(default)]
    pub schema_id: Option<u32>,
    /// The catalog version of the schema, if encoded.
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// The trace the delivery was processed in.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// `webhook`, `reconciliation` or `replay`.
    #[serde(default)]
    pub origin: Option<String>,
}

/// The header naming the bridge process that wrote a log record: each
/// process skips its own records when it tails the log (it put them in its
/// view when it wrote them) and reads only other instances'.
const WRITER_HEADER: &str = "bridge_instance";

/// How long recorded deliveries wait to be written together: under load a
/// log record every 50 ms, not one per delivery or every few milliseconds.
/// Every record written is a record batch the log's readers fetch past:
/// tansu 0.6 (the embedded broker) lists all of a partition's batches on
/// each fetch, under the lock its produces need, and this bridge's own tail
/// fetches the log several times a second, so at 5 ms the broker's
/// acknowledgements of the webhooks' records slowed as the log grew (half
/// of peak, p99 from 6 to 14–20 ms over five ten-second runs; flat at 50
/// ms; BENCHMARKS.md, 2026-12-06). A crash loses at most this much of the
/// log: a redelivery of those deliveries may then be produced twice.
const BATCH_LINGER: Duration = Duration::from_millis(50);

/// At most this many deliveries in one log record (~200 KB of JSON).
const BATCH_MAX: usize = 500;

/// A log record: a batch of deliveries, or (written by earlier versions) one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Logged {
    Batch(Vec<DeliveryRecord>),
    One(DeliveryRecord),
}

/// What the start reader reports once it has read the log to its end.
const READ_TO_END: i64 = i64::MAX;

/// Reading the log at start fails when the broker sends nothing for this long.
const REPLAY_STALL: Duration = Duration::from_secs(60);

/// A consumer of the log (never a group member, no commits), with `settings`.
fn log_consumer(brokers: &str, settings: &[(&str, &str)]) -> rdkafka::error::KafkaResult<StreamConsumer> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("group.id", "bridge-delivery-log").set("enable.auto.commit", "false");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create()
}

/// Assigns `consumer` the log's one partition at `from`.
fn read_from(consumer: &StreamConsumer, topic: &str, from: Offset) -> rdkafka::error::KafkaResult<()> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, from)?;
    consumer.assign(&assignment)
}

/// How far before the window the start reads, at most (and at most the
/// window again): the broker's clock, which times the log's records, may
/// be behind the bridge's.
const CLOCK_MARGIN: Duration = Duration::from_secs(300);

/// Where the start reads the log from: the first record the broker wrote
/// after `since_ms` (its clock), when that lies inside the log
/// (`low`..`high`); else the beginning. Records before it hold only
/// deliveries older than the window: the topic keeps a day more than that.
fn start_offset(consumer: &StreamConsumer, topic: &str, since_ms: i64, (low, high): (i64, i64)) -> Offset {
    let mut times = TopicPartitionList::new();
    if times.add_partition_offset(topic, 0, Offset::Offset(since_ms)).is_err() {
        return Offset::Beginning;
    }
    // tansu 0.6 answers 0 when no record is that recent; Kafka answers the end.
    match consumer
        .offsets_for_times(times, Duration::from_secs(10))
        .map(|found| found.find_partition(topic, 0).map(|p| p.offset()))
    {
        Ok(Some(Offset::Offset(first))) if first > low && first < high => Offset::Offset(first),
        Ok(_) => Offset::Beginning,
        Err(error) => {
            tracing::warn!(%error, topic, "cannot find where the delivery log's window starts; reading it all");
            Offset::Beginning
        }
    }
}

/// Shards of the view, each behind its own lock.
const SHARDS: usize = 16;

/// 128 bits of the SHA-256 of `source/delivery-id`: the view's key.
type Digest = u128;

fn digest(source: &str, delivery_id: &str) -> Digest {
    let hash = sha2::Sha256::new().chain_update(source).chain_update(b"/").chain_update(delivery_id).finalize();
    let mut first = [0; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

/// Hashes a [`Digest`] by taking its low bits: it is a hash already.
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

/// Where a delivery went and what it was: shared by every delivery of one
/// topic, event type, outcome and origin, so held once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Landing {
    outcome: Box<str>,
    topic: Box<str>,
    event_type: Option<Box<str>>,
    origin: Option<Box<str>>,
}

/// What the view keeps of one delivery.
#[derive(Debug)]
struct Remembered {
    received_at_ms: i64,
    landing: Arc<Landing>,
    partition: i32,
    offset: i64,
    schema_id: Option<u32>,
    schema_version: Option<u32>,
    trace_id: Option<[u8; 16]>,
}

impl Remembered {
    /// The full record of `source`'s `delivery_id`, which this entry is.
    fn to_record(&self, source: &str, delivery_id: &str) -> DeliveryRecord {
        DeliveryRecord {
            source: source.to_owned(),
            delivery_id: delivery_id.to_owned(),
            received_at_ms: self.received_at_ms,
            outcome: self.landing.outcome.to_string(),
            topic: self.landing.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            event_type: self.landing.event_type.as_deref().map(str::to_owned),
            schema_id: self.schema_id,
            schema_version: self.schema_version,
            trace_id: self.trace_id.map(hex::encode),
            origin: self.landing.origin.as_deref().map(str::to_owned),
        }
    }
}

/// One shard of the view: deliveries within the window, deliveries in flight.
#[derive(Debug, Default)]
struct Shard {
    seen: DigestMap<Remembered>,
    in_flight: HashSet<Digest, BuildHasherDefault<DigestHasher>>,
    landings: HashSet<Arc<Landing>>,
}

impl Shard {
    fn remember(&mut self, digest: Digest, record: &DeliveryRecord) {
        let landing = Landing {
            outcome: record.outcome.as_str().into(),
            topic: record.topic.as_str().into(),
            event_type: record.event_type.as_deref().map(Into::into),
            origin: record.origin.as_deref().map(Into::into),
        };
        let landing = match self.landings.get(&landing) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(landing);
                self.landings.insert(shared.clone());
                shared
            }
        };
        let trace_id = record.trace_id.as_deref().and_then(|t| {
            let mut bytes = [0; 16];
            hex::decode_to_slice(t, &mut bytes).ok().map(|()| bytes)
        });
        self.seen.insert(
            digest,
            Remembered {
                received_at_ms: record.received_at_ms,
                landing,
                partition: record.partition,
                offset: record.offset,
                schema_id: record.schema_id,
                schema_version: record.schema_version,
                trace_id,
            },
        );
    }

    /// Forgets entries older than the window, and landings none points to any more.
    fn prune(&mut self, now_ms: i64, window_ms: i64) {
        self.seen.retain(|_, r| now_ms - r.received_at_ms <= window_ms);
        self.forget_unused_landings();
    }

    /// Drops the landings no entry points to any more.
    fn forget_unused_landings(&mut self) {
        self.landings.retain(|l| Arc::strong_count(l) > 1);
    }

    /// Forgets the oldest entries until `keep` are left: how many went, and
    /// the newest `received_at_ms` among them (every later one is kept).
    fn forget_oldest(&mut self, keep: usize) -> Option<(usize, i64)> {
        let excess = self.seen.len().checked_sub(keep).filter(|&n| n > 0)?;
        let mut times: Vec<i64> = self.seen.values().map(|r| r.received_at_ms).collect();
        let (older, &mut cutoff, _) = times.select_nth_unstable(excess - 1);
        // Everything before `cutoff` goes, and as many received at `cutoff` as make up `excess`.
        let mut ties = excess - older.iter().filter(|&&t| t < cutoff).count();
        self.seen.retain(|_, r| match r.received_at_ms.cmp(&cutoff) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                false
            }
            _ => true,
        });
        self.forget_unused_landings();
        Some((excess, cutoff))
    }
}

/// The view, sharded by digest.
#[derive(Debug)]
struct View {
    shards: [Mutex<Shard>; SHARDS],
    /// Each shard's share of `dedup.max_deliveries`.
    shard_cap: usize,
    /// Deliveries forgotten before their window ended, to stay within the cap.
    evicted: AtomicU64,
    /// The newest `received_at_ms` forgotten that way (`i64::MIN`: none):
    /// every delivery received after it is still remembered.
    forgotten_up_to_ms: AtomicI64,
}

impl View {
    fn new(max_deliveries: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            shard_cap: max_deliveries.div_ceil(SHARDS).max(1),
            evicted: AtomicU64::new(0),
            forgotten_up_to_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn shard(&self, digest: Digest) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(digest >> 64) as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shard in turn, each locked only while it is looked at.
    fn each(&self) -> impl Iterator<Item = std::sync::MutexGuard<'_, Shard>> {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The log and its in-memory view.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    topic: String,
    window_ms: i64,
    /// This process's id in the [`WRITER_HEADER`] of the records it writes.
    instance: Arc<str>,
    view: Arc<View>,
    /// Recorded deliveries not yet written; a write is scheduled while it is not empty.
    pending: Arc<Mutex<Vec<DeliveryRecord>>>,
}

/// Marks a delivery in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    digest: Digest,
    view: Arc<View>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.view.shard(self.digest).in_flight.remove(&self.digest);
    }
}

/// Whether a delivery is new.
#[derive(Debug)]
pub enum Admission {
    /// New: go ahead; the mark is held until dropped.
    New(InFlight),
    /// Already delivered within the window.
    Duplicate(DeliveryRecord),
    /// Being processed right now by another request.
    InFlight,
}

impl DeliveryLog {
    /// Creates the topic if needed, reads it to its end, and keeps tailing
    /// it, remembering the deliveries of `window`, at most `max_deliveries`.
    pub async fn open(brokers: &str, topic: &str, window: Duration, max_deliveries: usize) -> anyhow::Result<Self> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let retention_ms = window_ms.saturating_add(24 * 3600 * 1000).to_string();
        schemas::topics::ensure_topic(
            brokers,
            topic,
            1,
            &[("cleanup.policy", "delete"), ("retention.ms", retention_ms.as_str())],
        )
        .await?;
        // The log is read to its end at start by a consumer of its own with
        // a short wait: tansu 0.6 holds every fetch for the whole
        // `fetch.wait.max.ms`, and at the tail's 250 ms a million
        // deliveries took 47 s to read.
        let start = [("fetch.wait.max.ms", "10"), ("queued.max.messages.kbytes", "8192")];
        let consumer = log_consumer(brokers, &start)?;
        // The client waits for the broker's answers: on a blocking thread,
        // not one of the runtime's workers.
        let margin_ms = window_ms.min(CLOCK_MARGIN.as_millis() as i64);
        let since_ms = chrono::Utc::now().timestamp_millis().saturating_sub(window_ms.saturating_add(margin_ms));
        let (consumer, watermarks, from) = tokio::task::spawn_blocking({
            let topic = topic.to_owned();
            move || {
                let watermarks = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10));
                let from = match watermarks {
                    Ok(range) => start_offset(&consumer, &topic, since_ms, range),
                    Err(_) => Offset::Beginning,
                };
                (consumer, watermarks, from)
            }
        })
        .await?;
        let (low, high) = watermarks?;
        read_from(&consumer, topic, from)?;
        // Nothing to read when every record has expired (low = high > 0).
        let end = if low >= high { 0 } else { high };
        let first = match from {
            Offset::Offset(first) => first,
            _ => low,
        };
        let log = Self {
            topic: topic.to_owned(),
            window_ms,
            instance: uuid::Uuid::new_v4().simple().to_string().into(),
            view: Arc::new(View::new(max_deliveries)),
            pending: Arc::default(),
        };
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0i64);
        tokio::spawn(log.clone().tail(brokers.to_owned(), consumer, end, progress_tx));
        // A long log takes as long as it takes (on tansu, about 15 s per
        // million deliveries); the start fails only when the broker sends
        // nothing for REPLAY_STALL.
        let started = std::time::Instant::now();
        let mut reported = started;
        while *progress.borrow_and_update() != READ_TO_END {
            match tokio::time::timeout(REPLAY_STALL, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("the reader of the delivery log '{topic}' stopped"),
                Err(_) => anyhow::bail!(
                    "the delivery log '{topic}' sent nothing for {REPLAY_STALL:?} while it was read at start (at offset {} of {end}); check that the Kafka broker is reachable",
                    *progress.borrow()
                ),
            }
            let offset = *progress.borrow();
            if offset != READ_TO_END && reported.elapsed() >= Duration::from_secs(10) {
                reported = std::time::Instant::now();
                tracing::info!(topic, offset, end, deliveries = log.len(), "reading the delivery log");
            }
        }
        if end > 0 {
            tracing::info!(
                topic,
                records = end - first,
                deliveries = log.len(),
                seconds = started.elapsed().as_secs_f64(),
                "delivery log read"
            );
        }
        Ok(log)
    }

    /// Applies each record of the log as it comes: first through the start
    /// reader, reporting the offset reached through `progress` (then
    /// [`READ_TO_END`]), then through a tail that asks a few times a second.
    async fn tail(self, brokers: String, start: StreamConsumer, end: i64, progress: tokio::sync::watch::Sender<i64>) {
        let mut next = None;
        while end > 0 && next.is_none_or(|next| next < end) {
            let message = self.receive(&start).await;
            let after = message.offset() + 1;
            self.apply(&message);
            next = Some(after);
            progress.send_replace(after);
        }
        // Then whatever the start reader has already fetched. The tail
        // takes over exactly where that ends, which is where a record
        // batch ends: tansu 0.6 answers a fetch from inside a batch with
        // the batches after it, and its high watermark can stop short of
        // the last batch's end, so neither may decide where the tail starts.
        while let Some(fetched) = schemas::topics::already_fetched(&start).await {
            match fetched {
                Ok(message) => {
                    next = Some(message.offset() + 1);
                    self.apply(&message);
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "reading the delivery log failed; the tail takes over");
                    break;
                }
            }
        }
        progress.send_replace(READ_TO_END);
        drop(progress);
        // The broker answers a fetch once it holds 1 MiB of new log or
        // after 250 ms: a few fetches a second, however busy. With
        // `fetch.min.bytes` 1 each of this bridge's own log writes (then
        // one per 5 ms under load) was fetched straight back, and the
        // broker's acknowledgements of the webhooks' records came later
        // for it (half-peak p99 14–19 ms against 10–12; BENCHMARKS.md).
        // Another instance's deliveries reach this view within ~¼ s.
        // librdkafka prefetches up to 64 MiB per partition by default;
        // the log's records are a few hundred bytes, read as they come.
        let settings =
            [("fetch.wait.max.ms", "250"), ("fetch.min.bytes", "1048576"), ("queued.max.messages.kbytes", "2048")];
        let tail = match log_consumer(&brokers, &settings).and_then(|tail| {
            read_from(&tail, &self.topic, next.map_or(Offset::Beginning, Offset::Offset))?;
            Ok(tail)
        }) {
            Ok(tail) => {
                drop(start);
                tail
            }
            Err(error) => {
                tracing::warn!(%error, topic = %self.topic, "cannot start the delivery log's tail; reading on with the start reader");
                start
            }
        };
        loop {
            let message = self.receive(&tail).await;
            self.apply(&message);
        }
    }

    /// The next record, retrying after errors.
    async fn receive<'c>(&self, consumer: &'c StreamConsumer) -> rdkafka::message::BorrowedMessage<'c> {
        loop {
            match consumer.recv().await {
                Ok(message) => return message,
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "reading the delivery log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Puts one log record's deliveries into the view, unless this process wrote it.
    fn apply(&self, message: &impl Message) {
        if self.written_here(message) {
            return;
        }
        match message.payload().map(serde_json::from_slice::<Logged>) {
            Some(Ok(Logged::Batch(records))) => records.iter().for_each(|r| self.remember(r)),
            Some(Ok(Logged::One(record))) => self.remember(&record),
            Some(Err(error)) => {
                tracing::warn!(%error, topic = %self.topic, offset = message.offset(), "a delivery-log record does not parse; skipped");
            }
            None => {}
        }
    }

    /// Whether this process wrote the record (and so already has it in its view).
    fn written_here(&self, message: &impl Message) -> bool {
        message.headers().is_some_and(|headers| {
            headers.iter().any(|h| h.key == WRITER_HEADER && h.value == Some(self.instance.as_bytes()))
        })
    }

    fn remember(&self, record: &DeliveryRecord) {
        let digest = digest(&record.source, &record.delivery_id);
        let mut shard = self.view.shard(digest);
        shard.remember(digest, record);
        let cap = self.view.shard_cap;
        if shard.seen.len() > cap
            && let Some((count, newest)) = shard.forget_oldest(cap - cap / 8)
        {
            drop(shard);
            self.view.evicted.fetch_add(count as u64, Ordering::Relaxed);
            self.view.forgotten_up_to_ms.fetch_max(newest, Ordering::Relaxed);
        }
    }

    /// Admits a delivery received at `now_ms`, or says it is a duplicate or in flight.
    pub fn admit(&self, source: &str, delivery_id: &str, now_ms: i64) -> Admission {
        let digest = digest(source, delivery_id);
        let mut shard = self.view.shard(digest);
        if let Some(seen) = shard.seen.get(&digest)
            && now_ms - seen.received_at_ms <= self.window_ms
        {
            return Admission::Duplicate(seen.to_record(source, delivery_id));
        }
        if !shard.in_flight.insert(digest) {
            return Admission::InFlight;
        }
        Admission::New(InFlight { digest, view: self.view.clone() })
    }

    /// Records a delivery as done: in memory at once, in Kafka with the
    /// other deliveries of the next 50 ms (`BATCH_LINGER`), without waiting.
    pub fn record(&self, sink: &Arc<KafkaSink>, record: DeliveryRecord) {
        self.remember(&record);
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(record);
            pending.len() == 1
        };
        if first {
            let (log, sink) = (self.clone(), sink.clone());
            tokio::spawn(async move {
                tokio::time::sleep(BATCH_LINGER).await;
                log.write_pending(&sink);
            });
        }
    }

    /// Writes the deliveries recorded and not yet written (on shutdown, and
    /// [`BATCH_LINGER`] after the first of a batch).
    pub fn write_pending(&self, sink: &KafkaSink) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for batch in pending.chunks(BATCH_MAX) {
            match serde_json::to_vec(batch) {
                Ok(value) => sink.produce_detached(
                    &self.topic,
                    self.instance.as_bytes(),
                    &value,
                    (WRITER_HEADER, &self.instance),
                ),
                Err(error) => {
                    tracing::warn!(%error, "delivery-log records not written; a redelivery of them may be produced twice")
                }
            }
        }
    }

    /// What the log knows of a delivery (for lookups).
    pub fn get(&self, source: &str, delivery_id: &str) -> Option<DeliveryRecord> {
        let digest = digest(source, delivery_id);
        self.view.shard(digest).seen.get(&digest).map(|r| r.to_record(source, delivery_id))
    }

    /// How many deliveries the view holds.
    #[expect(clippy::len_without_is_empty, reason = "a gauge, not a collection")]
    pub fn len(&self) -> usize {
        self.view.each().map(|shard| shard.seen.len()).sum()
    }

    /// At most how many deliveries the view holds (`dedup.max_deliveries`,
    /// rounded up to a multiple of its shards).
    pub fn max_deliveries(&self) -> usize {
        self.view.shard_cap.saturating_mul(SHARDS)
    }

    /// How many deliveries were forgotten before their window ended, to stay within [`Self::max_deliveries`].
    pub fn evicted(&self) -> u64 {
        self.view.evicted.load(Ordering::Relaxed)
    }

    /// How far back, at `now_ms`, a redelivery is still recognised: the
    /// window, or less once deliveries had to be forgotten early.
    pub fn reach_ms(&self, now_ms: i64) -> i64 {
        let forgotten = self.view.forgotten_up_to_ms.load(Ordering::Relaxed);
        if forgotten == i64::MIN { self.window_ms } else { self.window_ms.min(now_ms.saturating_sub(forgotten)) }
    }

    /// Forgets deliveries older than the window (called periodically), one shard at a time.
    pub fn prune(&self, now_ms: i64) {
        self.view.each().for_each(|mut shard| shard.prune(now_ms, self.window_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(delivery_id: &str, received_at_ms: i64, trace_id: Option<&str>) -> DeliveryRecord {
        DeliveryRecord {
            source: "stripe".into(),
            delivery_id: delivery_id.into(),
            received_at_ms,
            outcome: "produced".into(),
            topic: "webhooks.stripe.charge.refunded".into(),
            partition: 2,
            offset: 41,
            event_type: Some("charge.refunded".into()),
            schema_id: Some(7),
            schema_version: Some(2),
            trace_id: trace_id.map(str::to_owned),
            origin: Some("webhook".into()),
        }
    }

    fn landings(log: &DeliveryLog) -> usize {
        log.view.each().map(|shard| shard.landings.len()).sum()
    }

    fn log(window_ms: i64) -> DeliveryLog {
        capped_log(window_ms, usize::MAX)
    }

    fn capped_log(window_ms: i64, max_deliveries: usize) -> DeliveryLog {
        DeliveryLog {
            topic: "t".into(),
            window_ms,
            instance: "me".into(),
            view: Arc::new(View::new(max_deliveries)),
            pending: Arc::default(),
        }
    }

    #[test]
    fn remembers_a_record_as_written_and_shares_its_landing() {
        let log = log(1_000);
        let first = record("evt_1", 10, Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        log.remember(&first);
        log.remember(&record("evt_2", 20, Some("not hex")));
        assert_eq!(log.get("stripe", "evt_1"), Some(first));
        assert_eq!(log.get("stripe", "evt_2").and_then(|r| r.trace_id), None);
        assert_eq!(log.get("github", "evt_1"), None);
        assert_eq!(log.len(), 2);
        let landings = landings(&log);
        assert!(landings <= 2, "one landing per shard holding deliveries of one topic, found {landings}");
    }

    #[test]
    fn admits_once_then_answers_in_flight_then_duplicate_within_the_window() {
        let log = log(1_000);
        let Admission::New(mark) = log.admit("stripe", "evt_1", 100) else { panic!("a new delivery is admitted") };
        assert!(matches!(log.admit("stripe", "evt_1", 100), Admission::InFlight));
        log.remember(&record("evt_1", 100, None));
        drop(mark);
        assert!(matches!(log.admit("stripe", "evt_1", 1_100), Admission::Duplicate(r) if r.offset == 41));
        assert!(matches!(log.admit("stripe", "evt_1", 1_101), Admission::New(_)), "past the window it is new");
    }

    #[test]
    fn an_entry_of_the_window_stays_small() {
        // Key and value as the table stores them: every byte here is held
        // for every delivery of the window (3 days by default).
        let entry = std::mem::size_of::<(Digest, Remembered)>();
        assert!(entry <= 80, "a window entry grew to {entry} bytes");
    }

    #[test]
    fn reads_batches_and_the_single_records_of_earlier_versions() {
        let one = record("evt_1", 10, None);
        let batch = vec![record("evt_2", 20, None), record("evt_3", 30, None)];
        let parse = |value: Vec<u8>| serde_json::from_slice::<Logged>(&value).map_err(|e| e.to_string());
        assert!(matches!(parse(serde_json::to_vec(&one).unwrap_or_default()), Ok(Logged::One(r)) if r == one));
        assert!(matches!(parse(serde_json::to_vec(&batch).unwrap_or_default()), Ok(Logged::Batch(b)) if b == batch));
        assert!(parse(b"{\"source\":\"stripe\"}".to_vec()).is_err());
    }

    #[test]
    fn prune_forgets_what_is_older_than_the_window() {
        let log = log(1_000);
        for n in 0..100 {
            log.remember(&record(&format!("evt_{n}"), n * 100, None));
        }
        log.prune(10_000);
        assert_eq!(log.len(), 10, "received at 9 000 ms … 9 900 ms, within 1 s of 10 000 ms");
        assert!(log.get("stripe", "evt_89").is_none() && log.get("stripe", "evt_90").is_some());
        log.prune(1_000_000);
        assert_eq!(log.len(), 0);
        assert_eq!(landings(&log), 0, "landings nobody points to are dropped too");
    }

    #[test]
    fn over_the_cap_the_oldest_are_forgotten_first_and_counted() {
        let log = capped_log(1_000_000, 160);
        assert_eq!(log.max_deliveries(), 160);
        assert_eq!(log.reach_ms(5_000), 1_000_000, "nothing forgotten: the whole window");
        for n in 0..2_000 {
            log.remember(&record(&format!("evt_{n}"), n, None));
        }
        let held = log.len();
        assert!((140..=160).contains(&held), "each shard keeps 7/8 to all of its 10, holding {held}");
        assert_eq!(log.evicted(), 2_000 - held as u64);
        assert!(log.get("stripe", "evt_1999").is_some() && log.get("stripe", "evt_0").is_none());
        // Every delivery after the newest one forgotten is still there.
        let reach = log.reach_ms(2_000);
        assert!(reach > 0 && reach < 2_000, "the window is cut to the last {reach} ms");
        let newest_forgotten = 2_000 - reach;
        assert!(log.get("stripe", &format!("evt_{newest_forgotten}")).is_none());
        assert!((newest_forgotten + 1..2_000).all(|n| log.get("stripe", &format!("evt_{n}")).is_some()));
        assert!(matches!(log.admit("stripe", "evt_0", 2_000), Admission::New(_)), "forgotten: new again");
    }

    #[test]
    fn forgetting_the_oldest_keeps_exactly_the_newest_even_among_ties() {
        let mut shard = Shard::default();
        for n in 0..10_i64 {
            let digest = u128::try_from(n).unwrap_or_default();
            shard.remember(digest, &record(&format!("evt_{n}"), n / 4 * 100, None));
        }
        // Received at 0, 0, 0, 0, 100, 100, 100, 100, 200, 200: the 6 oldest
        // are the four at 0 and two of the four at 100.
        assert_eq!(shard.forget_oldest(4), Some((6, 100)));
        let mut times: Vec<i64> = shard.seen.values().map(|r| r.received_at_ms).collect();
        times.sort_unstable();
        assert_eq!(times, [100, 100, 200, 200]);
        assert_eq!(shard.forget_oldest(4), None, "nothing over");
    }
}
