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
//! A batch of records is written with one statement per entity table it
//! touches (and one for events that change no entity): the events are
//! inserted from arrays, and the entity's upsert takes, of the events just
//! inserted, the one per entity that sequential application would have left:
//! the latest ordering field, the first of equals. Effects and offsets commit
//! together ([`crate::runner`]): exactly-once effect.

use crate::record::Decoded;
use crate::runner::{Effect, Received, first_copies};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use std::sync::{LazyLock, OnceLock};

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

/// A table of current state per entity.
struct Table {
    name: &'static str,
    /// The primary key's columns, the first of `columns`.
    key: &'static str,
    /// Its columns but `version_at` and `delivery_id`, with their types.
    columns: &'static [(&'static str, &'static str)],
    sql: OnceLock<String>,
}

static PAYMENT_INTENTS: Table = Table {
    name: "payment_intents",
    key: "id",
    columns: &[("id", "text"), ("amount", "bigint"), ("currency", "text"), ("status", "text"), ("customer", "text")],
    sql: OnceLock::new(),
};

static CHARGES: Table = Table {
    name: "charges",
    key: "id",
    columns: &[
        ("id", "text"),
        ("amount", "bigint"),
        ("amount_refunded", "bigint"),
        ("currency", "text"),
        ("refunded", "boolean"),
        ("status", "text"),
        ("payment_intent", "text"),
    ],
    sql: OnceLock::new(),
};

static CUSTOMERS: Table = Table {
    name: "customers",
    key: "id",
    columns: &[("id", "text"), ("email", "text"), ("name", "text"), ("phone", "text")],
    sql: OnceLock::new(),
};

static ORDERS: Table = Table {
    name: "orders",
    key: "id",
    columns: &[
        ("id", "text"),
        ("name", "text"),
        ("email", "text"),
        ("currency", "text"),
        ("total_price", "numeric"),
        ("financial_status", "text"),
    ],
    sql: OnceLock::new(),
};

static PULL_REQUESTS: Table = Table {
    name: "pull_requests",
    key: "repository, number",
    columns: &[
        ("repository", "text"),
        ("number", "bigint"),
        ("title", "text"),
        ("state", "text"),
        ("merged", "boolean"),
    ],
    sql: OnceLock::new(),
};

/// The columns of `webhook_events` the sync writes, in the order of the
/// arrays `$1`–`$15` of every statement.
const EVENT_COLUMNS: &str = r#"source, delivery_id, event_type, provider, schema_id, schema_version, origin,
    received_at, occurred_at, topic, "partition", "offset", entity_type, entity_id, payload"#;

/// The arrays `$1`–`$15`, one element per event, unnested as `input` with
/// each event's place in the batch as `n`. An entity table's statement adds
/// the events' ordering fields (`$16`) and the entity's columns, as text,
/// cast where they are written.
fn input(table: Option<&Table>) -> String {
    let mut arrays = String::from(
        "$1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[], $8::timestamptz[],
         $9::timestamptz[], $10::text[], $11::int[], $12::bigint[], $13::text[], $14::text[], $15::jsonb[]",
    );
    let mut names = String::from(EVENT_COLUMNS);
    if let Some(table) = table {
        arrays.push_str(", $16::timestamptz[]");
        names.push_str(", version_at");
        for (i, (column, _)) in table.columns.iter().enumerate() {
            arrays.push_str(&format!(", ${}::text[]", 17 + i));
            names.push_str(&format!(", e_{column}"));
        }
    }
    format!("SELECT * FROM unnest({arrays}) WITH ORDINALITY AS input({names}, n)")
}

/// Inserts the events that change no entity the sync keeps.
static EVENTS_ONLY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO webhook_events ({EVENT_COLUMNS})
         SELECT {EVENT_COLUMNS} FROM ({input}) AS input ORDER BY n
         ON CONFLICT (source, delivery_id) DO NOTHING",
        input = input(None)
    )
});

