//! **lookup**: one delivery, end to end, for SREs: when the bridge received
//! it, what it became (event type, schema id and version, topic, partition,
//! offset), its trace id, and which consumers have processed it (their
//! stored offset is past the record's).

use bridge::deliveries::DeliveryLog;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;

/// What is known of one delivery, as JSON; `None` if the bridge has no record of it.
pub async fn lookup(
    brokers: &str,
    deliveries_topic: &str,
    pool: &PgPool,
    source: &str,
    delivery_id: &str,
) -> anyhow::Result<Option<Value>> {
    let log = DeliveryLog::open(brokers, deliveries_topic, Duration::from_secs(u64::MAX / 4), usize::MAX).await?;
    let Some(record) = log.get(source, delivery_id) else { return Ok(None) };
    let mut out = bridge::app::delivery_json(&record);
    let offsets: Vec<(String, i64)> = sqlx::query_as(
        r#"SELECT consumer, next_offset FROM consumer_offsets WHERE topic = $1 AND "partition" = $2 ORDER BY consumer"#,
    )
    .bind(&record.topic)
    .bind(record.partition)
    .fetch_all(pool)
    .await?;
    let consumers: Vec<Value> = ["sync", "analytics"]
        .iter()
        .map(|name| {
            let processed = offsets.iter().any(|(consumer, next)| consumer == name && *next > record.offset);
            json!({ "consumer": name, "processed": processed })
        })
        .collect();
    out["consumers"] = Value::Array(consumers);
    let synced: Option<(chrono::DateTime<chrono::Utc>,)> =
        sqlx::query_as("SELECT consumed_at FROM webhook_events WHERE source = $1 AND delivery_id = $2")
            .bind(source)
            .bind(delivery_id)
            .fetch_optional(pool)
            .await?;
    out["synced_at"] = json!(synced.map(|(at,)| at.to_rfc3339()));
    Ok(Some(out))
}
