//! A client for any Confluent-compatible Schema Registry (ours, Confluent's,
//! Karapace, Redpanda's, Apicurio's compatibility API).
//!
//! Registry answers are mapped to typed errors by their `error_code`
//! (`40403 → SchemaNotFound`, `409 → Incompatible`), so callers can act on
//! them without reading messages.

use crate::compat::CompatibilityLevel;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// What a registry call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached or did not answer in time.
    #[error("schema registry at {url} is unreachable: {reason}; check the URL and that the registry is running")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// 40401/40402/40403: the subject, version or schema does not exist.
    #[error("not found in the schema registry ({code}): {message}")]
    NotFound {
        /// The Confluent error code.
        code: u32,
        /// The registry's message.
        message: String,
    },
    /// 409: the schema breaks the subject's compatibility level.
    #[error("the schema registry refused the schema as incompatible: {0}")]
    Incompatible(String),
    /// 42201: the registry rejects the schema text.
    #[error("the schema registry says the schema is invalid: {0}")]
    Invalid(String),
    /// Any other error answer.
    #[error("schema registry error {code}: {message}")]
    Other {
        /// The Confluent error code (or HTTP status).
        code: u32,
        /// The registry's message.
        message: String,
    },
}

/// An HTTP client of one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl RegistryClient {
    /// A client of the registry at `base` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).header("accept", crate::registry::api::CONTENT_TYPE);
        if let Some(body) = body {
            request = request.header("content-type", crate::registry::api::CONTENT_TYPE).body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable { url: url.clone(), reason: e.to_string() };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| ClientError::Other {
                code: status.as_u16().into(),
                message: format!("answer is not JSON: {e}"),
            });
        }
        let ErrorBody { error_code, message } =
            serde_json::from_str(&text).unwrap_or(ErrorBody { error_code: status.as_u16().into(), message: text });
        Err(match error_code {
            40401..=40403 => ClientError::NotFound { code: error_code, message },
            409 => ClientError::Incompatible(message),
            42201 => ClientError::Invalid(message),
            code => ClientError::Other { code, message },
        })
    }

    /// Registers `schema` under `subject` (idempotent) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, ClientError> {
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let answer =
            self.call(reqwest::Method::POST, &format!("/subjects/{}/versions", encode(subject)), Some(body)).await?;
        id_of(&answer)
    }

    /// Finds the id of `schema` under `subject`, without registering it.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, ClientError> {
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let answer = self.call(reqwest::Method::POST, &format!("/subjects/{}", encode(subject)), Some(body)).await?;
        id_of(&answer)
    }

    /// The schema text with `id`.
    pub async fn schema(&self, id: u32) -> Result<String, ClientError> {
        let answer = self.call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None).await?;
        answer["schema"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Other { code: 0, message: format!("no schema in {answer}") })
    }

    /// Sets `subject`'s compatibility level.
    pub async fn set_compatibility(&self, subject: &str, level: CompatibilityLevel) -> Result<(), ClientError> {
        let body = json!({ "compatibility": level });
        self.call(reqwest::Method::PUT, &format!("/config/{}", encode(subject)), Some(body)).await.map(drop)
    }

    /// Whether the registry answers at all (for readiness).
    pub async fn reachable(&self) -> bool {
        self.call(reqwest::Method::GET, "/subjects", None).await.is_ok()
    }
}

fn id_of(answer: &serde_json::Value) -> Result<u32, ClientError> {
    answer["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| ClientError::Other { code: 0, message: format!("no id in {answer}") })
}

/// Percent-encodes a subject for a path segment.
fn encode(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for byte in subject.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
