//! The schema catalog: Avro payload schemas per source, event type and version.
//!
//! ```text
//! schemas/catalog/
//!   stripe/
//!     customer.created/
//!       v1.avsc            ← payload schema, version 1
//!       v2.avsc            ← adding a version is adding this one file
//!       compatibility      ← optional: the subject's level (default BACKWARD)
//!   github/
//!     pull_request/v1.avsc ← serves pull_request.opened, pull_request.closed, …
//! ```
//!
//! - A directory is the event type with every character outside
//!   `[A-Za-z0-9._-]` replaced by `_` (Shopify `orders/create` → `orders_create`).
//!   Lookup tries the exact event type, then drops `.`-suffixes, so
//!   `pull_request/` serves every `pull_request.<action>`.
//! - A version may say from which provider version on it applies, with a
//!   top-level `"x-since"` attribute (e.g. Stripe's `api_version`
//!   `"2024-06-20"`). The bridge picks the highest version whose `x-since` is
//!   at most the delivery's selector (compared as strings, which orders
//!   Stripe's dated versions), or the latest version when the source has no
//!   selector.
//! - Records are written with the payload wrapped in the envelope
//!   ([`crate::envelope`]); the registered subject is `<topic>-value`.

use crate::compat::{self, CompatibilityLevel};
use crate::envelope;
use apache_avro::Schema;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default topic template.
pub const DEFAULT_TOPIC_TEMPLATE: &str = "webhooks.{source}.{event_type}";

/// A catalog file that is not right, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CatalogError {
    /// The file or directory.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

/// One version of an event's payload schema.
#[derive(Debug, Clone)]
pub struct CatalogVersion {
    /// The version number, from the file name (`v3.avsc` → 3).
    pub version: u32,
    /// The file.
    pub path: PathBuf,
    /// The provider version from which it applies (`x-since`).
    pub since: Option<String>,
    /// The payload schema as written.
    pub payload_json: Json,
    /// The payload schema, parsed.
    pub payload: Schema,
    /// The registered schema: the payload in the envelope.
    pub envelope: Schema,
    /// The registered schema's canonical text.
    pub envelope_text: String,
}

impl CatalogVersion {
    /// Builds a version from a payload schema (file or built-in).
    pub fn from_payload(version: u32, path: PathBuf, payload_json: Json) -> Result<Self, CatalogError> {
        let error = |message: String| CatalogError { path: path.clone(), message };
        let payload = Schema::parse(&payload_json).map_err(|e| error(format!("not a valid Avro schema: {e}")))?;
        if !matches!(payload, Schema::Record(_)) {
            return Err(error("the payload schema must be a record".into()));
        }
        let envelope = Schema::parse(&envelope::wrap_schema(&payload_json))
            .map_err(|e| error(format!("the schema does not fit in the envelope: {e}")))?;
        let since = payload_json.get("x-since").and_then(Json::as_str).map(str::to_owned);
        Ok(Self { version, path, since, payload_json, payload, envelope_text: crate::canonical(&envelope), envelope })
    }
}

/// Every version of one event type of one source.
#[derive(Debug, Clone)]
pub struct EventSchemas {
    /// The source directory name.
    pub source: String,
    /// The event directory name (sanitised event type or family).
    pub event: String,
    /// The subject's compatibility level.
    pub compatibility: CompatibilityLevel,
    /// Versions, ascending, numbered from 1 without gaps.
    pub versions: Vec<CatalogVersion>,
}

impl EventSchemas {
    /// The version for a delivery whose selector (e.g. Stripe `api_version`) is `selector`.
    pub fn select(&self, selector: Option<&str>) -> &CatalogVersion {
        let latest = &self.versions[self.versions.len() - 1];
        let Some(selector) = selector else { return latest };
        self.versions
            .iter()
            .rev()
            .find(|v| v.since.as_deref().is_none_or(|since| since <= selector))
            .unwrap_or(&self.versions[0])
    }

    /// The latest version.
    pub fn latest(&self) -> &CatalogVersion {
        &self.versions[self.versions.len() - 1]
    }
}

/// A loaded catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    events: BTreeMap<(String, String), EventSchemas>,
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn sanitize_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// The topic for `source`'s `event_type` from a template with `{source}`
/// and `{event_type}`, made a legal Kafka topic name (characters
/// `[A-Za-z0-9._-]`, at most 249 of them, not `.` or `..`).
pub fn topic_name(template: &str, source: &str, event_type: &str) -> String {
    let name = template.replace("{source}", &sanitize_name(source)).replace("{event_type}", &sanitize_name(event_type));
    let mut name = sanitize_name(&name);
    name.truncate(249);
    if name.is_empty() || name == "." || name == ".." {
        name = format!("webhooks.{}.unnamed", sanitize_name(source));
    }
    name
}

