//! The delivery log: which deliveries the bridge has already put on Kafka,
//! for deduplication within a window, also across restarts.
//!
//! Each delivery the bridge produced (or dead-lettered) is recorded in a
//! compacted topic (`_bridge_deliveries`), keyed `source/delivery-id`, with
//! where it landed. On start the topic is read from the beginning, and a
//! background task keeps reading it, so several bridge instances share one
//! view. The record is written after the delivery's own record is
//! acknowledged: a crash between the two costs at most one duplicate on
//! redelivery, never a loss.
//!
//! Two copies of the same delivery racing each other: the first holds an
//! in-flight mark; the second is answered 409 with `Retry-After` and, retried,
//! is recognised as a duplicate.

use crate::sink::KafkaSink;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
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

impl DeliveryRecord {
    fn key(&self) -> String {
        key(&self.source, &self.delivery_id)
    }
}

fn key(source: &str, delivery_id: &str) -> String {
    format!("{source}/{delivery_id}")
}

/// The log and its in-memory view.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    topic: String,
    window_ms: i64,
    seen: Arc<Mutex<HashMap<String, DeliveryRecord>>>,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Marks a delivery in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    key: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
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
    /// Creates the topic if needed, reads it to its end, and keeps tailing it.
    pub async fn open(brokers: &str, topic: &str, window: Duration) -> anyhow::Result<Self> {
        schemas::topics::ensure_topic(brokers, topic, 1, &[("cleanup.policy", "compact")]).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "bridge-delivery-log")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
        let log = Self {
            topic: topic.to_owned(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            seen: Arc::default(),
            in_flight: Arc::default(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(log.clone().tail(consumer, high, ready_tx));
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("reading the delivery log '{topic}' took over 60 s"))??;
        Ok(log)
    }

    async fn tail(self, consumer: StreamConsumer, high: i64, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        if high <= 0
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    if let Some(record) =
                        message.payload().and_then(|p| serde_json::from_slice::<DeliveryRecord>(p).ok())
                    {
                        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(record.key(), record);
                    }
                    if message.offset() + 1 >= high
                        && let Some(ready) = ready.take()
                    {
                        let _ = ready.send(());
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "reading the delivery log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Admits a delivery received at `now_ms`, or says it is a duplicate or in flight.
    pub fn admit(&self, source: &str, delivery_id: &str, now_ms: i64) -> Admission {
        let key = key(source, delivery_id);
        if let Some(record) = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now_ms - record.received_at_ms <= self.window_ms
        {
            return Admission::Duplicate(record.clone());
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if !in_flight.insert(key.clone()) {
            return Admission::InFlight;
        }
        Admission::New(InFlight { key, set: self.in_flight.clone() })
    }

    /// Records a delivery as done: in memory at once, in Kafka without waiting.
    pub fn record(&self, sink: &KafkaSink, record: DeliveryRecord) {
        let key = record.key();
        if let Ok(value) = serde_json::to_vec(&record) {
            sink.produce_detached(&self.topic, key.as_bytes(), &value);
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key, record);
    }

    /// What the log knows of a delivery (for lookups).
    pub fn get(&self, source: &str, delivery_id: &str) -> Option<DeliveryRecord> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key(source, delivery_id)).cloned()
    }

    /// Forgets deliveries older than the window (called periodically).
    pub fn prune(&self, now_ms: i64) {
        let window = self.window_ms;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, r| now_ms - r.received_at_ms <= window);
    }
}
