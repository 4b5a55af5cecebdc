//! Standard Webhooks (and Svix, which uses the same scheme under `svix-*`
//! header names).
//!
//! Signed bytes: `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256, key =
//! the secret with `whsec_` stripped, base64-decoded. `webhook-signature` is a
//! space-separated list of `v1,<base64>`. Asymmetric `v1a,<base64>` signatures
//! (Ed25519 over the same bytes) are checked against `whpk_<base64>` public
//! keys configured as secrets. Other version labels are ignored, never
//! accepted. Timestamp within ±tolerance of now.

use super::{
    Algorithm, Inbound, Verify, VerifyError, from_base64, header, mac_matches, secret_from_base64, within_window,
};
use ed25519_dalek::{Signature, VerifyingKey};

/// The Standard Webhooks verifier.
#[derive(Debug)]
pub struct StandardWebhooks {
    keys: Vec<Vec<u8>>,
    public_keys: Vec<VerifyingKey>,
    tolerance: i64,
}

/// A secret that is not `whsec_` + base64.
#[derive(Debug, thiserror::Error)]
#[error("a Standard Webhooks secret must be whsec_ followed by base64 (as the provider shows it)")]
pub struct BadSecret;

impl StandardWebhooks {
    /// A verifier with these secrets (rotation: any may sign).
    pub fn new(secrets: &[String], tolerance: i64) -> Result<Self, BadSecret> {
        let mut keys = Vec::new();
        let mut public_keys = Vec::new();
        for secret in secrets {
            if let Some(public) = secret.strip_prefix("whpk_") {
                let bytes: [u8; 32] = secret_from_base64(public).and_then(|b| b.try_into().ok()).ok_or(BadSecret)?;
                public_keys.push(VerifyingKey::from_bytes(&bytes).map_err(|_| BadSecret)?);
            } else {
                keys.push(secret_from_base64(secret.strip_prefix("whsec_").unwrap_or(secret)).ok_or(BadSecret)?);
            }
        }
        Ok(Self { keys, public_keys, tolerance })
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
        let asymmetric: Vec<Signature> = signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1a,"))
            .filter_map(from_base64)
            .filter_map(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes))
            .collect();
        let usable = (!candidates.is_empty() && !self.keys.is_empty())
            || (!asymmetric.is_empty() && !self.public_keys.is_empty());
        if !usable {
            return Err(VerifyError::NoSupportedSignature("v1"));
        }
        within_window(ts, inbound.now, self.tolerance)?;
        let message = [id.as_bytes(), b".", timestamp.as_bytes(), b".", inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &candidates) {
            return Ok(());
        }
        let signed = message.concat();
        if self.public_keys.iter().any(|key| asymmetric.iter().any(|sig| key.verify_strict(&signed, sig).is_ok())) {
            return Ok(());
        }
        Err(VerifyError::Mismatch)
    }
}
