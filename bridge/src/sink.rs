//! The Kafka producer: idempotent, `acks=all`, compressed. A produce
//! returns only once the broker has acknowledged the record (its delivery
//! report), or fails when the deadline passes, so the HTTP answer can wait
//! for it: the bridge answers 2xx only for records Kafka holds.

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use schemas::topics::KnownTopics;
use std::time::Duration;

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

/// Why a record is not (known to be) on its topic.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker did not acknowledge within the deadline.
    #[error("the Kafka broker did not acknowledge the record within {0:?}")]
    Timeout(Duration),
    /// The broker or client refused the record.
    #[error("Kafka refused the record: {0}")]
    Refused(String),
    /// The topic could not be created.
    #[error(transparent)]
    Topic(#[from] schemas::topics::TopicError),
}

/// The producer and the topics known to exist.
pub struct KafkaSink {
    producer: FutureProducer,
    partitions: i32,
    topics: KnownTopics,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("brokers", &self.topics.brokers()).finish_non_exhaustive()
    }
}

/// The librdkafka settings of the bridge's producer for `config`: the
/// benchmark's bare producer takes them from here too, so that the Kafka
/// limit it measures is this producer's.
pub fn producer_config(config: &KafkaConfig, ack_timeout: Duration) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        // A webhook's answer waits for its record's batch: 1 ms, not 2,
        // answered 64 connections 30 % faster at the same CPU per webhook
        // against a broker acknowledging within about a millisecond
        // (BENCHMARKS.md); 0 sends a request per record and costs more.
        // Against a slower broker, librdkafka's broker thread polls in a
        // loop for the round trip less the linger: users set it to about
        // that round trip (README).
        .set("linger.ms", "1")
        // After a broker outage, reconnect within a second of its return
        // (librdkafka's default backs off up to 10 s).
        .set("reconnect.backoff.max.ms", "1000")
        // A record the HTTP answer gave up on (503 after ack_timeout)
        // stays queued and is delivered once the broker is back, at
        // worst a duplicate of the provider's retry. Timing it out
        // instead would make librdkafka bump the idempotent producer's
        // epoch locally, which tansu 0.6 refuses on every later
        // produce; 5 minutes is librdkafka's own default.
        .set("message.timeout.ms", ack_timeout.as_millis().max(300_000).to_string())
        // Bounds what an outage can queue (librdkafka's default is 1 GiB);
        // a full queue is answered 503 at the deadline like a silent broker.
        .set("queue.buffering.max.kbytes", "32768");
    for (key, value) in &config.producer {
        client.set(key, value);
    }
    client
}

impl KafkaSink {
    /// A producer for `config`; records stay queued for at least 5 minutes (or `ack_timeout`).
    pub fn new(config: &KafkaConfig, ack_timeout: Duration) -> Result<Self, SinkError> {
        let producer = producer_config(config, ack_timeout).create().map_err(|e| SinkError::Refused(e.to_string()))?;
        Ok(Self { producer, partitions: config.partitions, topics: KnownTopics::new(&config.brokers) })
    }

    /// Creates `topic` (with the configured partitions) unless it is known
    /// to exist; the requests that ask while it is being created wait for
    /// that creation.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), SinkError> {
        Ok(self.topics.ensure(topic, self.partitions).await?)
    }

    /// Produces one record and waits for the broker's acknowledgement, at most `deadline`.
    pub async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        deadline: Duration,
    ) -> Result<Produced, SinkError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let send = self.producer.send(record, Timeout::After(deadline));
        match tokio::time::timeout(deadline, send).await {
            Err(_) => Err(SinkError::Timeout(deadline)),
            Ok(Err((error, _))) => Err(SinkError::Refused(error.to_string())),
            Ok(Ok(delivery)) => {
                Ok(Produced { topic: topic.to_owned(), partition: delivery.partition, offset: delivery.offset })
            }
        }
    }

    /// Sends a record without waiting for the acknowledgement (bookkeeping
    /// records whose loss costs at most a duplicate).
    pub fn produce_detached(&self, topic: &str, key: &[u8], payload: &[u8], header: (&str, &str)) {
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header { key: header.0, value: Some(header.1) });
        let record = FutureRecord::<[u8], [u8]>::to(topic).key(key).payload(payload).headers(headers);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        tracing::warn!(
                            "a delivery-log record was not written; a redelivery of it may be produced twice"
                        );
                    }
                });
            }
            Err((error, _)) => {
                tracing::warn!(%error, "a delivery-log record was not queued; a redelivery of it may be produced twice");
            }
        }
    }

    /// Whether the broker answers a metadata request now.
    pub async fn broker_reachable(&self) -> bool {
        schemas::topics::blocking(&self.producer, |producer| {
            producer.client().fetch_metadata(None, Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits for every record in flight (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::error!(%error, "records still unacknowledged at shutdown");
        }
    }
}
