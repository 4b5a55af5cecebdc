//! The `_schemas` topic as the registry's storage: one partition, read from
//! the beginning into [`State`] by a background task, appended to by writes.
//!
//! Reads are served from memory. A write appends one record, then waits until
//! the reader task has applied the log up to that record's offset, and looks
//! at the state to see whether its claim won (see [`super::state`] for why
//! the first claim in the log wins).
//!
//! The reader task reads with two consumers of the same partition and
//! applies each record once, in log order (a record below its position is
//! one the other consumer delivered first). An idle registry asks the broker
//! only every 250 ms (`fetch.wait.max.ms`); while a write waits for its
//! record, a second consumer reads from the position with a 10 ms wait.
//! Kafka answers a fetch as soon as a record arrives, so there the wait only
//! sets how often an idle reader asks; tansu 0.6 holds every fetch for the
//! whole wait, records or not, and its fetches delay its acknowledgements of
//! produces: a single reader at 20 ms (50 fetches a second) held the bridge's
//! half-peak p99 at 14–16 ms, where 250 ms gave 8–10 (BENCHMARKS.md).

use super::error::RegistryError;
use super::log::{LogKey, SchemaValue};
use super::state::{Apply, State};
use crate::topics::ensure_topic;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How long a write waits for the broker and for its own record to be read back.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// The Kafka-backed log and the state built from it.
#[derive(Clone)]
pub struct LogStore {
    topic: Arc<str>,
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
    /// Reads from the position, quickly, while a write waits for its record.
    hurried: Arc<StreamConsumer>,
    /// The highest offset a write waits for, and until when it waits.
    wanted: Arc<Mutex<(i64, Instant)>>,
    /// Wakes the reader task when a write starts waiting.
    hurry: Arc<Notify>,
    state: Arc<RwLock<State>>,
    /// The offset of the next record to apply (everything below is applied).
    position: watch::Receiver<i64>,
    /// The offset of the latest record the reader rejected (-1: none yet).
    rejected: Arc<AtomicI64>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("topic", &self.topic).finish_non_exhaustive()
    }
}

fn store_error(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(error.to_string())
}

