//! Compatibility levels and the check between schema versions.
//!
//! The decision itself is apache-avro's schema resolution
//! ([`SchemaCompatibility::can_read`]); this module only chooses which pairs
//! to check for a level, in which direction, and words the failure.
//! A result of `Compatibility::Partial` (e.g. a reader enum missing some of
//! the writer's symbols, a union narrowed) is treated as incompatible, as the
//! Confluent registry does: some records written under one version could not
//! be read under the other.

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A subject's compatibility level, as the Confluent registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// Any schema may follow any other.
    None,
    /// Consumers on the new schema read data written with the previous one.
    #[default]
    Backward,
    /// Consumers on the new schema read data written with every earlier one.
    BackwardTransitive,
    /// Consumers on the previous schema read data written with the new one.
    Forward,
    /// Consumers on every earlier schema read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the previous schema.
    Full,
    /// Backward and forward against every earlier schema.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Every level, in the order Confluent documents them.
    pub const ALL: [CompatibilityLevel; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The name used on the wire (`BACKWARD_TRANSITIVE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive)
    }

    fn backward(self) -> bool {
        matches!(self, Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive)
    }

    fn forward(self) -> bool {
        matches!(self, Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive)
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compatibility level name that is not one of the seven.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown compatibility level '{0}'; use one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
)]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// Why a new schema may not follow an earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The earlier version the new schema clashes with.
    pub version: u32,
    /// `"backward"` (new reader, old writer) or `"forward"` (old reader, new writer).
    pub direction: &'static str,
    /// apache-avro's reason, which names the field where there is one.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (reader, writer) = match self.direction {
            "backward" => ("the new schema".to_owned(), format!("version {}", self.version)),
            _ => (format!("version {}", self.version), "the new schema".to_owned()),
        };
        write!(
            f,
            "{dir} incompatible with version {v}: a reader using {reader} cannot read data written with {writer}: {reason}",
            dir = self.direction,
            v = self.version,
            reason = self.reason
        )
    }
}

fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "only partially compatible: some values (an enum symbol or union branch) of the writer have no counterpart in the reader".to_owned(),
        ),
        Err(error) => {
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                reason.push_str(": ");
                reason.push_str(&inner.to_string());
                source = inner.source();
            }
            Err(reason)
        }
    }
}

/// Checks `new` against the earlier versions of a subject, given oldest first
/// as `(version, schema)`, under `level`. Returns every clash found (empty: compatible).
pub fn check(level: CompatibilityLevel, new: &Schema, earlier: &[(u32, &Schema)]) -> Vec<Incompatibility> {
    let against: &[(u32, &Schema)] =
        if level.transitive() { earlier } else { earlier.last().map(std::slice::from_ref).unwrap_or(&[]) };
    let mut clashes = Vec::new();
    for &(version, old) in against.iter().rev() {
        if level.backward()
            && let Err(reason) = can_read(old, new)
        {
            clashes.push(Incompatibility { version, direction: "backward", reason });
        }
        if level.forward()
            && let Err(reason) = can_read(new, old)
        {
            clashes.push(Incompatibility { version, direction: "forward", reason });
        }
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"Customer","namespace":"t","fields":[{fields}]}}"#))
            .expect("test schema parses")
    }

    #[test]
    fn level_names_round_trip() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>().ok(), Some(level));
            let json = serde_json::to_string(&level).expect("serialize");
            assert_eq!(json, format!("\"{}\"", level.as_str()));
        }
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
        assert_eq!(CompatibilityLevel::default(), CompatibilityLevel::Backward);
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward_and_names_the_field() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"string"},{"name":"email","type":"string"}"#);
        let clashes = check(CompatibilityLevel::Backward, &v2, &[(1, &v1)]);
        assert_eq!(clashes.len(), 1);
        assert_eq!(clashes[0].direction, "backward");
        assert!(clashes[0].reason.contains("email"), "{}", clashes[0].reason);
        // Forward holds: the old reader ignores the new field.
        assert!(check(CompatibilityLevel::Forward, &v2, &[(1, &v1)]).is_empty());
        assert_eq!(check(CompatibilityLevel::Full, &v2, &[(1, &v1)]).len(), 1);
        assert!(check(CompatibilityLevel::None, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn optional_field_with_default_is_fully_compatible() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"string"},{"name":"email","type":["null","string"],"default":null}"#);
        assert!(check(CompatibilityLevel::FullTransitive, &v2, &[(1, &v1)]).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_earlier_version() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"string"},{"name":"n","type":"int","default":0}"#);
        // v3 drops the default of n: compatible with v2 (which always writes n), not with v1.
        let v3 = schema(r#"{"name":"id","type":"string"},{"name":"n","type":"int"}"#);
        let earlier = [(1, &v1), (2, &v2)];
        assert!(check(CompatibilityLevel::Backward, &v3, &earlier).is_empty());
        let clashes = check(CompatibilityLevel::BackwardTransitive, &v3, &earlier);
        assert_eq!(clashes.len(), 1);
        assert_eq!(clashes[0].version, 1);
        assert!(clashes[0].to_string().contains("version 1"));
    }

    #[test]
    fn type_change_is_incompatible() {
        let v1 = schema(r#"{"name":"amount","type":"long"}"#);
        let v2 = schema(r#"{"name":"amount","type":"int"}"#);
        let clashes = check(CompatibilityLevel::Backward, &v2, &[(1, &v1)]);
        assert_eq!(clashes.len(), 1, "long → int cannot be read");
        assert!(clashes[0].reason.contains("amount"), "{}", clashes[0].reason);
    }
}
