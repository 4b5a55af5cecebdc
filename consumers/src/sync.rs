//! **sync**: keeps PostgreSQL in step with the webhook topics.
//!
//! - `webhook_events`: every event once, keyed by (source, delivery id); a
//!   second copy (provider retry, reconciliation) changes nothing.
//! - Current state per entity: `payment_intents`, `charges`, `customers`
//!   (Stripe), `orders` (Shopify), `pull_requests` (GitHub). A row is
//!   replaced only by an event whose ordering field is strictly later, so an
//!   older event arriving late never overwrites a newer one. The ordering
//!   field is the provider's own: Stripe's event `created` (objects carry no
//!   update time), Shopify's `updated_at`, GitHub's
//!   `pull_request.updated_at`. Two events with the same value: the first
//!   applied stays.
//!
//! Each event is one statement: the entity's upsert runs within the
//! event's insert, only if the event was new. Effects and offsets commit
//! together ([`crate::runner`]): exactly-once effect.

use crate::record::Decoded;
use crate::runner::Effect;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// The sync consumer.
#[derive(Debug, Default)]
pub struct Sync;

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn s(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn i(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// The entity an event is about: (kind, id), for the events table.
pub fn entity_of(record: &Decoded) -> Option<(&'static str, String)> {
    let payload = record.payload()?;
    let payload = payload.as_ref();
    let event_type = record.text("/event_type")?;
    match record.provider()? {
        "stripe" => {
            let object = s(payload, "/data/object/object")?;
            let kind = match object.as_str() {
                "payment_intent" => "payment_intent",
                "charge" => "charge",
                "customer" => "customer",
                _ => "stripe_object",
            };
            Some((kind, s(payload, "/data/object/id")?))
        }
        "shopify" if event_type.starts_with("orders/") => Some(("order", s(payload, "/id")?)),
        "github" if event_type.starts_with("pull_request") => Some((
            "pull_request",
            format!("{}#{}", s(payload, "/repository/full_name")?, s(payload, "/pull_request/number")?),
        )),
        _ => None,
    }
}

/// Inserts the event (once per source and delivery id) and runs the entity
/// statement that follows only if the event was new: one statement, one
/// round trip to PostgreSQL per event. The event's values are `$1`–`$15`;
/// the entity's start at `$16`.
macro_rules! after_a_new_event {
    ($entity:literal) => {
        concat!(
            r#"WITH event AS (
                 INSERT INTO webhook_events (source, delivery_id, event_type, provider, schema_id, schema_version, origin,
                     received_at, occurred_at, topic, "partition", "offset", entity_type, entity_id, payload)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)
                 ON CONFLICT (source, delivery_id) DO NOTHING
                 RETURNING 1)
               "#,
            $entity
        )
    };
}

type Statement<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the event's values (`$1`–`$15` of `after_a_new_event!`).
fn bind_event<'q>(
    statement: Statement<'q>,
    record: &'q Decoded,
    entity: Option<(&'static str, String)>,
) -> Statement<'q> {
    let (entity_type, entity_id) = entity.unzip();
    statement
        .bind(record.text("/source").unwrap_or_default())
        .bind(record.text("/delivery_id").unwrap_or_default())
        .bind(record.text("/event_type").unwrap_or_default())
        .bind(record.provider())
        .bind(record.schema_id as i32)
        .bind(record.int("/schema_version").unwrap_or_default() as i32)
        .bind(record.text("/origin").unwrap_or("webhook"))
        .bind(time(record.int("/received_at")).unwrap_or_else(Utc::now))
        .bind(time(record.int("/occurred_at")))
        .bind(&record.topic)
        .bind(record.partition)
        .bind(record.offset)
        .bind(entity_type)
        .bind(entity_id)
        .bind(record.payload().map(|p| p.into_owned()).unwrap_or(Value::Null))
}

impl Effect for Sync {
    fn name(&self) -> &'static str {
        "sync"
    }

    async fn apply(&self, tx: &mut PgConnection, record: &Decoded) -> anyhow::Result<()> {
        let event = |sql| bind_event(sqlx::query(sql), record, entity_of(record));
        let statement =
            entity_statement(record, event).unwrap_or_else(|| event(after_a_new_event!("SELECT 1 FROM event")));
        statement.execute(&mut *tx).await?;
        Ok(())
    }
}

