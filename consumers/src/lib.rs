//! # consumers
//!
//! Services on the webhook topics, one module each:
//! - [`sync`]: keeps PostgreSQL in step (events once, entity state in order);
//! - [`analytics`]: per-minute rollups, printed by `consumers report`;
//! - [`reconcile`]: polls providers' event APIs and pushes what webhooks missed.
//!
//! **Guarantee:** sync and analytics store each partition's next offset in
//! the same PostgreSQL transaction as the rows it produced ([`runner`]), and
//! never commit offsets to Kafka: a crash at any point, followed by a
//! restart, yields the same database as an uninterrupted run.
//!
//! Run: `consumers sync --config consumers/consumers.example.toml` (also
//! `analytics`, `report`, `reconcile`).

pub mod analytics;
pub mod config;
pub mod lookup;
pub mod reconcile;
pub mod record;
pub mod runner;
pub mod sync;
