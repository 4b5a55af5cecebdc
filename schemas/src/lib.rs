//! # schemas
//!
//! The Avro side of the webhook bridge: the catalog of schemas per source,
//! event type and version; the compatibility checks between versions
//! (decided by apache-avro's schema resolution); JSON → Avro transcoding of
//! a body read as a [`doc::Doc`]; the Confluent wire format;
//! and a Confluent-compatible Schema Registry that stores its state in a
//! compacted Kafka topic, so the project runs with no JVM.
//!
//! Run the registry with `schemas serve --listen 127.0.0.1:8081 --brokers
//! 127.0.0.1:9092`; check the catalog with `schemas check`; push it to any
//! Confluent-compatible registry with `schemas register --registry URL`.

pub mod catalog;
pub mod client;
pub mod compat;
pub mod doc;
pub mod envelope;
pub mod net;
pub mod registry;
pub mod single_flight;
pub mod topics;
pub mod transcode;
pub mod wire;

use apache_avro::Schema;

/// The canonical text of a schema: the parsed schema written back as compact
/// JSON. Unlike Avro's Parsing Canonical Form it keeps defaults, docs,
/// aliases and logical types, which change what readers do, so two schemas
/// differing only there get different ids (as in Confluent's registry);
/// whitespace and key order no longer matter.
pub fn canonical(schema: &Schema) -> String {
    serde_json::to_string(schema).unwrap_or_else(|_| schema.canonical_form())
}
