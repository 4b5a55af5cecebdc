//! **analytics**: per-minute rollups by source and event type, by the
//! minute the bridge received each event:
//! - events (each delivery id once, whatever its copies);
//! - distinct entities (the event's entity: payment intent, order, …);
//! - monetary sums in minor units by currency (Stripe `data.object.amount`
//!   with `currency`; Shopify `total_price` with `currency`);
//! - latency histograms for provider → bridge (`occurred_at` →
//!   `received_at`) and bridge → consumer (`received_at` → processed), in
//!   buckets 10 % wide, from which [`report`] reads p50/p90/p99.
//!
//! A batch of records is two statements: the deliveries not counted before,
//! then their sums added to the rollups. Effects and offsets commit
//! together ([`crate::runner`]): exactly-once effect.

use crate::record::Decoded;
use crate::runner::{Effect, Received, first_copies};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The analytics consumer.
#[derive(Debug, Default)]
pub struct Analytics;

const BUCKET_BASE: f64 = 1.1;

fn bucket(ms: i64) -> i32 {
    if ms <= 1 { 0 } else { ((ms as f64).ln() / BUCKET_BASE.ln()).floor() as i32 }
}

fn bucket_upper_ms(bucket: i32) -> f64 {
    BUCKET_BASE.powi(bucket + 1)
}

/// The amount and currency of an event, in minor units.
pub fn amount_of(record: &Decoded) -> Option<(String, i64)> {
    let payload = record.payload()?;
    match record.provider()? {
        "stripe" => {
            let amount = payload.pointer("/data/object/amount")?.as_i64()?;
            let currency = payload.pointer("/data/object/currency")?.as_str()?;
            Some((currency.to_uppercase(), amount))
        }
        "shopify" => {
            let total: f64 = payload.pointer("/total_price")?.as_str()?.parse().ok()?;
            let currency = payload.pointer("/currency")?.as_str()?;
            Some((currency.to_uppercase(), (total * 100.0).round() as i64))
        }
        _ => None,
    }
}

/// A minute's rollup key: (minute, source, event type).
type Key = (DateTime<Utc>, String, String);

/// What a batch's new events add to the rollups, summed per key.
#[derive(Debug, Default)]
struct Rollup {
    events: BTreeMap<Key, i64>,
    entities: BTreeSet<(Key, String)>,
    amounts: BTreeMap<(Key, String), i64>,
    latency: BTreeMap<(Key, &'static str, i32), i64>,
}

impl Rollup {
    fn add(&mut self, record: &Decoded, now_ms: i64) {
        let received_ms = record.int("/received_at").unwrap_or_default();
        let received = DateTime::from_timestamp_millis(received_ms).unwrap_or_else(Utc::now);
        let minute = received.duration_trunc(TimeDelta::minutes(1)).unwrap_or(received);
        let key: Key = (
            minute,
            record.text("/source").unwrap_or_default().to_owned(),
            record.text("/event_type").unwrap_or_default().to_owned(),
        );
        *self.events.entry(key.clone()).or_default() += 1;
        if let Some((_, entity)) = crate::sync::entity_of(record) {
            self.entities.insert((key.clone(), entity));
        }
        if let Some((currency, amount)) = amount_of(record) {
            *self.amounts.entry((key.clone(), currency)).or_default() += amount;
        }
        if let Some(occurred) = record.int("/occurred_at") {
            *self
                .latency
                .entry((key.clone(), "provider_to_bridge", bucket((received_ms - occurred).max(0))))
                .or_default() += 1;
        }
        *self.latency.entry((key, "bridge_to_consumer", bucket((now_ms - received_ms).max(0)))).or_default() += 1;
    }

