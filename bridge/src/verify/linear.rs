//! Linear: `Linear-Signature: <hex>` (no prefix), HMAC-SHA256 over the body
//! keyed with the signing secret. Freshness comes from the body's
//! `webhookTimestamp` (milliseconds): within `tolerance_secs` (Linear's SDK:
//! 60) of now, either way, compared in milliseconds.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, utf8_keys};

/// The Linear verifier.
#[derive(Debug)]
pub struct Linear {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Linear {
    /// A verifier with these signing secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: utf8_keys(secrets), tolerance }
    }
}

impl Verify for Linear {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let signature =
            from_hex(header(inbound.headers, "linear-signature")?).ok_or(VerifyError::Malformed("Linear-Signature"))?;
        if !mac_matches(Algorithm::Sha256, &self.keys, &[inbound.body], &[signature]) {
            return Err(VerifyError::Mismatch);
        }
        // Only after the MAC holds is the body parsed for its timestamp.
        let body: serde_json::Value =
            serde_json::from_slice(inbound.body).map_err(|_| VerifyError::Malformed("body (JSON)"))?;
        let sent_ms = body
            .get("webhookTimestamp")
            .and_then(serde_json::Value::as_i64)
            .ok_or(VerifyError::MissingHeader("webhookTimestamp (in the body)"))?;
        if (inbound.now * 1000 - sent_ms).abs() > self.tolerance * 1000 {
            return Err(VerifyError::Stale { timestamp: sent_ms / 1000, now: inbound.now, tolerance: self.tolerance });
        }
        Ok(())
    }
}
