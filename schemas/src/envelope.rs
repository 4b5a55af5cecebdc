//! The envelope every record carries around its provider payload.
//!
//! The catalog holds only the payload schema of an event; the registered
//! schema is that payload wrapped in one envelope record, the same for every
//! source and event type, so consumers always find the delivery id, source,
//! event type, schema version, timestamps, selected headers and (optionally)
//! the raw JSON in the same place.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `delivery_id` | string | the provider's delivery id (dedup key) |
//! | `source` | string | the configured source name |
//! | `event_type` | string | e.g. `payment_intent.succeeded` |
//! | `schema_version` | int | catalog version of the payload schema |
//! | `received_at` | timestamp-millis | when the bridge received it |
//! | `occurred_at` | null or timestamp-millis | when the provider says it happened |
//! | `origin` | string | `webhook`, `reconciliation` or `replay` |
//! | `headers` | map of string | the request headers selected in config |
//! | `raw` | null or string | the body as received, if configured |
//! | `payload` | the event's record | the typed payload |

use apache_avro::types::Value;
use serde_json::{Value as Json, json};
use std::collections::HashMap;

/// Where a record came from.
pub const ORIGINS: [&str; 3] = ["webhook", "reconciliation", "replay"];

/// The envelope fields of one delivery, borrowed from the request and the
/// configuration: framing a record copies each once, into the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The provider's delivery id.
    pub delivery_id: &'a str,
    /// The configured source name.
    pub source: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// Catalog version of the payload schema.
    pub schema_version: i32,
    /// When the bridge received it (ms since the epoch).
    pub received_at_ms: i64,
    /// When the provider says it happened (ms since the epoch).
    pub occurred_at_ms: Option<i64>,
    /// `webhook`, `reconciliation` or `replay`.
    pub origin: &'a str,
    /// Selected request headers.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The raw body, if kept.
    pub raw: Option<&'a str>,
}

/// Wraps a payload schema (JSON) in the envelope record. The envelope is
/// named after the payload: `<namespace>.<Name>Delivery`.
pub fn wrap_schema(payload: &Json) -> Json {
    let name = payload.get("name").and_then(Json::as_str).unwrap_or("Payload");
    let mut envelope = json!({
        "type": "record",
        "name": format!("{name}Delivery"),
        "doc": "A webhook delivery received by the bridge: envelope fields plus the provider's payload.",
        "fields": [
            {"name": "delivery_id", "type": "string"},
            {"name": "source", "type": "string"},
            {"name": "event_type", "type": "string"},
            {"name": "schema_version", "type": "int"},
            {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "occurred_at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
            {"name": "origin", "type": "string", "default": "webhook"},
            {"name": "headers", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "raw", "type": ["null", "string"], "default": null},
            {"name": "payload", "type": payload.clone()}
        ]
    });
    if let Some(namespace) = payload.get("namespace") {
        envelope["namespace"] = namespace.clone();
    }
    envelope
}

/// The envelope record value around `payload`.
pub fn envelope_value(envelope: &Envelope<'_>, payload: Value) -> Value {
    let headers: HashMap<String, Value> =
        envelope.headers.iter().map(|&(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect();
    Value::Record(vec![
        ("delivery_id".into(), Value::String(envelope.delivery_id.to_owned())),
        ("source".into(), Value::String(envelope.source.to_owned())),
        ("event_type".into(), Value::String(envelope.event_type.to_owned())),
        ("schema_version".into(), Value::Int(envelope.schema_version)),
        ("received_at".into(), Value::TimestampMillis(envelope.received_at_ms)),
        (
            "occurred_at".into(),
            match envelope.occurred_at_ms {
                Some(ms) => Value::Union(1, Box::new(Value::TimestampMillis(ms))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        ("origin".into(), Value::String(envelope.origin.to_owned())),
        ("headers".into(), Value::Map(headers)),
        (
            "raw".into(),
            match envelope.raw {
                Some(raw) => Value::Union(1, Box::new(Value::String(raw.to_owned()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        ("payload".into(), payload),
    ])
}

/// The Confluent-framed record of one delivery: the 5-byte header for
/// `schema_id`, the envelope's fields and the payload already encoded by
/// [`Transcoder::encode`](crate::transcode::Transcoder::encode), in the
/// Avro binary encoding of [`wrap_schema`]'s record.
pub fn frame_delivery(schema_id: crate::wire::SchemaId, envelope: &Envelope<'_>, payload_avro: &[u8]) -> Vec<u8> {
    use crate::transcode::{write_bytes, write_long};
    let raw_len = envelope.raw.map_or(0, str::len);
    let mut out = Vec::with_capacity(crate::wire::HEADER_LEN + 256 + raw_len + payload_avro.len());
    out.extend_from_slice(&crate::wire::header(schema_id));
    write_bytes(&mut out, envelope.delivery_id.as_bytes());
    write_bytes(&mut out, envelope.source.as_bytes());
    write_bytes(&mut out, envelope.event_type.as_bytes());
    write_long(&mut out, envelope.schema_version.into());
    write_long(&mut out, envelope.received_at_ms);
    match envelope.occurred_at_ms {
        Some(ms) => {
            write_long(&mut out, 1);
            write_long(&mut out, ms);
        }
        None => write_long(&mut out, 0),
    }
    write_bytes(&mut out, envelope.origin.as_bytes());
    if !envelope.headers.is_empty() {
        write_long(&mut out, envelope.headers.len() as i64);
        for &(name, value) in &envelope.headers {
            write_bytes(&mut out, name.as_bytes());
            write_bytes(&mut out, value.as_bytes());
        }
    }
    out.push(0);
    match envelope.raw {
        Some(raw) => {
            write_long(&mut out, 1);
            write_bytes(&mut out, raw.as_bytes());
        }
        None => write_long(&mut out, 0),
    }
    out.extend_from_slice(payload_avro);
    out
}

/// The payload schema of a source's generic events: what event types without
/// a typed schema are written with. The whole body is kept as JSON text.
pub fn generic_payload_schema(source: &str) -> Json {
    json!({
        "type": "record",
        "name": "GenericEvent",
        "namespace": format!("webhooks.{}", avro_identifier(source)),
        "doc": "An event with no typed schema in the catalog: its JSON body, unparsed.",
        "fields": [
            {"name": "id", "type": ["null", "string"], "default": null, "doc": "The provider's event id, when the body has one at /id."},
            {"name": "json", "type": "string", "doc": "The JSON body as received."}
        ]
    })
}

/// `name` as an Avro name component: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn avro_identifier(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}