impl Table {
    /// Inserts the events, then upserts, for each entity, the row of the
    /// new event sequential application would have left: the latest
    /// `version_at`, the first in the batch of equals; and only over a row
    /// with an earlier one.
    fn sql(&'static self) -> &'static str {
        self.sql.get_or_init(|| {
            let Table { name, key, columns, .. } = self;
            let names = columns.iter().map(|(column, _)| *column).collect::<Vec<_>>().join(", ");
            let casts = columns.iter().map(|(c, ty)| format!("e_{c}::{ty} AS {c}")).collect::<Vec<_>>().join(", ");
            let updates = columns
                .iter()
                .map(|(column, _)| *column)
                .chain(["version_at", "delivery_id"])
                .filter(|column| !key.split(", ").any(|k| k == *column))
                .map(|column| format!("{column} = EXCLUDED.{column}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "WITH input AS ({input}),
                 event AS (
                     INSERT INTO webhook_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM input ORDER BY n
                     ON CONFLICT (source, delivery_id) DO NOTHING
                     RETURNING source, delivery_id)
                 INSERT INTO {name} ({names}, version_at, delivery_id)
                 SELECT DISTINCT ON ({key}) {names}, version_at, delivery_id FROM (
                     SELECT {casts}, version_at, delivery_id, n FROM input JOIN event USING (source, delivery_id)
                 ) AS changed
                 ORDER BY {key}, version_at DESC, n
                 ON CONFLICT ({key}) DO UPDATE SET {updates}
                 WHERE {name}.version_at < EXCLUDED.version_at",
                input = input(Some(self)),
            )
        })
    }
}

/// What an event is about: the entity's kind and id (for the events table)
/// and, when the sync keeps that kind, the entity's new row.
struct Change {
    kind: &'static str,
    id: String,
    row: Option<EntityRow>,
}

/// An entity's row as an event leaves it.
struct EntityRow {
    table: &'static Table,
    /// The provider's ordering field.
    version_at: DateTime<Utc>,
    /// In the order of `table.columns`.
    values: Vec<Option<String>>,
}

fn row(table: &'static Table, version_at: Option<DateTime<Utc>>, values: Vec<Option<String>>) -> Option<EntityRow> {
    debug_assert_eq!(values.len(), table.columns.len(), "{}", table.name);
    Some(EntityRow { table, version_at: version_at.unwrap_or_else(Utc::now), values })
}

/// The entity an event is about: (kind, id), for the events table.
pub fn entity_of(record: &Decoded) -> Option<(&'static str, String)> {
    let payload = record.payload()?;
    change(record, &payload).map(|change| (change.kind, change.id))
}

fn change(record: &Decoded, payload: &Value) -> Option<Change> {
    let event_type = record.text("/event_type")?;
    let int = |pointer: &str| i(payload, pointer).map(|n| n.to_string());
    let bool = |pointer: &str| payload.pointer(pointer).and_then(Value::as_bool).map(|b| b.to_string());
    match record.provider()? {
        "stripe" => {
            let object = |p: &str| s(payload, &format!("/data/object{p}"));
            let kind = object("/object")?;
            let id = object("/id")?;
            let version = time(i(payload, "/created"));
            let (kind, row) = match kind.as_str() {
                "payment_intent" => (
                    "payment_intent",
                    row(
                        &PAYMENT_INTENTS,
                        version,
                        vec![
                            Some(id.clone()),
                            int("/data/object/amount"),
                            object("/currency"),
                            object("/status"),
                            object("/customer"),
                        ],
                    ),
                ),
                "charge" => (
                    "charge",
                    row(
                        &CHARGES,
                        version,
                        vec![
                            Some(id.clone()),
                            int("/data/object/amount"),
                            int("/data/object/amount_refunded"),
                            object("/currency"),
                            bool("/data/object/refunded"),
                            object("/status"),
                            object("/payment_intent"),
                        ],
                    ),
                ),
                "customer" => (
                    "customer",
                    row(
                        &CUSTOMERS,
                        version,
                        vec![Some(id.clone()), object("/email"), object("/name"), object("/phone")],
                    ),
                ),
                _ => ("stripe_object", None),
            };
            Some(Change { kind, id, row })
        }
        "shopify" if event_type.starts_with("orders/") => {
            let id = s(payload, "/id")?;
            let values = vec![
                Some(id.clone()),
                s(payload, "/name"),
                s(payload, "/email"),
                s(payload, "/currency"),
                s(payload, "/total_price"),
                s(payload, "/financial_status"),
            ];
            Some(Change { kind: "order", id, row: row(&ORDERS, time(i(payload, "/updated_at")), values) })
        }
        "github" if event_type.starts_with("pull_request") => {
            let repository = s(payload, "/repository/full_name")?;
            let number = i(payload, "/pull_request/number")?;
            let values = vec![
                Some(repository.clone()),
                Some(number.to_string()),
                s(payload, "/pull_request/title"),
                s(payload, "/pull_request/state"),
                bool("/pull_request/merged"),
            ];
            let version = time(i(payload, "/pull_request/updated_at"));
            Some(Change {
                kind: "pull_request",
                id: format!("{repository}#{number}"),
                row: row(&PULL_REQUESTS, version, values),
            })
        }
        _ => None,
    }
}

/// The events of one statement, column by column.
#[derive(Default)]
struct Rows {
    source: Vec<String>,
    delivery_id: Vec<String>,
    event_type: Vec<String>,
    provider: Vec<Option<String>>,
    schema_id: Vec<i32>,
    schema_version: Vec<i32>,
    origin: Vec<String>,
    received_at: Vec<DateTime<Utc>>,
    occurred_at: Vec<Option<DateTime<Utc>>>,
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    entity_type: Vec<Option<String>>,
    entity_id: Vec<Option<String>>,
    payload: Vec<Value>,
    version_at: Vec<DateTime<Utc>>,
    /// The entity's columns, each one value per event.
    columns: Vec<Vec<Option<String>>>,
}

impl Rows {
    fn push(&mut self, record: &Decoded, payload: Value, change: Option<Change>) {
        let (source, delivery_id) = record.delivery();
        self.source.push(source.to_owned());
        self.delivery_id.push(delivery_id.to_owned());
        self.event_type.push(record.text("/event_type").unwrap_or_default().to_owned());
        self.provider.push(record.provider().map(str::to_owned));
        self.schema_id.push(record.schema_id as i32);
        self.schema_version.push(record.int("/schema_version").unwrap_or_default() as i32);
        self.origin.push(record.text("/origin").unwrap_or("webhook").to_owned());
        self.received_at.push(time(record.int("/received_at")).unwrap_or_else(Utc::now));
        self.occurred_at.push(time(record.int("/occurred_at")));
        self.topic.push(record.topic.clone());
        self.partition.push(record.partition);
        self.offset.push(record.offset);
        self.payload.push(payload);
        let Some(Change { kind, id, row }) = change else {
            self.entity_type.push(None);
            self.entity_id.push(None);
            return;
        };
        self.entity_type.push(Some(kind.to_owned()));
        self.entity_id.push(Some(id));
        if let Some(EntityRow { version_at, values, .. }) = row {
            self.version_at.push(version_at);
            self.columns.resize_with(values.len(), Vec::new);
            for (column, value) in self.columns.iter_mut().zip(values) {
                column.push(value);
            }
        }
    }

    async fn write(self, tx: &mut PgConnection, table: Option<&'static Table>) -> sqlx::Result<()> {
        let sql = table.map_or(EVENTS_ONLY.as_str(), Table::sql);
        let mut statement = sqlx::query(sql)
            .bind(self.source)
            .bind(self.delivery_id)
            .bind(self.event_type)
            .bind(self.provider)
            .bind(self.schema_id)
            .bind(self.schema_version)
            .bind(self.origin)
            .bind(self.received_at)
            .bind(self.occurred_at)
            .bind(self.topic)
            .bind(self.partition)
            .bind(self.offset)
            .bind(self.entity_type)
            .bind(self.entity_id)
            .bind(self.payload);
        if table.is_some() {
            statement = statement.bind(self.version_at);
            for column in self.columns {
                statement = statement.bind(column);
            }
        }
        statement.execute(tx).await?;
        Ok(())
    }
}

impl Effect for Sync {
    fn name(&self) -> &'static str {
        "sync"
    }

    /// Writes the batch with one statement per table it touches.
    async fn apply(&self, tx: &mut PgConnection, records: &[Received]) -> anyhow::Result<()> {
        // Keyed by table name, `None` for the events that change no table.
        let mut statements: BTreeMap<Option<&'static str>, (Option<&'static Table>, Rows)> = BTreeMap::new();
        for record in first_copies(records) {
            let payload = record.payload().map(std::borrow::Cow::into_owned).unwrap_or(Value::Null);
            let change = change(record, &payload);
            let table = change.as_ref().and_then(|change| change.row.as_ref()).map(|row| row.table);
            statements
                .entry(table.map(|t| t.name))
                .or_insert_with(|| (table, Rows::default()))
                .1
                .push(record, payload, change);
        }
        for (table, rows) in statements.into_values() {
            rows.write(&mut *tx, table).await?;
        }
        Ok(())
    }
}
