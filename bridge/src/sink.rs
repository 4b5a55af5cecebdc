//! The Kafka producer: idempotent, `acks=all`, compressed. A produce
//! returns only once the broker has acknowledged the record (its delivery
//! report), or fails when the deadline passes, so the HTTP answer can wait
//! for it: the bridge answers 2xx only for records Kafka holds.

use crate::config::KafkaConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};
use schemas::topics::KnownTopics;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often librdkafka hands the producer's statistics to `/metrics`,
/// unless `kafka.producer."statistics.interval.ms"` says otherwise.
const STATISTICS_INTERVAL_MS: &str = "10000";

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

/// The producer's context: keeps what librdkafka's latest statistics say
/// of the queue and of each broker, for `/metrics`. A handle: the producer
/// owns one, the sink keeps a clone to read them.
#[derive(Debug, Default, Clone)]
pub struct SinkContext {
    latest: Arc<Mutex<Option<ProducerStatistics>>>,
}

/// The figures of one librdkafka statistics report that `/metrics` shows.
#[derive(Debug, Clone, PartialEq)]
struct ProducerStatistics {
    /// Records in the producer's queues, not yet acknowledged.
    queued: i64,
    /// The brokers it talks to (not its bootstrap or internal handles).
    brokers: Vec<BrokerStatistics>,
}

#[derive(Debug, Clone, PartialEq)]
struct BrokerStatistics {
    /// `host:port/node id`.
    name: String,
    /// Requests sent, all kinds.
    requests: u64,
    /// Wakeups of the broker's thread.
    wakeups: u64,
    /// The round trip, µs (50th and 99th percentiles), over the last
    /// report's window that held a request; `None` before the first.
    rtt_us: Option<(i64, i64)>,
}

impl From<Statistics> for ProducerStatistics {
    fn from(statistics: Statistics) -> Self {
        let mut brokers: Vec<BrokerStatistics> = statistics
            .brokers
            .into_values()
            .filter(|broker| broker.nodeid >= 0)
            .map(|broker| BrokerStatistics {
                rtt_us: broker.rtt.filter(|rtt| rtt.cnt > 0).map(|rtt| (rtt.p50, rtt.p99)),
                name: broker.name,
                requests: broker.tx,
                wakeups: broker.wakeups.unwrap_or(0),
            })
            .collect();
        brokers.sort_by(|a, b| a.name.cmp(&b.name));
        Self { queued: statistics.msg_cnt as i64, brokers }
    }
}

impl ProducerStatistics {
    /// This report, with the round trip of `previous` for each broker whose
    /// window held no request: a quiet interval keeps the last one measured.
    fn keeping_round_trips_of(mut self, previous: Option<&Self>) -> Self {
        for broker in self.brokers.iter_mut().filter(|broker| broker.rtt_us.is_none()) {
            broker.rtt_us = previous
                .and_then(|previous| previous.brokers.iter().find(|before| before.name == broker.name))
                .and_then(|before| before.rtt_us);
        }
        self
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = Some(ProducerStatistics::from(statistics).keeping_round_trips_of(latest.as_ref()));
    }
}

