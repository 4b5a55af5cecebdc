//! Zoom: `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`,
//! HMAC-SHA256 keyed with the app's secret token; Zoom documents no replay
//! window, so the source's `tolerance_secs` (default 300) applies.

use super::{Algorithm, Inbound, Verify, VerifyError, utf8_keys, v0_basestring};

/// The Zoom verifier.
#[derive(Debug)]
pub struct Zoom {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Zoom {
    /// A verifier with these secret tokens.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: utf8_keys(secrets), tolerance }
    }

    /// The answer to `endpoint.url_validation`: hex HMAC-SHA256 of the plain
    /// token under the (first) secret token.
    pub fn encrypt_token(&self, plain_token: &str) -> String {
        let key = self.keys.first().map(Vec::as_slice).unwrap_or_default();
        hex::encode(super::mac(Algorithm::Sha256, key, &[plain_token.as_bytes()]))
    }
}

impl Verify for Zoom {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        v0_basestring(inbound, "x-zm-request-timestamp", "x-zm-signature", &self.keys, self.tolerance)
    }
}
