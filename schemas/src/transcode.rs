//! JSON → Avro, driven by the schema.
//!
//! Providers send JSON; topics hold Avro. The schema decides every
//! conversion:
//! - records: fields by name (or alias); a missing field takes its default,
//!   or null where the field is a nullable union; unknown JSON fields are
//!   left out (the envelope's `raw` keeps them);
//! - unions: JSON null picks the null branch, anything else the first branch
//!   it converts into;
//! - numbers into the declared type (`int` range-checked, integral floats and
//!   numeric strings accepted); scalars into `string` as their JSON text, and
//!   objects/arrays into `string` as compact JSON;
//! - `timestamp-millis`/`-micros` from unix seconds (numbers of 10^11 and above
//!   are taken as milliseconds already) or RFC 3339 strings; `date` from
//!   `YYYY-MM-DD` or days;
//! - enums from their symbol, or the enum's default for an unknown symbol.
//!
//! Every error names the JSON pointer of the value that did not fit.
//!
//! The JSON is a [`Doc`] (the body as read, strings borrowed from it);
//! [`Transcoder::transcode`] takes a `serde_json::Value` for tests and tools.

use crate::doc::Doc;
use apache_avro::Schema;
use apache_avro::schema::UuidSchema;
use apache_avro::types::Value;
use serde_json::Value as Json;
use std::collections::HashMap;

/// A JSON value that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct TranscodeError {
    /// JSON pointer to the value (`""` for the document).
    pub pointer: String,
    /// What was expected and found.
    pub message: String,
}

/// Converts JSON documents into Avro values of one schema.
#[derive(Debug, Clone)]
pub struct Transcoder {
    schema: Schema,
    names: HashMap<String, Schema>,
}

fn fail<T>(message: impl Into<String>) -> Result<T, TranscodeError> {
    Err(TranscodeError { pointer: String::new(), message: message.into() })
}

impl TranscodeError {
    /// The same error one level up: `token` (a member name or array
    /// index) goes in front of the pointer. The pointer is built only on
    /// the way out of a failure, so a document that fits costs nothing for it.
    fn under(mut self, token: &str) -> Self {
        let mut pointer = String::with_capacity(token.len() + 1 + self.pointer.len());
        push_token(&mut pointer, token);
        pointer.push_str(&self.pointer);
        self.pointer = pointer;
        self
    }
}

fn collect_names(schema: &Schema, names: &mut HashMap<String, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.fullname(None), schema.clone());
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

/// Whole milliseconds since the epoch from unix seconds, milliseconds or RFC 3339.
pub fn epoch_millis(json: &Doc<'_>) -> Option<i64> {
    match json {
        Doc::Number(n) => n.as_f64().map(seconds_or_millis),
        Doc::String(s) => epoch_millis_text(s),
        _ => None,
    }
}

/// [`epoch_millis`] of a text (a header's value, or a JSON string).
pub fn epoch_millis_text(text: &str) -> Option<i64> {
    match text.trim().parse::<f64>() {
        Ok(value) => value.is_finite().then(|| seconds_or_millis(value)),
        Err(_) => chrono::DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.timestamp_millis()),
    }
}

/// Numbers of 10^11 and above are milliseconds already; below, seconds.
fn seconds_or_millis(value: f64) -> i64 {
    if value.abs() >= 1e11 { value as i64 } else { (value * 1000.0).round() as i64 }
}