/// The Confluent subject for a topic's values (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

fn version_number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix('v')?.strip_suffix(".avsc")?.parse().ok()
}

impl Catalog {
    /// Loads every `<source>/<event>/v<N>.avsc` under `root`. Fails on the
    /// first file that does not parse, naming it.
    pub fn load(root: &Path) -> Result<Self, CatalogError> {
        let error = |path: &Path, message: String| CatalogError { path: path.to_owned(), message };
        let read_dir = |dir: &Path| -> Result<Vec<PathBuf>, CatalogError> {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| error(dir, format!("cannot read the catalog directory: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            Ok(entries)
        };
        let mut events = BTreeMap::new();
        for source_dir in read_dir(root)?.into_iter().filter(|p| p.is_dir()) {
            let source = source_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            for event_dir in read_dir(&source_dir)?.into_iter().filter(|p| p.is_dir()) {
                let event = event_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let mut versions = Vec::new();
                let mut compatibility = CompatibilityLevel::default();
                for file in read_dir(&event_dir)? {
                    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    if name == "compatibility" {
                        let text = std::fs::read_to_string(&file).map_err(|e| error(&file, e.to_string()))?;
                        compatibility =
                            text.trim().parse().map_err(|e: compat::UnknownLevel| error(&file, e.to_string()))?;
                        continue;
                    }
                    if !name.ends_with(".avsc") {
                        continue;
                    }
                    let version = version_number(&file)
                        .ok_or_else(|| error(&file, "schema files are named v<N>.avsc, N = 1, 2, …".into()))?;
                    let text = std::fs::read_to_string(&file).map_err(|e| error(&file, e.to_string()))?;
                    let json: Json = serde_json::from_str(&text).map_err(|e| error(&file, format!("not JSON: {e}")))?;
                    versions.push(CatalogVersion::from_payload(version, file.clone(), json)?);
                }
                versions.sort_by_key(|v| v.version);
                if versions.is_empty() {
                    continue;
                }
                for (expected, v) in (1..).zip(&versions) {
                    if v.version != expected {
                        return Err(error(
                            &v.path,
                            format!("versions must run 1, 2, … without gaps; expected v{expected}.avsc here"),
                        ));
                    }
                }
                events.insert(
                    (source.clone(), event.clone()),
                    EventSchemas { source: source.clone(), event, compatibility, versions },
                );
            }
        }
        Ok(Self { events })
    }

    /// The schemas for `source`'s `event_type`: the exact event type, else
    /// its `.`-prefixes (`pull_request.opened` → `pull_request`).
    pub fn find(&self, source: &str, event_type: &str) -> Option<&EventSchemas> {
        let mut key = sanitize_name(event_type);
        loop {
            if let Some(found) = self.events.get(&(source.to_owned(), key.clone())) {
                return Some(found);
            }
            key.truncate(key.rfind('.')?);
        }
    }

    /// Every event type's schemas.
    pub fn events(&self) -> impl Iterator<Item = &EventSchemas> {
        self.events.values()
    }

    /// Checks each version against its predecessors under its subject's
    /// level. Each problem names the file, the version it clashes with, and
    /// the field where apache-avro names one.
    pub fn check(&self) -> Vec<CatalogError> {
        let mut problems = Vec::new();
        for event in self.events.values() {
            for (i, version) in event.versions.iter().enumerate() {
                let earlier: Vec<(u32, &Schema)> =
                    event.versions[..i].iter().map(|v| (v.version, &v.payload)).collect();
                for clash in compat::check(event.compatibility, &version.payload, &earlier) {
                    problems.push(CatalogError {
                        path: version.path.clone(),
                        message: format!(
                            "{clash} (level {}, {})",
                            event.compatibility,
                            event.versions[clash.version as usize - 1].path.display()
                        ),
                    });
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_sanitised() {
        assert_eq!(topic_name(DEFAULT_TOPIC_TEMPLATE, "shopify", "orders/create"), "webhooks.shopify.orders_create");
        assert_eq!(
            topic_name(DEFAULT_TOPIC_TEMPLATE, "stripe", "payment_intent.succeeded"),
            "webhooks.stripe.payment_intent.succeeded"
        );
        assert_eq!(topic_name("{source}-{event_type}", "my src", "a b/c ü"), "my_src-a_b_c__");
        assert_eq!(topic_name("{event_type}", "s", "x".repeat(300).as_str()).len(), 249);
        assert_eq!(topic_name("{event_type}", "s", ".."), "webhooks.s.unnamed");
    }
}
