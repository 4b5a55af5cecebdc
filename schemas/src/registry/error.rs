//! Registry errors, each with the Confluent error code clients act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 40401
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402
    #[error("Version {0} not found.")]
    VersionNotFound(u32),
    /// 40403
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 40404
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406
    #[error("Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    /// 40407
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    /// 40408
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelCompatibilityNotConfigured(String),
    /// 409
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {details}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// What clashes, naming version and field.
        details: String,
    },
    /// 42201
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibilityLevel(String),
    /// 400: the body is not the JSON the endpoint takes.
    #[error("Malformed request body: {0}")]
    BadRequest(String),
    /// 50001: Kafka refused or failed a write or read.
    #[error("Error in the backend data store (Kafka): {0}")]
    Store(String),
    /// 50002
    #[error("Operation timed out: {0}")]
    Timeout(String),
}

impl RegistryError {
    /// The Confluent `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound(_) => 40402,
            Self::SchemaNotFound(_) => 40403,
            Self::SubjectSoftDeleted(_) => 40404,
            Self::SubjectNotSoftDeleted(_) => 40405,
            Self::VersionSoftDeleted(..) => 40406,
            Self::VersionNotSoftDeleted(..) => 40407,
            Self::SubjectLevelCompatibilityNotConfigured(_) => 40408,
            Self::Incompatible { .. } => 409,
            Self::InvalidSchema(_) => 42201,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidCompatibilityLevel(_) => 42203,
            Self::BadRequest(_) => 400,
            Self::Store(_) => 50001,
            Self::Timeout(_) => 50002,
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(&self) -> StatusCode {
        match self.code() {
            400 => StatusCode::BAD_REQUEST,
            409 => StatusCode::CONFLICT,
            40400..=40499 => StatusCode::NOT_FOUND,
            42200..=42299 => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error_code = self.code(), error = %self, "registry request failed");
        }
        let body = json!({ "error_code": self.code(), "message": self.to_string() });
        super::api::confluent_json(self.status(), &body)
    }
}
