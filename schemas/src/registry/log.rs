//! The records of the `_schemas` topic, in Confluent Schema Registry's own
//! key/value format, so that a Confluent registry could read our topic and we
//! could read one of theirs.
//!
//! | key (`keytype`) | value |
//! |---|---|
//! | `SCHEMA` `{subject, version, magic:1}` | `{subject, version, id, schema, deleted}` (tombstone: permanently deleted) |
//! | `CONFIG` `{subject or null, magic:0}` | `{compatibilityLevel}` (tombstone: config removed) |
//! | `DELETE_SUBJECT` `{subject, magic:0}` | `{subject, version}`: every version up to `version` soft-deleted |
//! | `NOOP` `{magic:0}` | ignored |

use crate::compat::CompatibilityLevel;
use serde::{Deserialize, Serialize};

/// The key of a `_schemas` record. Field order is Confluent's, so the same
/// logical key is always the same bytes (compaction keys on bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    /// One version of one subject.
    Schema {
        /// The subject.
        subject: String,
        /// Its version, from 1.
        version: u32,
        /// Confluent writes 1 here.
        magic: u8,
    },
    /// The compatibility level of a subject, or the global one (`subject: null`).
    Config {
        /// `None` for the global level.
        subject: Option<String>,
        /// Confluent writes 0 here.
        magic: u8,
    },
    /// A soft delete of a whole subject.
    DeleteSubject {
        /// The subject.
        subject: String,
        /// Confluent writes 0 here.
        magic: u8,
    },
    /// Written by Confluent to probe the topic; carries nothing.
    Noop {
        /// Confluent writes 0 here.
        magic: u8,
    },
    /// A key type this registry does not act on (e.g. `MODE`, `CLEAR_SUBJECT`).
    #[serde(other)]
    Other,
}

impl LogKey {
    /// The key of `subject`'s `version`.
    pub fn schema(subject: &str, version: u32) -> Self {
        Self::Schema { subject: subject.to_owned(), version, magic: 1 }
    }

    /// The key of a config record (`None`: global).
    pub fn config(subject: Option<&str>) -> Self {
        Self::Config { subject: subject.map(str::to_owned), magic: 0 }
    }

    /// The key of a subject's soft-delete marker.
    pub fn delete_subject(subject: &str) -> Self {
        Self::DeleteSubject { subject: subject.to_owned(), magic: 0 }
    }
}

/// The value of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    /// The subject.
    pub subject: String,
    /// The version within the subject.
    pub version: u32,
    /// The globally unique schema id.
    pub id: u32,
    /// The schema text (our canonical JSON).
    pub schema: String,
    /// Soft-deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Absent for Avro, as Confluent writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
}

/// The value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    /// The level.
    pub compatibility_level: CompatibilityLevel,
}

/// The value of a `DELETE_SUBJECT` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    /// The subject.
    pub subject: String,
    /// The highest version deleted.
    pub version: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_byte_identical_to_confluents() {
        let key = serde_json::to_string(&LogKey::schema("orders-value", 3)).expect("json");
        assert_eq!(key, r#"{"keytype":"SCHEMA","subject":"orders-value","version":3,"magic":1}"#);
        let global = serde_json::to_string(&LogKey::config(None)).expect("json");
        assert_eq!(global, r#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        let del = serde_json::to_string(&LogKey::delete_subject("s")).expect("json");
        assert_eq!(del, r#"{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}"#);
    }

    #[test]
    fn reads_confluent_written_records() {
        let key: LogKey = serde_json::from_str(r#"{"keytype":"NOOP","magic":0}"#).expect("noop");
        assert_eq!(key, LogKey::Noop { magic: 0 });
        let key: LogKey = serde_json::from_str(r#"{"keytype":"MODE","subject":null,"magic":0}"#).expect("mode");
        assert_eq!(key, LogKey::Other);
        let value: SchemaValue = serde_json::from_str(
            r#"{"subject":"s","version":1,"id":7,"schemaType":"AVRO","schema":"\"string\"","deleted":false}"#,
        )
        .expect("value");
        assert_eq!(value.id, 7);
        let config: ConfigValue = serde_json::from_str(r#"{"compatibilityLevel":"FULL_TRANSITIVE"}"#).expect("config");
        assert_eq!(config.compatibility_level, CompatibilityLevel::FullTransitive);
    }
}
