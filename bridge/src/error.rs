//! Every answer that is not a success, mapped to its status in one place.
//! Bodies say what happened and what to do, never internals or secrets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refused or failed delivery.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No source with this name is configured.
    #[error("no webhook source named '{0}' is configured")]
    UnknownSource(String),
    /// Signature, timestamp or header check failed.
    #[error("signature verification failed: {0}")]
    Forged(crate::verify::VerifyError),
    /// Kafka or the registry is unavailable; the provider should retry.
    #[error("{0}; retry later")]
    Unavailable(String, u64),
    /// The body is larger than `server.max_body_bytes`.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client did not send its body in time.
    #[error("the request body did not arrive within {0} ms")]
    SlowBody(u64),
    /// The body could not be read.
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// The source sends faster than its configured rate limit.
    #[error("source '{0}' is over its rate limit; retry after the Retry-After seconds")]
    RateLimited(String),
    /// The same delivery is being processed by another request.
    #[error("delivery {0} is being processed right now; retry shortly")]
    InFlight(String),
}

impl AppError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSource(_) => StatusCode::NOT_FOUND,
            Self::Forged(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InFlight(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Self::Unavailable(_, secs) => Some(*secs),
            Self::InFlight(_) | Self::RateLimited(_) => Some(1),
            _ => None,
        };
        let reason = match &self {
            Self::Forged(reason) => reason.to_string(),
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": self.to_string(), "reason": reason }))).into_response();
        if let Some(secs) = retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, Self::TooLarge(_) | Self::SlowBody(_)) {
            // The body was not read to its end, so the connection cannot
            // carry another request and is closed after this answer. Say so:
            // a keep-alive client that is not told puts the connection back
            // in its pool, and its next request there fails unanswered.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