    /// Adds the sums to the tables: one statement.
    async fn write(self, tx: &mut PgConnection) -> sqlx::Result<()> {
        fn columns<'k>(keys: impl Iterator<Item = &'k Key>) -> (Vec<DateTime<Utc>>, Vec<&'k str>, Vec<&'k str>) {
            let mut out = (Vec::new(), Vec::new(), Vec::new());
            for (minute, source, event_type) in keys {
                out.0.push(*minute);
                out.1.push(source.as_str());
                out.2.push(event_type.as_str());
            }
            out
        }
        let events = columns(self.events.keys());
        let entities = columns(self.entities.iter().map(|(key, _)| key));
        let amounts = columns(self.amounts.keys().map(|(key, _)| key));
        let latency = columns(self.latency.keys().map(|(key, _, _)| key));
        sqlx::query(
            "WITH events AS (
                 INSERT INTO rollup_counts (minute, source, event_type, events)
                 SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[])
                 ON CONFLICT (minute, source, event_type) DO UPDATE SET events = rollup_counts.events + EXCLUDED.events),
             entities AS (
                 INSERT INTO rollup_entities (minute, source, event_type, entity)
                 SELECT * FROM unnest($5::timestamptz[], $6::text[], $7::text[], $8::text[])
                 ON CONFLICT DO NOTHING),
             amounts AS (
                 INSERT INTO rollup_amounts (minute, source, event_type, currency, amount_minor)
                 SELECT * FROM unnest($9::timestamptz[], $10::text[], $11::text[], $12::text[], $13::bigint[])
                 ON CONFLICT (minute, source, event_type, currency)
                 DO UPDATE SET amount_minor = rollup_amounts.amount_minor + EXCLUDED.amount_minor)
             INSERT INTO rollup_latency (minute, source, event_type, stage, bucket, hits)
             SELECT * FROM unnest($14::timestamptz[], $15::text[], $16::text[], $17::text[], $18::int[], $19::bigint[])
             ON CONFLICT (minute, source, event_type, stage, bucket) DO UPDATE SET hits = rollup_latency.hits + EXCLUDED.hits",
        )
        .bind(events.0)
        .bind(events.1)
        .bind(events.2)
        .bind(self.events.values().copied().collect::<Vec<_>>())
        .bind(entities.0)
        .bind(entities.1)
        .bind(entities.2)
        .bind(self.entities.iter().map(|(_, entity)| entity.as_str()).collect::<Vec<_>>())
        .bind(amounts.0)
        .bind(amounts.1)
        .bind(amounts.2)
        .bind(self.amounts.keys().map(|(_, currency)| currency.as_str()).collect::<Vec<_>>())
        .bind(self.amounts.values().copied().collect::<Vec<_>>())
        .bind(latency.0)
        .bind(latency.1)
        .bind(latency.2)
        .bind(self.latency.keys().map(|(_, stage, _)| *stage).collect::<Vec<_>>())
        .bind(self.latency.keys().map(|(_, _, bucket)| *bucket).collect::<Vec<_>>())
        .bind(self.latency.values().copied().collect::<Vec<_>>())
        .execute(tx)
        .await?;
        Ok(())
    }
}

impl Effect for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    /// Counts the batch's deliveries not counted before: two statements,
    /// whatever their number.
    async fn apply(&self, tx: &mut PgConnection, records: &[Received]) -> anyhow::Result<()> {
        let firsts = first_copies(records);
        if firsts.is_empty() {
            return Ok(());
        }
        let (sources, deliveries): (Vec<&str>, Vec<&str>) = firsts.iter().map(|record| record.delivery()).unzip();
        let new: HashSet<(String, String)> = sqlx::query_as(
            "INSERT INTO analytics_seen (source, delivery_id) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING RETURNING source, delivery_id",
        )
        .bind(sources)
        .bind(deliveries)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut rollup = Rollup::default();
        let now_ms = Utc::now().timestamp_millis();
        for record in firsts {
            let (source, delivery) = record.delivery();
            if new.contains(&(source.to_owned(), delivery.to_owned())) {
                rollup.add(record, now_ms);
            }
        }
        if !rollup.events.is_empty() {
            rollup.write(tx).await?;
        }
        Ok(())
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// The minute.
    pub minute: DateTime<Utc>,
    /// The source.
    pub source: String,
    /// The event type.
    pub event_type: String,
    /// Events.
    pub events: i64,
    /// Distinct entities.
    pub entities: i64,
    /// `CUR amount` in major units, per currency.
    pub amounts: Vec<(String, i64)>,
    /// p50, p90, p99 of provider → bridge, ms (upper bucket bounds).
    pub provider_to_bridge: Option<[f64; 3]>,
    /// p50, p90, p99 of bridge → consumer, ms.
    pub bridge_to_consumer: Option<[f64; 3]>,
}

