//! Zoom: `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`,
//! HMAC-SHA256 keyed with the app's secret token; Zoom documents no replay
//! window, so the source's `tolerance_secs` (default 300) applies.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, utf8_keys, within_window};

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
        let timestamp = header(inbound.headers, "x-zm-request-timestamp")?;
        let value = header(inbound.headers, "x-zm-signature")?;
        let hex = value.strip_prefix("v0=").ok_or(VerifyError::NoSupportedSignature("v0"))?;
        let signature = from_hex(hex).ok_or(VerifyError::Malformed("x-zm-signature"))?;
        let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("x-zm-request-timestamp"))?;
        within_window(ts, inbound.now, self.tolerance)?;
        let message = [b"v0:".as_slice(), timestamp.as_bytes(), b":", inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
