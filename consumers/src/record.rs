//! Records off the webhook topics, decoded through the schema registry with
//! the schema they were written with, whatever its version.

use rdkafka::message::{Headers, Message};
use schemas::client::{ClientError, RegistryClient};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A decoded record: where it was, and its envelope as JSON.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The schema id in the wire header.
    pub schema_id: u32,
    /// The `ce_type` header (`<provider>.<event_type>`), if present.
    pub ce_type: Option<String>,
    /// The `traceparent` header, if present.
    pub traceparent: Option<String>,
    /// The envelope, payload included.
    pub envelope: Value,
}

impl Decoded {
    /// A string field of the envelope.
    pub fn text(&self, pointer: &str) -> Option<&str> {
        self.envelope.pointer(pointer).and_then(Value::as_str)
    }

    /// An integer field of the envelope.
    pub fn int(&self, pointer: &str) -> Option<i64> {
        self.envelope.pointer(pointer).and_then(Value::as_i64)
    }

    /// The provider's payload: the typed record, or, for events written with
    /// a generic schema, the JSON body it carries.
    pub fn payload(&self) -> Option<std::borrow::Cow<'_, Value>> {
        let payload = self.envelope.get("payload")?;
        match payload.get("json").and_then(Value::as_str) {
            Some(text) if payload.as_object().is_some_and(|o| o.len() <= 2) => {
                serde_json::from_str(text).ok().map(std::borrow::Cow::Owned)
            }
            _ => Some(std::borrow::Cow::Borrowed(payload)),
        }
    }

    /// (source, delivery id): what a delivery is known by; its copies
    /// (provider retries, reconciliation) have the same.
    pub fn delivery(&self) -> (&str, &str) {
        (self.text("/source").unwrap_or_default(), self.text("/delivery_id").unwrap_or_default())
    }

    /// The provider, from `ce_type`.
    pub fn provider(&self) -> Option<&str> {
        self.ce_type.as_deref().and_then(|t| t.split_once('.')).map(|(p, _)| p)
    }
}

/// Why a record was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record itself is bad: it goes to the dead-letter topic.
    #[error("undecodable record: {0}")]
    Undecodable(String),
    /// The registry could not be asked: try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

/// Decodes records, caching writer schemas by id.
#[derive(Debug, Clone)]
pub struct Decoder {
    client: RegistryClient,
    schemas: Arc<Mutex<HashMap<u32, Arc<apache_avro::Schema>>>>,
}

impl Decoder {
    /// A decoder using the registry at `url`.
    pub fn new(url: &str) -> Self {
        Self { client: RegistryClient::new(url), schemas: Arc::default() }
    }

    async fn schema(&self, id: u32) -> Result<Arc<apache_avro::Schema>, DecodeError> {
        if let Some(schema) = self.schemas.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(schema.clone());
        }
        let text = self.client.schema(id).await.map_err(|error| match error {
            ClientError::NotFound { .. } => DecodeError::Undecodable(format!("schema id {id} is not in the registry")),
            other => DecodeError::Unavailable(other.to_string()),
        })?;
        let schema = Arc::new(
            apache_avro::Schema::parse_str(&text)
                .map_err(|e| DecodeError::Undecodable(format!("schema {id} does not parse: {e}")))?,
        );
        self.schemas.lock().unwrap_or_else(|e| e.into_inner()).insert(id, schema.clone());
        Ok(schema)
    }

    /// Decodes one message.
    pub async fn decode<M: Message>(&self, message: &M) -> Result<Decoded, DecodeError> {
        let payload = message.payload().ok_or_else(|| DecodeError::Undecodable("empty value".into()))?;
        let (schema_id, body) = schemas::wire::unframe(payload).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        let schema = self.schema(schema_id).await?;
        let value = schemas::wire::decode_avro(&schema, body).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        let envelope = Value::try_from(value).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Ok(Decoded {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            schema_id,
            ce_type: header("ce_type"),
            traceparent: header("traceparent"),
            envelope,
        })
    }
}
