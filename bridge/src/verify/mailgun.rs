//! Mailgun: the signature travels in the JSON body, `signature: {timestamp,
//! token, signature}`, where `signature` is hex HMAC-SHA256 over
//! `{timestamp}{token}` keyed with the webhook signing key.
//!
//! **The payload (`event-data`) is not covered**: a valid signature proves
//! only that Mailgun issued that token. The bridge marks such records with
//! the header `payload_authenticated: false`; consumers that act on the
//! content should re-fetch the event from Mailgun's API. Mailgun defines no
//! window; replays are caught by deduplicating on the token.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, mac_matches, utf8_keys};

/// The Mailgun verifier.
#[derive(Debug)]
pub struct Mailgun {
    keys: Vec<Vec<u8>>,
}

impl Mailgun {
    /// A verifier with these signing keys.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: utf8_keys(secrets) }
    }
}

impl Verify for Mailgun {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let body: serde_json::Value =
            serde_json::from_slice(inbound.body).map_err(|_| VerifyError::Malformed("body (JSON)"))?;
        let field = |name: &str| {
            body.pointer(&format!("/signature/{name}"))
                .and_then(serde_json::Value::as_str)
                .ok_or(VerifyError::MissingHeader("signature object (in the body)"))
        };
        let (timestamp, token) = (field("timestamp")?, field("token")?);
        let signature = from_hex(field("signature")?).ok_or(VerifyError::Malformed("signature.signature"))?;
        if mac_matches(Algorithm::Sha256, &self.keys, &[timestamp.as_bytes(), token.as_bytes()], &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
