//! A JSON document as the bridge reads a webhook body: strings borrowed
//! from the body wherever they hold no escapes, objects as their members in
//! order. Reading one costs one allocation per object and array, where a
//! `serde_json::Value` costs one per key and string plus a hash table per
//! object; the transcoder walks it once, so nothing is gained by hashing.
//!
//! A member is looked up by scanning, from the last member back: as in
//! `serde_json::Value`, the last of duplicated keys wins.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;

/// A parsed JSON document borrowing its text from the bytes it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Doc<'a>>),
    /// An object: its members in the order they came.
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

impl<'a> Doc<'a> {
    /// Reads a JSON document from `bytes`. The bytes are checked to be
    /// UTF-8 once, as a whole, rather than string by string.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            // serde_json names the line and column of the bad byte.
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// The member `key` of an object (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&Doc<'a>> {
        match self {
            Doc::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a JSON pointer (RFC 6901), as `serde_json::Value::pointer`.
    pub fn pointer(&self, pointer: &str) -> Option<&Doc<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let tokens = pointer.strip_prefix('/')?;
        tokens.split('/').try_fold(self, |target, token| {
            let token: Cow<'_, str> =
                if token.contains('~') { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() };
            match target {
                Doc::Object(_) => target.get(&token),
                Doc::Array(items) => array_index(&token).and_then(|i| items.get(i)),
                _ => None,
            }
        })
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number as an `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Doc::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Doc::Null)
    }

    /// What kind of value this is, for error messages ("a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Doc::Null => "null",
            Doc::Bool(_) => "a boolean",
            Doc::Number(_) => "a number",
            Doc::String(_) => "a string",
            Doc::Array(_) => "an array",
            Doc::Object(_) => "an object",
        }
    }
}

fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

impl<'a> From<&'a Value> for Doc<'a> {
    /// Borrows a `serde_json::Value` (for callers that already hold one).
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Number(n.clone()),
            Value::String(s) => Doc::String(Cow::Borrowed(s)),
            Value::Array(items) => Doc::Array(items.iter().map(Doc::from).collect()),
            Value::Object(members) => {
                Doc::Object(members.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Doc::from(v))).collect())
            }
        }
    }
}

impl fmt::Display for Doc<'_> {
    /// Compact JSON, as `serde_json::Value` displays.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => serializer.serialize_unit(),
            Doc::Bool(b) => serializer.serialize_bool(*b),
            Doc::Number(n) => n.serialize(serializer),
            Doc::String(s) => serializer.serialize_str(s),
            Doc::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

/// Room for the members of an object before it grows: webhook objects seldom
/// have fewer, and growing from nothing copies them four times to get here.
const OBJECT_CAPACITY: usize = 8;
/// Room for the items of an array before it grows.
const ARRAY_CAPACITY: usize = 4;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_none<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Doc<'de>, D::Error> {
        Deserialize::deserialize(deserializer)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Doc<'de>, E> {
        Ok(Number::from_f64(n).map_or(Doc::Null, Doc::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(ARRAY_CAPACITY));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(OBJECT_CAPACITY));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Doc::Object(members))
    }
}

/// An object key, borrowed where it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_serde_json_reads_and_borrows_unescaped_strings() {
        let text = br#"{"id":"evt_1","n":-3,"big":18446744073709551615,"f":1.5,"ok":true,"none":null,
            "esc":"a\"b\u00e9","nested":{"list":[1,"two",{"k~/":"v"}]},"id":"evt_2"}"#;
        let doc = Doc::parse(text).expect("parses");
        let value: Value = serde_json::from_slice(text).expect("parses");
        for pointer in ["", "/id", "/n", "/big", "/f", "/ok", "/none", "/esc", "/nested/list/1", "/nested/list/2/k~0~1"]
        {
            let ours = doc.pointer(pointer).map(|d| serde_json::to_value(d).expect("serialises"));
            assert_eq!(ours.as_ref(), value.pointer(pointer), "{pointer}");
        }
        assert_eq!(doc.get("id").and_then(Doc::as_str), Some("evt_2"), "the last duplicate wins");
        assert!(matches!(
            doc.get("nested").and_then(|n| n.pointer("/list/1")),
            Some(Doc::String(Cow::Borrowed("two")))
        ));
        assert!(matches!(doc.get("esc"), Some(Doc::String(Cow::Owned(s))) if s == "a\"bé"));
        for missing in ["/nested/list/01", "/nested/list/+1", "/nested/list/9", "/id/x", "id", "/nope"] {
            assert_eq!(doc.pointer(missing), None, "{missing}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in [&b"{\"a\": \"\xff\"}"[..], b"{\"a\": 1,}", b"[1, 2", b"", b"{} extra"] {
            assert!(Doc::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<Value>(bad).is_err());
        }
        assert_eq!(Doc::parse(b"[]").expect("parses"), Doc::Array(Vec::new()));
    }

    #[test]
    fn displays_as_compact_json_like_a_value() {
        let value = json!({"b": [1, 2.5, "x"], "a": {"c": null, "d": false}});
        let text = serde_json::to_vec(&value).expect("serialises");
        assert_eq!(Doc::parse(&text).expect("parses").to_string(), value.to_string());
        assert_eq!(Doc::from(&value).to_string(), value.to_string());
    }
}