/// The event's statement with the upsert of the entity it changes, if it
/// changes one the sync keeps (`event` binds the event's values to a statement).
fn entity_statement<'q>(record: &'q Decoded, event: impl Fn(&'static str) -> Statement<'q>) -> Option<Statement<'q>> {
    let payload = record.payload()?;
    let payload = payload.as_ref();
    let delivery = record.text("/delivery_id").unwrap_or_default();
    let event_type = record.text("/event_type").unwrap_or_default();
    let statement = match record.provider() {
        Some("stripe") => {
            let object = |p: &str| s(payload, &format!("/data/object{p}"));
            let version = time(i(payload, "/created")).unwrap_or_else(Utc::now);
            match object("/object").as_deref() {
                Some("payment_intent") => event(after_a_new_event!(
                    r#"INSERT INTO payment_intents (id, amount, currency, status, customer, version_at, delivery_id)
                       SELECT $16,$17,$18,$19,$20,$21,$22 WHERE EXISTS (SELECT 1 FROM event)
                       ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                           status = EXCLUDED.status, customer = EXCLUDED.customer,
                           version_at = EXCLUDED.version_at, delivery_id = EXCLUDED.delivery_id
                       WHERE payment_intents.version_at < EXCLUDED.version_at"#
                ))
                .bind(object("/id"))
                .bind(i(payload, "/data/object/amount"))
                .bind(object("/currency"))
                .bind(object("/status"))
                .bind(object("/customer"))
                .bind(version)
                .bind(delivery),
                Some("charge") => event(after_a_new_event!(
                    r#"INSERT INTO charges (id, amount, amount_refunded, currency, refunded, status, payment_intent, version_at, delivery_id)
                       SELECT $16,$17,$18,$19,$20,$21,$22,$23,$24 WHERE EXISTS (SELECT 1 FROM event)
                       ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount, amount_refunded = EXCLUDED.amount_refunded,
                           currency = EXCLUDED.currency, refunded = EXCLUDED.refunded, status = EXCLUDED.status,
                           payment_intent = EXCLUDED.payment_intent, version_at = EXCLUDED.version_at, delivery_id = EXCLUDED.delivery_id
                       WHERE charges.version_at < EXCLUDED.version_at"#
                ))
                .bind(object("/id"))
                .bind(i(payload, "/data/object/amount"))
                .bind(i(payload, "/data/object/amount_refunded"))
                .bind(object("/currency"))
                .bind(payload.pointer("/data/object/refunded").and_then(Value::as_bool))
                .bind(object("/status"))
                .bind(object("/payment_intent"))
                .bind(version)
                .bind(delivery),
                Some("customer") => event(after_a_new_event!(
                    r#"INSERT INTO customers (id, email, name, phone, version_at, delivery_id)
                       SELECT $16,$17,$18,$19,$20,$21 WHERE EXISTS (SELECT 1 FROM event)
                       ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, phone = EXCLUDED.phone,
                           version_at = EXCLUDED.version_at, delivery_id = EXCLUDED.delivery_id
                       WHERE customers.version_at < EXCLUDED.version_at"#
                ))
                .bind(object("/id"))
                .bind(object("/email"))
                .bind(object("/name"))
                .bind(object("/phone"))
                .bind(version)
                .bind(delivery),
                _ => return None,
            }
        }
        Some("shopify") if event_type.starts_with("orders/") => {
            let version = time(i(payload, "/updated_at")).unwrap_or_else(Utc::now);
            event(after_a_new_event!(
                r#"INSERT INTO orders (id, name, email, currency, total_price, financial_status, version_at, delivery_id)
                   SELECT $16,$17,$18,$19,$20::numeric,$21,$22,$23 WHERE EXISTS (SELECT 1 FROM event)
                   ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, currency = EXCLUDED.currency,
                       total_price = EXCLUDED.total_price, financial_status = EXCLUDED.financial_status,
                       version_at = EXCLUDED.version_at, delivery_id = EXCLUDED.delivery_id
                   WHERE orders.version_at < EXCLUDED.version_at"#
            ))
            .bind(s(payload, "/id"))
            .bind(s(payload, "/name"))
            .bind(s(payload, "/email"))
            .bind(s(payload, "/currency"))
            .bind(s(payload, "/total_price"))
            .bind(s(payload, "/financial_status"))
            .bind(version)
            .bind(delivery)
        }
        Some("github") if event_type.starts_with("pull_request") => {
            let version = time(i(payload, "/pull_request/updated_at")).unwrap_or_else(Utc::now);
            event(after_a_new_event!(
                r#"INSERT INTO pull_requests (repository, number, title, state, merged, version_at, delivery_id)
                   SELECT $16,$17,$18,$19,$20,$21,$22 WHERE EXISTS (SELECT 1 FROM event)
                   ON CONFLICT (repository, number) DO UPDATE SET title = EXCLUDED.title, state = EXCLUDED.state,
                       merged = EXCLUDED.merged, version_at = EXCLUDED.version_at, delivery_id = EXCLUDED.delivery_id
                   WHERE pull_requests.version_at < EXCLUDED.version_at"#
            ))
            .bind(s(payload, "/repository/full_name"))
            .bind(i(payload, "/pull_request/number"))
            .bind(s(payload, "/pull_request/title"))
            .bind(s(payload, "/pull_request/state"))
            .bind(payload.pointer("/pull_request/merged").and_then(Value::as_bool))
            .bind(version)
            .bind(delivery)
        }
        _ => return None,
    };
    Some(statement)
}
