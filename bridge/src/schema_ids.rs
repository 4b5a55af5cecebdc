//! Schema ids for (subject, schema) pairs, from the registry, cached.
//!
//! The first delivery of an event type registers its schema version under
//! the topic's subject (`<topic>-value`); the registry answers with the
//! existing id when it is already there. Later deliveries hit the cache.

use schemas::client::{ClientError, RegistryClient};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The cache in front of the registry.
#[derive(Debug)]
pub struct SchemaIds {
    client: RegistryClient,
    cache: RwLock<HashMap<(String, Arc<str>), u32>>,
}

impl SchemaIds {
    /// A cache over `client`.
    pub fn new(client: RegistryClient) -> Self {
        Self { client, cache: RwLock::default() }
    }

    /// The registry client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The id of `schema` under `subject`, registering it if needed.
    pub async fn id_for(&self, subject: &str, schema: &Arc<str>) -> Result<u32, ClientError> {
        let key = (subject.to_owned(), schema.clone());
        if let Some(id) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(*id);
        }
        let id = self.client.register(subject, schema).await?;
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(key, id);
        Ok(id)
    }
}