fn percentiles(buckets: &[(i32, i64)]) -> Option<[f64; 3]> {
    let total: i64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut out = [0.0; 3];
    for (slot, q) in [0.5, 0.9, 0.99].into_iter().enumerate() {
        let rank = (q * total as f64).ceil() as i64;
        let mut seen = 0;
        for (bucket, hits) in buckets {
            seen += hits;
            if seen >= rank {
                out[slot] = bucket_upper_ms(*bucket);
                break;
            }
        }
    }
    Some(out)
}

/// The rollups of the last `minutes` minutes, newest first.
pub async fn report(pool: &PgPool, minutes: i64) -> anyhow::Result<Vec<ReportRow>> {
    let since = Utc::now() - TimeDelta::minutes(minutes);
    let counts: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(
        "SELECT minute, source, event_type, events FROM rollup_counts WHERE minute >= $1 ORDER BY minute DESC, source, event_type",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut rows = Vec::new();
    for (minute, source, event_type, events) in counts {
        let key = (minute, source.as_str(), event_type.as_str());
        let (entities,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM rollup_entities WHERE minute = $1 AND source = $2 AND event_type = $3",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_one(pool)
        .await?;
        let amounts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT currency, amount_minor FROM rollup_amounts WHERE minute = $1 AND source = $2 AND event_type = $3 ORDER BY currency",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_all(pool)
        .await?;
        let latency = |stage: &'static str| {
            sqlx::query_as::<_, (i32, i64)>(
                "SELECT bucket, hits FROM rollup_latency WHERE minute = $1 AND source = $2 AND event_type = $3 AND stage = $4 ORDER BY bucket",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(stage)
            .fetch_all(pool)
        };
        let provider = percentiles(&latency("provider_to_bridge").await?);
        let consumer = percentiles(&latency("bridge_to_consumer").await?);
        rows.push(ReportRow {
            minute,
            source,
            event_type,
            events,
            entities,
            amounts,
            provider_to_bridge: provider,
            bridge_to_consumer: consumer,
        });
    }
    Ok(rows)
}

/// The report as a text table.
pub fn render(rows: &[ReportRow]) -> String {
    let fmt_p = |p: &Option<[f64; 3]>| match p {
        Some([a, b, c]) => format!("{a:.0}/{b:.0}/{c:.0}"),
        None => "-".into(),
    };
    let mut out = format!(
        "{:<17} {:<10} {:<28} {:>7} {:>8} {:<22} {:<18} {:<18}\n",
        "minute (UTC)",
        "source",
        "event type",
        "events",
        "entities",
        "amounts",
        "prov→bridge ms p50/90/99",
        "bridge→cons ms"
    );
    for row in rows {
        let amounts = if row.amounts.is_empty() {
            "-".to_owned()
        } else {
            row.amounts.iter().map(|(c, a)| format!("{c} {:.2}", *a as f64 / 100.0)).collect::<Vec<_>>().join(", ")
        };
        out.push_str(&format!(
            "{:<17} {:<10} {:<28} {:>7} {:>8} {:<22} {:<18} {:<18}\n",
            row.minute.format("%Y-%m-%d %H:%M"),
            row.source,
            row.event_type,
            row.events,
            row.entities,
            amounts,
            fmt_p(&row.provider_to_bridge),
            fmt_p(&row.bridge_to_consumer)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ten_percent_wide_and_percentiles_come_from_them() {
        assert_eq!(bucket(0), 0);
        assert!(bucket_upper_ms(bucket(1000)) >= 1000.0);
        assert!(bucket_upper_ms(bucket(1000)) <= 1100.0 * 1.1);
        let buckets: Vec<(i32, i64)> = vec![(bucket(10), 50), (bucket(100), 40), (bucket(1000), 10)];
        let [p50, p90, p99] = percentiles(&buckets).expect("some");
        assert!((10.0..12.2).contains(&p50), "{p50}");
        assert!((100.0..122.0).contains(&p90), "{p90}");
        assert!((1000.0..1220.0).contains(&p99), "{p99}");
        assert_eq!(percentiles(&[]), None);
    }
}
