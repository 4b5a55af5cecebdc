//! Standard Webhooks (and Svix, which uses the same scheme under `svix-*`
//! header names).
//!
//! Signed bytes: `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256, key =
//! the secret with `whsec_` stripped, base64-decoded. `webhook-signature` is a
//! space-separated list of `v1,<base64>`; other versions (`v1a`, asymmetric)
//! are ignored. Timestamp within ±tolerance of now.

use super::{Algorithm, Inbound, Verify, VerifyError, from_base64, header, mac_matches, within_window};

/// The Standard Webhooks verifier.
#[derive(Debug)]
pub struct StandardWebhooks {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

/// A secret that is not `whsec_` + base64.
#[derive(Debug, thiserror::Error)]
#[error("a Standard Webhooks secret must be whsec_ followed by base64 (as the provider shows it)")]
pub struct BadSecret;

impl StandardWebhooks {
    /// A verifier with these secrets (rotation: any may sign).
    pub fn new(secrets: &[String], tolerance: i64) -> Result<Self, BadSecret> {
        let keys = secrets
            .iter()
            .map(|s| from_base64(s.strip_prefix("whsec_").unwrap_or(s)).ok_or(BadSecret))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys, tolerance })
    }
}

/// The id, timestamp and signature headers, under either naming.
pub fn headers<'a>(inbound: &Inbound<'a>) -> Result<(&'a str, &'a str, &'a str), VerifyError> {
    if inbound.headers.contains_key("webhook-id") || !inbound.headers.contains_key("svix-id") {
        Ok((
            header(inbound.headers, "webhook-id")?,
            header(inbound.headers, "webhook-timestamp")?,
            header(inbound.headers, "webhook-signature")?,
        ))
    } else {
        Ok((
            header(inbound.headers, "svix-id")?,
            header(inbound.headers, "svix-timestamp")?,
            header(inbound.headers, "svix-signature")?,
        ))
    }
}

impl Verify for StandardWebhooks {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let (id, timestamp, signatures) = headers(inbound)?;
        let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("webhook-timestamp"))?;
        let candidates: Vec<Vec<u8>> = signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(from_base64)
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::NoSupportedSignature("v1"));
        }
        within_window(ts, inbound.now, self.tolerance)?;
        let message = [id.as_bytes(), b".", timestamp.as_bytes(), b".", inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &candidates) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
