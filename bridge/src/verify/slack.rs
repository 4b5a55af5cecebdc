//! Slack: `X-Slack-Signature: v0=<hex>` over the basestring
//! `v0:{X-Slack-Request-Timestamp}:{body}`, HMAC-SHA256 keyed with the
//! signing secret as UTF-8; timestamp within ±tolerance of now.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, within_window};

/// The Slack verifier.
#[derive(Debug)]
pub struct Slack {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Slack {
    /// A verifier with these signing secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(), tolerance }
    }
}

impl Verify for Slack {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let timestamp = header(inbound.headers, "x-slack-request-timestamp")?;
        let value = header(inbound.headers, "x-slack-signature")?;
        let hex = value.strip_prefix("v0=").ok_or(VerifyError::NoSupportedSignature("v0"))?;
        let signature = from_hex(hex).ok_or(VerifyError::Malformed("X-Slack-Signature"))?;
        let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("X-Slack-Request-Timestamp"))?;
        within_window(ts, inbound.now, self.tolerance)?;
        let message = [b"v0:".as_slice(), timestamp.as_bytes(), b":", inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