impl SinkContext {
    /// The latest statistics in the Prometheus text format (nothing before the first report).
    fn render(&self, out: &mut String) {
        let Some(latest) = self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let _ = writeln!(
            out,
            "# HELP bridge_kafka_queue_messages Records in the producer not yet acknowledged (librdkafka's last statistics).\n\
             # TYPE bridge_kafka_queue_messages gauge\nbridge_kafka_queue_messages {}",
            latest.queued
        );
        let _ = writeln!(
            out,
            "# HELP bridge_kafka_requests_total Requests the producer sent to each broker.\n\
             # TYPE bridge_kafka_requests_total counter"
        );
        for broker in &latest.brokers {
            let _ = writeln!(out, "bridge_kafka_requests_total{{broker=\"{}\"}} {}", broker.name, broker.requests);
        }
        let _ = writeln!(
            out,
            "# HELP bridge_kafka_broker_wakeups_total Wakeups of the producer's thread for each broker: a few per \
             request; many more would mean it polls in a loop while it waits for acknowledgements (vendor/README.md).\n\
             # TYPE bridge_kafka_broker_wakeups_total counter"
        );
        for broker in &latest.brokers {
            let _ = writeln!(out, "bridge_kafka_broker_wakeups_total{{broker=\"{}\"}} {}", broker.name, broker.wakeups);
        }
        let _ = writeln!(
            out,
            "# HELP bridge_kafka_broker_rtt_seconds The round trip of the producer's requests to each broker, over the last statistics interval that had any.\n\
             # TYPE bridge_kafka_broker_rtt_seconds gauge"
        );
        for broker in &latest.brokers {
            if let Some((p50, p99)) = broker.rtt_us {
                for (quantile, us) in [("0.5", p50), ("0.99", p99)] {
                    let _ = writeln!(
                        out,
                        "bridge_kafka_broker_rtt_seconds{{broker=\"{}\",quantile=\"{quantile}\"}} {}",
                        broker.name,
                        us as f64 / 1e6
                    );
                }
            }
        }
    }
}

/// The producer and the topics known to exist.
pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
    statistics: SinkContext,
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
        // Under load a batch fills while the partition's request in flight
        // waits for its acknowledgement, however short the linger.
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
        let mut client = producer_config(config, ack_timeout);
        if !config.producer.contains_key("statistics.interval.ms") {
            client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        }
        let statistics = SinkContext::default();
        let producer = client.create_with_context(statistics.clone()).map_err(|e| SinkError::Refused(e.to_string()))?;
        Ok(Self { producer, statistics, partitions: config.partitions, topics: KnownTopics::new(&config.brokers) })
    }

    /// What the producer's latest statistics say, for `/metrics`: records
    /// queued, and per broker the requests, the thread's wakeups and the
    /// round trip.
    pub fn render_metrics(&self, out: &mut String) {
        self.statistics.render(out);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(brokers: &[(&str, Option<(i64, i64)>)]) -> ProducerStatistics {
        ProducerStatistics {
            queued: 3,
            brokers: brokers
                .iter()
                .map(|(name, rtt_us)| BrokerStatistics {
                    name: (*name).to_owned(),
                    requests: 10,
                    wakeups: 40,
                    rtt_us: *rtt_us,
                })
                .collect(),
        }
    }

    #[test]
    fn a_quiet_interval_keeps_each_brokers_last_round_trip() {
        let before = report(&[("a:9092/1", Some((1_000, 4_000))), ("b:9092/2", Some((2_000, 3_000)))]);
        let now = report(&[("a:9092/1", None), ("b:9092/2", Some((5_000, 9_000))), ("c:9092/3", None)])
            .keeping_round_trips_of(Some(&before));
        let rtt: Vec<_> = now.brokers.iter().map(|broker| broker.rtt_us).collect();
        assert_eq!(rtt, [Some((1_000, 4_000)), Some((5_000, 9_000)), None]);
    }

    #[test]
    fn the_statistics_are_rendered_per_broker_in_seconds() {
        let context = SinkContext::default();
        let mut out = String::new();
        context.render(&mut out);
        assert_eq!(out, "", "nothing before librdkafka's first report");
        *context.latest.lock().expect("lock") =
            Some(report(&[("a:9092/1", Some((1_500, 12_000))), ("b:9092/2", None)]));
        context.render(&mut out);
        for line in [
            "bridge_kafka_queue_messages 3",
            r#"bridge_kafka_requests_total{broker="a:9092/1"} 10"#,
            r#"bridge_kafka_requests_total{broker="b:9092/2"} 10"#,
            r#"bridge_kafka_broker_wakeups_total{broker="a:9092/1"} 40"#,
            r#"bridge_kafka_broker_rtt_seconds{broker="a:9092/1",quantile="0.5"} 0.0015"#,
            r#"bridge_kafka_broker_rtt_seconds{broker="a:9092/1",quantile="0.99"} 0.012"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(!out.contains(r#"rtt_seconds{broker="b:9092/2""#), "no round trip measured yet for b:\n{out}");
    }
}
