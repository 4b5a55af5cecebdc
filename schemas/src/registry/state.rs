//! The registry's state, rebuilt by applying the `_schemas` log in order.
//!
//! Applying is deterministic, so every instance that has read the log up to
//! the same offset holds the same state. A record that would break an
//! invariant is *rejected*, never applied, so the first record in the log to
//! claim something wins:
//! - an id always names one schema (a later record giving that id to another schema is rejected);
//! - a schema has one id (a later record giving an already-registered schema a new id is rejected);
//! - a subject's version always names one schema (a later record reusing it for another is rejected).
//!
//! [`Apply::Rejected`] tells the caller what the key's accepted value is, so
//! the log can be repaired before compaction keeps only the last (rejected)
//! value of that key.

use super::log::{ConfigValue, DeleteSubjectValue, LogKey, SchemaValue};
use crate::compat::CompatibilityLevel;
use apache_avro::Schema;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A registered schema: its text and its parsed form.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    /// The globally unique id.
    pub id: u32,
    /// Canonical text (see [`crate::canonical`]).
    pub text: Arc<str>,
    /// Parsed once, on apply.
    pub parsed: Arc<Schema>,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    /// The schema id it names.
    pub id: u32,
    /// Soft-deleted.
    pub deleted: bool,
}

/// A subject's versions and its own compatibility level, if set.
#[derive(Debug, Clone, Default)]
pub struct SubjectState {
    /// Versions, ascending.
    pub versions: BTreeMap<u32, VersionEntry>,
    /// The subject's own level; `None` falls back to the global one.
    pub compatibility: Option<CompatibilityLevel>,
}

impl SubjectState {
    /// Versions not soft-deleted, ascending.
    pub fn live(&self) -> impl DoubleEndedIterator<Item = (u32, VersionEntry)> + '_ {
        self.versions.iter().filter(|(_, e)| !e.deleted).map(|(v, e)| (*v, *e))
    }

    /// Versions including soft-deleted ones when `deleted`.
    pub fn visible(&self, deleted: bool) -> impl DoubleEndedIterator<Item = (u32, VersionEntry)> + '_ {
        self.versions.iter().filter(move |(_, e)| deleted || !e.deleted).map(|(v, e)| (*v, *e))
    }
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// The state now reflects the record.
    Applied,
    /// The record was ignored (unknown key type, undecodable, no-op).
    Ignored(String),
    /// The record broke an invariant and was not applied. `accepted` is the
    /// value the key should carry (`None`: the key should not exist).
    Rejected {
        /// Why.
        reason: String,
        /// The record key, as written.
        key: LogKey,
        /// The value that state holds for that key.
        accepted: Option<SchemaValue>,
    },
}

/// The whole registry state.
#[derive(Debug, Default)]
pub struct State {
    /// Schemas by id (ids are never reused, even after a permanent delete of every version).
    pub schemas: HashMap<u32, StoredSchema>,
    /// Ids by canonical text.
    pub ids_by_text: HashMap<Arc<str>, u32>,
    /// Subjects by name.
    pub subjects: BTreeMap<String, SubjectState>,
    /// The global level; `None` means the default, BACKWARD.
    pub global: Option<CompatibilityLevel>,
    /// The highest id ever seen.
    pub max_id: u32,
}

impl State {
    /// The level in force for `subject`.
    pub fn level_for(&self, subject: &str) -> CompatibilityLevel {
        self.subjects.get(subject).and_then(|s| s.compatibility).or(self.global).unwrap_or_default()
    }

    /// The value state holds for `subject`'s `version`, as a log value.
    pub fn schema_value(&self, subject: &str, version: u32) -> Option<SchemaValue> {
        let entry = self.subjects.get(subject)?.versions.get(&version)?;
        let schema = self.schemas.get(&entry.id)?;
        Some(SchemaValue {
            subject: subject.to_owned(),
            version,
            id: entry.id,
            schema: schema.text.to_string(),
            deleted: entry.deleted,
            schema_type: None,
        })
    }