fn as_i64(json: &Doc<'_>) -> Option<i64> {
    match json {
        Doc::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
        }
        Doc::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(json: &Doc<'_>) -> Option<f64> {
    match json {
        Doc::Number(n) => n.as_f64(),
        Doc::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Transcoder {
    /// A transcoder for `schema`.
    pub fn new(schema: Schema) -> Self {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        Self { schema, names }
    }

    /// The schema values are made for.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends the Avro binary encoding of one JSON document to `out`,
    /// written straight from the JSON: no Avro value tree is built, so a
    /// webhook costs one walk and no copies of its strings. On error `out`
    /// may hold part of the document; callers discard it.
    pub fn encode(&self, json: &Doc<'_>, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        self.write(&self.schema, json, out)
    }

    /// Converts one JSON document into an Avro value (its [`encode`](Self::encode)d
    /// bytes read back with the schema).
    pub fn transcode(&self, json: &Json) -> Result<Value, TranscodeError> {
        let mut bytes = Vec::new();
        self.encode(&Doc::from(json), &mut bytes)?;
        crate::wire::decode_avro(&self.schema, &bytes)
            .map_err(|error| TranscodeError { pointer: String::new(), message: format!("encoded wrongly: {error}") })
    }

    #[expect(clippy::unit_arg, reason = "an arm that writes and succeeds reads best as Ok(write(…))")]
    fn write(&self, schema: &Schema, json: &Doc<'_>, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        let mismatch = |expected: &str| fail(format!("expected {expected}, found {}", json.kind()));
        match schema {
            Schema::Null => match json {
                Doc::Null => Ok(()),
                _ => mismatch("null"),
            },
            Schema::Boolean => match json {
                Doc::Bool(b) => Ok(out.push(u8::from(*b))),
                Doc::String(s) if s == "true" || s == "false" => Ok(out.push(u8::from(s == "true"))),
                _ => mismatch("a boolean"),
            },
            Schema::Int => match as_i64(json) {
                Some(n) => match i32::try_from(n) {
                    Ok(n) => Ok(write_long(out, n.into())),
                    Err(_) => fail(format!("{n} does not fit in an int")),
                },
                None => mismatch("an integer"),
            },
            Schema::Long => match as_i64(json) {
                Some(n) => Ok(write_long(out, n)),
                None => mismatch("an integer"),
            },
            Schema::Float => match as_f64(json) {
                Some(f) => Ok(out.extend_from_slice(&(f as f32).to_le_bytes())),
                None => mismatch("a number"),
            },
            Schema::Double => match as_f64(json) {
                Some(f) => Ok(out.extend_from_slice(&f.to_le_bytes())),
                None => mismatch("a number"),
            },
            Schema::String => match json {
                Doc::String(s) => Ok(write_bytes(out, s.as_bytes())),
                Doc::Null => mismatch("a string"),
                other => Ok(write_bytes(out, other.to_string().as_bytes())),
            },
            Schema::Bytes => match json {
                Doc::String(s) => Ok(write_bytes(out, s.as_bytes())),
                _ => mismatch("a string (for bytes)"),
            },
            Schema::Uuid(uuid_schema) => match json {
                Doc::String(s) => match s.parse::<apache_avro::Uuid>() {
                    Ok(uuid) => match uuid_schema {
                        UuidSchema::String => Ok(write_bytes(out, uuid.hyphenated().to_string().as_bytes())),
                        UuidSchema::Bytes => Ok(write_bytes(out, uuid.as_bytes())),
                        UuidSchema::Fixed(fixed) if fixed.size == 16 => Ok(out.extend_from_slice(uuid.as_bytes())),
                        UuidSchema::Fixed(fixed) => fail(format!("a uuid cannot be fixed of {}", fixed.size)),
                    },
                    Err(_) => fail(format!("'{s}' is not a UUID")),
                },
                _ => mismatch("a UUID string"),
            },
            Schema::TimestampMillis | Schema::LocalTimestampMillis => match epoch_millis(json) {
                Some(ms) => Ok(write_long(out, ms)),
                None => mismatch("unix seconds or an RFC 3339 timestamp"),
            },
            Schema::TimestampMicros | Schema::LocalTimestampMicros => match epoch_millis(json) {
                Some(ms) => Ok(write_long(out, ms.saturating_mul(1000))),
                None => mismatch("unix seconds or an RFC 3339 timestamp"),
            },
            Schema::Date => {
                let days = match json {
                    Doc::String(s) => match chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
                        Ok(date) => (date - chrono::NaiveDate::default()).num_days() as i32,
                        Err(_) => return fail(format!("'{s}' is not a YYYY-MM-DD date")),
                    },
                    other => match as_i64(other).and_then(|d| i32::try_from(d).ok()) {
                        Some(days) => days,
                        None => return mismatch("a YYYY-MM-DD date"),
                    },
                };
                Ok(write_long(out, days.into()))
            }
            Schema::Enum(e) => match json {
                Doc::String(s) => {
                    let index =
                        e.symbols.iter().position(|x| x == s).or_else(|| {
                            e.default.as_ref().and_then(|default| e.symbols.iter().position(|x| x == default))
                        });
                    match index {
                        Some(i) => Ok(write_long(out, i as i64)),
                        None => fail(format!("'{s}' is not one of {:?} and the enum has no default", e.symbols)),
                    }
                }
                _ => mismatch("an enum symbol string"),
            },
            Schema::Fixed(f) => match json {
                Doc::String(s) if s.len() == f.size => Ok(out.extend_from_slice(s.as_bytes())),
                _ => mismatch(&format!("a string of exactly {} bytes", f.size)),
            },
            // Arrays and maps: one block with its count, then the end marker 0.
            Schema::Array(a) => match json {
                Doc::Array(items) => {
                    if !items.is_empty() {
                        write_long(out, items.len() as i64);
                        for (i, item) in items.iter().enumerate() {
                            self.write(&a.items, item, out).map_err(|error| error.under(&i.to_string()))?;
                        }
                    }
                    Ok(out.push(0))
                }
                _ => mismatch("an array"),
            },
            Schema::Map(m) => match json {
                Doc::Object(entries) => {
                    if !entries.is_empty() {
                        write_long(out, entries.len() as i64);
                        for (key, item) in entries {
                            write_bytes(out, key.as_bytes());
                            self.write(&m.types, item, out).map_err(|error| error.under(key))?;
                        }
                    }
                    Ok(out.push(0))
                }
                _ => mismatch("an object"),
            },
            Schema::Union(u) => {
                let variants = u.variants();
                if json.is_null() {
                    return match variants.iter().position(|v| matches!(v, Schema::Null)) {
                        Some(i) => Ok(write_long(out, i as i64)),
                        None => mismatch("a value (the union has no null branch)"),
                    };
                }
                let mut first_error = None;
                let start = out.len();
                for (i, variant) in variants.iter().enumerate().filter(|(_, v)| !matches!(v, Schema::Null)) {
                    write_long(out, i as i64);
                    match self.write(variant, json, out) {
                        Ok(()) => return Ok(()),
                        Err(error) => {
                            out.truncate(start);
                            first_error.get_or_insert(error);
                        }
                    }
                }
                Err(first_error
                    .unwrap_or_else(|| TranscodeError { pointer: String::new(), message: "empty union".into() }))
            }
            Schema::Record(record) => {
                let Doc::Object(members) = json else { return mismatch("an object") };
                // Fields are found by scanning the members; past SCAN_LIMIT
                // comparisons (a large object), through an index instead.
                let index = (members.len() * (record.fields.len() + 1) > SCAN_LIMIT)
                    .then(|| members.iter().map(|(k, v)| (k.as_ref(), v)).collect::<HashMap<&str, &Doc<'_>>>());
                let get = |name: &str| match &index {
                    Some(index) => index.get(name).copied(),
                    None => json.get(name),
                };
                for field in &record.fields {
                    let found = get(&field.name).or_else(|| field.aliases.iter().find_map(|alias| get(alias)));
                    let written = match (found, &field.default) {
                        (Some(value), _) => self.write(&field.schema, value, out),
                        (None, Some(default)) => self.write(&field.schema, &Doc::from(default), out),
                        (None, None) => self.write(&field.schema, &Doc::Null, out).or_else(|_| {
                            fail("required field is missing (give it a default in the schema if it is optional)")
                        }),
                    };
                    written.map_err(|error| error.under(&field.name))?;
                }
                Ok(())
            }
            Schema::Ref { name } => match self.names.get(&name.fullname(None)) {
                Some(named) => self.write(named, json, out),
                None => fail(format!("the schema refers to unknown type {}", name.fullname(None))),
            },
            other => fail(format!(
                "schema type {other:?} is not supported by the JSON transcoder; use long, double or string"
            )),
        }
    }
}

/// Member comparisons a record may cost by scanning before its object is
/// indexed (the last of duplicated keys wins either way).
const SCAN_LIMIT: usize = 4096;

/// Avro `long`/`int`: zig-zag, then little-endian base-128 varint.
pub fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro `bytes`/`string`: the length as a long, then the bytes.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transcoder(schema: Json) -> Transcoder {
        Transcoder::new(Schema::parse(&schema).expect("schema"))
    }

    fn round_trip(t: &Transcoder, value: Value) -> Value {
        let bytes = crate::wire::encode_avro(t.schema(), value).expect("value fits its schema");
        crate::wire::decode_avro(t.schema(), &bytes).expect("decodes")
    }

    #[test]
    fn nested_records_unions_arrays_maps_enums_defaults_and_timestamps() {
        let t = transcoder(json!({"type":"record","name":"Order","namespace":"t","fields":[
            {"name":"id","type":"string"},
            {"name":"amount","type":"long"},
            {"name":"ratio","type":"double"},
            {"name":"created","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"updated","type":{"type":"long","logicalType":"timestamp-micros"}},
            {"name":"status","type":{"type":"enum","name":"Status","symbols":["open","paid","other"],"default":"other"}},
            {"name":"note","type":["null","string"],"default":null},
            {"name":"customer","type":["null",{"type":"record","name":"Customer","fields":[
                {"name":"email","type":"string"},{"name":"vip","type":"boolean","default":false}]}],"default":null},
            {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
                {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
            {"name":"metadata","type":{"type":"map","values":"string"},"default":{}},
            {"name":"previous","type":["null","Customer"],"default":null},
            {"name":"shipped_on","type":["null",{"type":"int","logicalType":"date"}],"default":null}
        ]}));
        let value = t
            .transcode(&json!({
                "id": 42, "amount": "1999", "ratio": 1, "created": 1763799997,
                "updated": "2025-11-22T10:00:00Z", "status": "refunded_partially",
                "customer": {"email": "a@b.c"},
                "lines": [{"sku": "x", "qty": 2.0}],
                "previous": {"email": "old@b.c", "vip": true},
                "shipped_on": "2025-11-23",
                "metadata": {"order": "A-1", "attempt": 2},
                "unknown_field": {"kept": "in raw, not here"}
            }))
            .expect("transcodes");
        let Value::Record(fields) = round_trip(&t, value) else { panic!("record") };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect(name);
        assert_eq!(get("id"), Value::String("42".into()));
        assert_eq!(get("amount"), Value::Long(1999));
        assert_eq!(get("ratio"), Value::Double(1.0));
        assert_eq!(get("created"), Value::TimestampMillis(1_763_799_997_000));
        assert_eq!(get("updated"), Value::TimestampMicros(1_763_805_600_000_000));
        assert_eq!(get("status"), Value::Enum(2, "other".into()), "unknown symbol takes the enum default");
        assert_eq!(get("note"), Value::Union(0, Box::new(Value::Null)));
        assert_eq!(
            get("customer"),
            Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("email".into(), Value::String("a@b.c".into())),
                    ("vip".into(), Value::Boolean(false))
                ]))
            )
        );
        assert_eq!(
            get("lines"),
            Value::Array(vec![Value::Record(vec![
                ("sku".into(), Value::String("x".into())),
                ("qty".into(), Value::Int(2))
            ])])
        );
        let metadata = HashMap::from([
            ("order".into(), Value::String("A-1".into())),
            ("attempt".into(), Value::String("2".into())),
        ]);
        assert_eq!(get("metadata"), Value::Map(metadata));
        assert!(matches!(get("previous"), Value::Union(1, _)), "named-type reference resolves");
        assert_eq!(get("shipped_on"), Value::Union(1, Box::new(Value::Date(20415))));
    }

    #[test]
    fn errors_name_the_pointer() {
        let t = transcoder(json!({"type":"record","name":"R","fields":[
            {"name":"data","type":{"type":"record","name":"D","fields":[
                {"name":"items","type":{"type":"array","items":"int"}},
                {"name":"must","type":"string"},
                {"name":"counts","type":{"type":"map","values":"long"},"default":{}}]}}]}));
        let error = t.transcode(&json!({"data": {"items": [1, "two"], "must": "x"}})).expect_err("bad int");
        assert_eq!(error.pointer, "/data/items/1");
        let error = t
            .transcode(&json!({"data": {"items": [], "must": "x", "counts": {"ok": 1, "a/b~c": "many"}}}))
            .expect_err("bad count");
        assert_eq!(error.pointer, "/data/counts/a~1b~0c", "map keys are escaped as RFC 6901 says");
        let error = t.transcode(&json!({"data": {"items": []}})).expect_err("missing");
        assert_eq!(error.pointer, "/data/must");
        assert!(error.message.contains("missing"));
        let error = t.transcode(&json!({"data": {"items": [3_000_000_000i64], "must": "x"}})).expect_err("range");
        assert!(error.message.contains("does not fit"), "{error}");
        assert!(t.transcode(&json!([1])).is_err());
    }

    #[test]
    fn timestamps_from_seconds_millis_and_rfc3339() {
        let millis = |json: Json| epoch_millis(&Doc::from(&json));
        assert_eq!(millis(json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(millis(json!(1_700_000_000_123i64)), Some(1_700_000_000_123));
        assert_eq!(millis(json!("1700000000.5")), Some(1_700_000_000_500));
        assert_eq!(millis(json!("2023-11-14T22:13:20+00:00")), Some(1_700_000_000_000));
        assert_eq!(millis(json!("2023-11-14T17:13:20.5-05:00")), Some(1_700_000_000_500));
        assert_eq!(millis(json!("yesterday")), None);
        assert_eq!(epoch_millis_text(" 1700000000 "), Some(1_700_000_000_000));
        for not_a_time in ["NaN", "inf", "-infinity"] {
            assert_eq!(epoch_millis_text(not_a_time), None, "{not_a_time}");
        }
    }

    #[test]
    fn large_objects_find_their_fields_as_small_ones_do() {
        let fields: Vec<Json> = (0..20).map(|i| json!({"name": format!("f{i}"), "type": "long"})).collect();
        let t = transcoder(json!({"type":"record","name":"Wide","fields": fields}));
        for members in [25, 2000] {
            let mut object = serde_json::Map::new();
            for i in (0..members).rev() {
                object.insert(format!("f{i}"), json!(i));
            }
            // A repeated key: the last one wins, indexed or scanned.
            let text = format!(r#"{},"f3":333}}"#, serde_json::to_string(&object).expect("json").trim_end_matches('}'));
            let mut bytes = Vec::new();
            t.encode(&Doc::parse(text.as_bytes()).expect("parses"), &mut bytes).expect("encodes");
            let Value::Record(decoded) = crate::wire::decode_avro(t.schema(), &bytes).expect("decodes") else {
                panic!("record")
            };
            let expected: Vec<i64> = (0..20).map(|i| if i == 3 { 333 } else { i }).collect();
            let found: Vec<i64> =
                decoded.iter().map(|(_, v)| if let Value::Long(n) = v { *n } else { panic!("long") }).collect();
            assert_eq!(found, expected, "{members} members");
        }
    }

    #[test]
    fn objects_into_string_fields_become_compact_json() {
        let t = transcoder(json!({"type":"record","name":"R","fields":[{"name":"blob","type":"string"}]}));
        let value = t.transcode(&json!({"blob": {"a": [1, 2]}})).expect("transcodes");
        assert_eq!(value, Value::Record(vec![("blob".into(), Value::String(r#"{"a":[1,2]}"#.into()))]));
    }
}
