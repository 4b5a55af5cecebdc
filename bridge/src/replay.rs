//! Replaying the dead-letter topic after a fix (a new schema version, a
//! config change): each dead letter is run again through the bridge's
//! internal path with `origin = replay`. Those that now fit are produced to
//! their topics (and the delivery log records them); those that still do not
//! are left on the dead-letter topic, untouched. Records already repaired by
//! an earlier replay are recognised as duplicates, so a replay can be run
//! again safely.

use crate::app::{App, Ingested};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read.
    pub read: u64,
    /// Now on their topics.
    pub repaired: u64,
    /// Repaired by an earlier replay (or delivered since).
    pub already_repaired: u64,
    /// Still unusable: left on the dead-letter topic.
    pub still_unusable: u64,
    /// Not replayable (no source header, or the source is no longer configured).
    pub skipped: u64,
}

fn header(message: &impl Message, name: &str) -> Option<String> {
    message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// How long the replay waits for the next dead letter before it calls the
/// topic stuck.
const STALL: Duration = Duration::from_secs(5);

/// Replays every record on the dead-letter topic up to its end as it stands
/// now, calling `progress(done, total)` after each (`total` an estimate).
pub async fn replay(app: &App, mut progress: impl FnMut(u64, u64)) -> anyhow::Result<ReplayReport> {
    let topic = app.config.kafka.dead_letter_topic.clone();
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &app.config.kafka.brokers)
            .set("group.id", "bridge-replay")
            .set("enable.auto.commit", "false")
            .create()?,
    );
    let mut ends = std::collections::HashMap::new();
    let mut total = 0u64;
    let mut assignment = TopicPartitionList::new();
    let watermarks = schemas::topics::blocking(&consumer, {
        let topic = topic.clone();
        move |consumer| -> rdkafka::error::KafkaResult<Vec<(i32, i64, i64)>> {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions = metadata.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions());
            partitions
                .map(|p| {
                    consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10)).map(|(lo, hi)| (p.id(), lo, hi))
                })
                .collect()
        }
    })
    .await??;
    for (partition, low, high) in watermarks {
        if high > low {
            ends.insert(partition, high);
            total += (high - low) as u64;
            assignment.add_partition_offset(&topic, partition, Offset::Offset(low))?;
        }
    }
    let mut report = ReplayReport::default();
    if total == 0 {
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    loop {
        // Past every partition's high watermark, only what is already fetched.
        let message = if ends.is_empty() {
            match schemas::topics::already_fetched(&consumer).await {
                Some(message) => message?,
                None => break,
            }
        } else {
            match tokio::time::timeout(STALL, consumer.recv()).await {
                Ok(message) => message?,
                Err(_) => {
                    anyhow::bail!("the dead-letter topic stopped answering after {} of {total} records", report.read)
                }
            }
        };
        report.read += 1;
        total = total.max(report.read);
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        let Some(source) = header(&message, "source").filter(|s| app.sources.contains_key(s)) else {
            report.skipped += 1;
            progress(report.read, total);
            continue;
        };
        let mut headers = HeaderMap::new();
        let original: serde_json::Map<String, serde_json::Value> =
            header(&message, "original_headers").and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default();
        for (name, value) in original {
            if let (Ok(name), Some(Ok(value))) =
                (HeaderName::from_bytes(name.as_bytes()), value.as_str().map(HeaderValue::from_str))
            {
                headers.insert(name, value);
            }
        }
        let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        drop(message);
        match app.ingest_internal_outcome(&source, &headers, body, "replay").await {
            Ok(Ingested::Produced) => report.repaired += 1,
            Ok(Ingested::Duplicate) => report.already_repaired += 1,
            Ok(Ingested::NotProduced { .. }) => report.still_unusable += 1,
            Err(error) => {
                tracing::warn!(%error, source, "replay refused");
                report.still_unusable += 1;
            }
        }
        progress(report.read, total);
    }
    Ok(report)
}