    /// Subject/version pairs naming `id`.
    pub fn versions_of(&self, id: u32, deleted: bool) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (name, subject) in &self.subjects {
            for (version, entry) in subject.visible(deleted) {
                if entry.id == id {
                    out.push((name.clone(), version));
                }
            }
        }
        out
    }

    /// Applies one record of the log. `value` is `None` for a tombstone.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Apply {
        let key: LogKey = match serde_json::from_slice(key) {
            Ok(key) => key,
            Err(error) => return Apply::Ignored(format!("undecodable key: {error}")),
        };
        match key.clone() {
            LogKey::Schema { subject, version, .. } => match value {
                None => {
                    if let Some(s) = self.subjects.get_mut(&subject) {
                        s.versions.remove(&version);
                        if s.versions.is_empty() && s.compatibility.is_none() {
                            self.subjects.remove(&subject);
                        }
                    }
                    Apply::Applied
                }
                Some(bytes) => match serde_json::from_slice::<SchemaValue>(bytes) {
                    Ok(value) => self.apply_schema(key, value),
                    Err(error) => Apply::Ignored(format!("undecodable SCHEMA value: {error}")),
                },
            },
            LogKey::Config { subject, .. } => {
                let level = match value.map(serde_json::from_slice::<ConfigValue>) {
                    None => None,
                    Some(Ok(v)) => Some(v.compatibility_level),
                    Some(Err(error)) => {
                        return Apply::Ignored(format!("undecodable CONFIG value: {error}"));
                    }
                };
                match subject {
                    None => self.global = level,
                    Some(subject) => match level {
                        Some(level) => self.subjects.entry(subject).or_default().compatibility = Some(level),
                        None => {
                            if let Some(s) = self.subjects.get_mut(&subject) {
                                s.compatibility = None;
                                if s.versions.is_empty() {
                                    self.subjects.remove(&subject);
                                }
                            }
                        }
                    },
                }
                Apply::Applied
            }
            LogKey::DeleteSubject { subject, .. } => {
                let Some(bytes) = value else {
                    return Apply::Ignored("DELETE_SUBJECT tombstone".into());
                };
                match serde_json::from_slice::<DeleteSubjectValue>(bytes) {
                    Ok(v) => {
                        if let Some(s) = self.subjects.get_mut(&subject) {
                            for (_, entry) in s.versions.range_mut(..=v.version) {
                                entry.deleted = true;
                            }
                        }
                        Apply::Applied
                    }
                    Err(error) => Apply::Ignored(format!("undecodable DELETE_SUBJECT value: {error}")),
                }
            }
            LogKey::Noop { .. } => Apply::Ignored("NOOP".into()),
            LogKey::Other => Apply::Ignored("key type not used by this registry".into()),
        }
    }

    fn apply_schema(&mut self, key: LogKey, value: SchemaValue) -> Apply {
        let reject = |state: &State, reason: String| Apply::Rejected {
            accepted: state.schema_value(&value.subject, value.version),
            key: key.clone(),
            reason,
        };
        if let Some(kind) = value.schema_type.as_deref()
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Apply::Ignored(format!("schema type {kind} is not served by this registry"));
        }
        let parsed = match Schema::parse_str(&value.schema) {
            Ok(parsed) => parsed,
            Err(error) => return reject(self, format!("schema text does not parse: {error}")),
        };
        let text: Arc<str> = crate::canonical(&parsed).into();
        if let Some(existing) = self.schemas.get(&value.id)
            && existing.text != text
        {
            return reject(self, format!("id {} already names another schema", value.id));
        }
        if let Some(&existing_id) = self.ids_by_text.get(&text)
            && existing_id != value.id
        {
            return reject(self, format!("this schema already has id {existing_id}, not {}", value.id));
        }
        if let Some(entry) = self.subjects.get(&value.subject).and_then(|s| s.versions.get(&value.version))
            && entry.id != value.id
        {
            return reject(self, format!("{} version {} already names id {}", value.subject, value.version, entry.id));
        }
        self.schemas.entry(value.id).or_insert_with(|| StoredSchema {
            id: value.id,
            text: text.clone(),
            parsed: Arc::new(parsed),
        });
        self.ids_by_text.insert(text, value.id);
        self.max_id = self.max_id.max(value.id);
        // A soft delete is never undone: re-registering a deleted schema makes a new version.
        let versions = &mut self.subjects.entry(value.subject).or_default().versions;
        let was_deleted = versions.get(&value.version).is_some_and(|e| e.deleted);
        versions.insert(value.version, VersionEntry { id: value.id, deleted: value.deleted || was_deleted });
        Apply::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, version: u32, id: u32, schema: &str) -> (Vec<u8>, Vec<u8>) {
        let key = serde_json::to_vec(&LogKey::schema(subject, version)).expect("key");
        let value = serde_json::to_vec(&SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema: schema.into(),
            deleted: false,
            schema_type: None,
        })
        .expect("value");
        (key, value)
    }

    fn apply(state: &mut State, r: (Vec<u8>, Vec<u8>)) -> Apply {
        state.apply(&r.0, Some(&r.1))
    }

    #[test]
    fn first_claim_of_an_id_wins() {
        let mut state = State::default();
        assert_eq!(apply(&mut state, record("a", 1, 1, r#""string""#)), Apply::Applied);
        let loser = apply(&mut state, record("b", 1, 1, r#""long""#));
        assert!(matches!(loser, Apply::Rejected { accepted: None, .. }), "{loser:?}");
        assert!(!state.subjects.contains_key("b"));
        assert_eq!(state.schemas[&1].text.as_ref(), r#""string""#);
    }

    #[test]
    fn a_schema_keeps_its_first_id_and_a_version_its_first_schema() {
        let mut state = State::default();
        apply(&mut state, record("a", 1, 1, r#""string""#));
        assert!(matches!(apply(&mut state, record("b", 1, 2, r#""string""#)), Apply::Rejected { .. }));
        // Same schema under a second subject with the same id is fine.
        assert_eq!(apply(&mut state, record("b", 1, 1, r#""string""#)), Apply::Applied);
        let clash = apply(&mut state, record("a", 1, 3, r#""long""#));
        match clash {
            Apply::Rejected { accepted: Some(v), .. } => assert_eq!(v.id, 1),
            other => panic!("expected a rejection carrying the accepted value, got {other:?}"),
        }
    }

    #[test]
    fn delete_subject_and_tombstones() {
        let mut state = State::default();
        apply(&mut state, record("a", 1, 1, r#""string""#));
        apply(&mut state, record("a", 2, 2, r#""long""#));
        let key = serde_json::to_vec(&LogKey::delete_subject("a")).expect("key");
        state.apply(&key, Some(br#"{"subject":"a","version":2}"#));
        assert_eq!(state.subjects["a"].live().count(), 0);
        let key = serde_json::to_vec(&LogKey::schema("a", 1)).expect("key");
        state.apply(&key, None);
        assert_eq!(state.subjects["a"].versions.len(), 1);
        // The id stays reserved even though no version names it.
        assert_eq!(state.max_id, 2);
    }

    #[test]
    fn config_records_set_and_clear_levels() {
        let mut state = State::default();
        let global = serde_json::to_vec(&LogKey::config(None)).expect("key");
        state.apply(&global, Some(br#"{"compatibilityLevel":"FULL"}"#));
        assert_eq!(state.level_for("x"), CompatibilityLevel::Full);
        let subject = serde_json::to_vec(&LogKey::config(Some("x"))).expect("key");
        state.apply(&subject, Some(br#"{"compatibilityLevel":"NONE"}"#));
        assert_eq!(state.level_for("x"), CompatibilityLevel::None);
        state.apply(&subject, None);
        assert_eq!(state.level_for("x"), CompatibilityLevel::Full);
        assert!(matches!(state.apply(b"not json", None), Apply::Ignored(_)));
    }
}
