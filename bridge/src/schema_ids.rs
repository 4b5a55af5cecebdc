//! Schema ids for (subject, schema) pairs, from the registry, cached.
//!
//! The first delivery of an event type registers its schema version under
//! the topic's subject (`<topic>-value`); the registry answers with the
//! existing id when it is already there. Later deliveries hit the cache;
//! those that arrive while the registration is under way wait for it
//! instead of each registering again.

use schemas::client::{ClientError, RegistryClient};
use schemas::single_flight::SingleFlight;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A schema text and the id the registry gave it.
type Registered = (Arc<str>, u32);

/// The cache in front of the registry: per subject, the schemas asked for
/// and their ids. A subject has a handful of versions, each one `Arc` shared
/// by every delivery of it, so a lookup hashes the subject and compares
/// pointers, never the schema text (several KB).
#[derive(Debug)]
pub struct SchemaIds {
    client: RegistryClient,
    cache: RwLock<HashMap<String, Vec<Registered>>>,
    /// The registrations: one per (subject, schema), however many
    /// deliveries of a new version arrive at once.
    registering: SingleFlight<(String, Arc<str>), u32, ClientError>,
}

impl SchemaIds {
    /// A cache over `client`.
    pub fn new(client: RegistryClient) -> Self {
        Self { client, cache: RwLock::default(), registering: SingleFlight::default() }
    }

    /// The registry client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The id of `schema` under `subject`, registering it if needed.
    pub async fn id_for(&self, subject: &str, schema: &Arc<str>) -> Result<u32, ClientError> {
        if let Some(id) = self.cached(subject, schema) {
            return Ok(id);
        }
        let register = || {
            let (client, subject, schema) = (self.client.clone(), subject.to_owned(), schema.clone());
            async move { client.register(&subject, &schema).await }
        };
        let id = self.registering.get_or_make(&(subject.to_owned(), schema.clone()), register).await?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let known = cache.entry(subject.to_owned()).or_default();
        if !known.iter().any(|(text, _)| Arc::ptr_eq(text, schema)) {
            known.push((schema.clone(), id));
        }
        Ok(id)
    }

    fn cached(&self, subject: &str, schema: &Arc<str>) -> Option<u32> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let known = cache.get(subject)?;
        known
            .iter()
            .find(|(text, _)| Arc::ptr_eq(text, schema))
            .or_else(|| known.iter().find(|(text, _)| text == schema))
            .map(|(_, id)| *id)
    }
}