impl LogStore {
    /// Creates the topic if needed (one partition, compacted), starts the
    /// reader, and returns once every record present at start is applied.
    pub async fn open(brokers: &str, topic: &str) -> Result<Self, RegistryError> {
        ensure_topic(brokers, topic, 1, &[("cleanup.policy", "compact"), ("min.compaction.lag.ms", "86400000")])
            .await
            .map_err(store_error)?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(store_error)?;
        let reader = |wait_ms: &str| {
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", "schemas-registry-reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", wait_ms)
                .create::<StreamConsumer>()
                .map_err(store_error)
        };
        let consumer = reader("250")?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning).map_err(store_error)?;
        consumer.assign(&assignment).map_err(store_error)?;
        // Paused until a write waits; then resumed and moved to the position.
        let hurried = reader("10")?;
        hurried.assign(&assignment).map_err(store_error)?;
        hurried.pause(&assignment).map_err(store_error)?;
        let (position_tx, position) = watch::channel(0i64);
        let store = Self {
            topic: topic.into(),
            producer,
            consumer: Arc::new(consumer),
            hurried: Arc::new(hurried),
            wanted: Arc::new(Mutex::new((-1, Instant::now()))),
            hurry: Arc::default(),
            state: Arc::new(RwLock::new(State::default())),
            position,
            rejected: Arc::new(AtomicI64::new(-1)),
        };
        tokio::spawn(store.clone().read_forever(position_tx));
        store.catch_up().await?;
        Ok(store)
    }

    /// The offset of the latest record rejected by the reader, -1 if none:
    /// a claim (ours or another instance's) that lost a race.
    pub fn last_rejected(&self) -> i64 {
        self.rejected.load(Ordering::Acquire)
    }

    /// The state, for reading. Hold the guard briefly: the reader task waits on it.
    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every record that was in the topic when this was called is applied.
    pub async fn catch_up(&self) -> Result<(), RegistryError> {
        let high = self.high_watermark(Duration::from_secs(10)).await?;
        self.wait_applied(high - 1).await
    }

    /// The log's high watermark. Asked through the producer's connection:
    /// the idle reader's is held by its long fetch, and a broker may answer
    /// requests on one connection in order (tansu 0.6 does).
    async fn high_watermark(&self, timeout: Duration) -> Result<i64, RegistryError> {
        let topic = self.topic.clone();
        let (_, high) = crate::topics::blocking(&self.producer, move |producer| {
            producer.client().fetch_watermarks(&topic, 0, timeout)
        })
        .await
        .map_err(store_error)?
        .map_err(store_error)?;
        Ok(high)
    }

    /// Waits until the record at `offset` is applied.
    pub async fn wait_applied(&self, offset: i64) -> Result<(), RegistryError> {
        let mut position = self.position.clone();
        if *position.borrow() <= offset {
            let mut wanted = self.wanted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *wanted = (wanted.0.max(offset), Instant::now() + WRITE_TIMEOUT);
            drop(wanted);
            self.hurry.notify_one();
        }
        tokio::time::timeout(WRITE_TIMEOUT, position.wait_for(|next| *next > offset))
            .await
            .map_err(|_| {
                RegistryError::Timeout(format!(
                    "the registry did not read back offset {offset} of '{}' within {WRITE_TIMEOUT:?}",
                    self.topic
                ))
            })?
            .map_err(|_| RegistryError::Store("the log reader stopped".into()))?;
        Ok(())
    }

    /// Appends one record (`value: None` is a tombstone) and returns its offset
    /// once the broker has acknowledged it.
    pub async fn append(&self, key: &LogKey, value: Option<Vec<u8>>) -> Result<i64, RegistryError> {
        let key = serde_json::to_vec(key).map_err(store_error)?;
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic).key(&key).partition(0);
        if let Some(value) = value.as_ref() {
            record = record.payload(value);
        }
        let delivery = self.producer.send(record, WRITE_TIMEOUT).await.map_err(|(error, _)| store_error(error))?;
        Ok(delivery.offset)
    }

    /// Appends a SCHEMA record.
    pub async fn append_schema(&self, value: &SchemaValue) -> Result<i64, RegistryError> {
        let key = LogKey::schema(&value.subject, value.version);
        self.append(&key, Some(serde_json::to_vec(value).map_err(store_error)?)).await
    }

    /// Flushes the producer (on shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }

    async fn read_forever(self, position: watch::Sender<i64>) {
        // Keys whose latest record in the log was rejected, with the value to re-assert.
        let mut needs_repair: HashMap<Vec<u8>, SchemaValue> = HashMap::new();
        let mut next = 0;
        let mut hurried = false;
        loop {
            let (wanted, until) = *self.wanted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let received = if wanted >= next && Instant::now() < until {
                if !hurried {
                    if let Err(error) = self.hurry_from(next).await {
                        tracing::warn!(%error, "cannot read the schemas log from {next}");
                    }
                    hurried = true;
                }
                // Bounded, so that a write that gave up does not keep it hurried.
                match tokio::time::timeout(Duration::from_millis(500), self.hurried.recv()).await {
                    Ok(received) => received,
                    Err(_) => continue,
                }
            } else {
                if std::mem::take(&mut hurried)
                    && let Err(error) = self.hurried.pause(&self.partition())
                {
                    tracing::warn!(%error, "cannot pause the schemas log's hurried reader");
                }
                tokio::select! {
                    received = self.consumer.recv() => received,
                    () = self.hurry.notified() => continue,
                }
            };
            let message = match received {
                Ok(message) if message.offset() < next => continue, // the other consumer's, applied
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "reading the schemas log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let key = message.key().unwrap_or_default().to_vec();
            let outcome = {
                let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                state.apply(&key, message.payload())
            };
            match outcome {
                Apply::Applied => {
                    needs_repair.remove(&key);
                }
                Apply::Ignored(reason) => {
                    tracing::debug!(offset = message.offset(), %reason, "schemas log record ignored");
                }
                Apply::Rejected { reason, accepted, .. } => {
                    self.rejected.store(message.offset(), Ordering::Release);
                    tracing::warn!(offset = message.offset(), %reason, "schemas log record rejected: an earlier record claimed the same id, schema or version");
                    if let Some(accepted) = accepted {
                        needs_repair.insert(key, accepted);
                    }
                }
            }
            next = message.offset() + 1;
            drop(message);
            position.send_replace(next);
            if !needs_repair.is_empty() && self.at_end(next).await {
                for (_, value) in needs_repair.drain() {
                    if let Err(error) = self.append_schema(&value).await {
                        tracing::warn!(%error, subject = %value.subject, version = value.version, "could not repair the schemas log; will retry when the key is rejected again");
                    }
                }
            }
        }
    }

    /// The log's one partition.
    fn partition(&self) -> TopicPartitionList {
        let mut partition = TopicPartitionList::new();
        partition.add_partition(&self.topic, 0);
        partition
    }

    /// Resumes the hurried reader (assigned, paused in between) at `next`.
    async fn hurry_from(&self, next: i64) -> Result<(), RegistryError> {
        let (topic, partition) = (self.topic.clone(), self.partition());
        crate::topics::blocking(&self.hurried, move |hurried| {
            hurried.resume(&partition)?;
            hurried.seek(&topic, 0, Offset::Offset(next), Duration::from_secs(1))
        })
        .await
        .map_err(store_error)?
        .map_err(store_error)
    }

    /// Repairs wait until the reader has caught up with the log, so that a
    /// repair already written later in the log is seen first.
    async fn at_end(&self, next: i64) -> bool {
        self.high_watermark(Duration::from_secs(5)).await.is_ok_and(|high| next >= high)
    }
}
