//! Meta (WhatsApp, Messenger, Instagram): `X-Hub-Signature-256:
//! sha256=<hex>`, HMAC-SHA256 over the body exactly as sent (Meta escapes
//! non-ASCII as `\uXXXX`; a re-serialised body does not match), keyed with
//! the app secret. The legacy `X-Hub-Signature: sha1=<hex>` is accepted when
//! the SHA-256 header is absent only if the source sets `accept_legacy_sha1`.
//! No timestamp.

use super::{Algorithm, Inbound, Verify, VerifyError, prefixed_hex_mac, utf8_keys};

/// The Meta verifier.
#[derive(Debug)]
pub struct Meta {
    keys: Vec<Vec<u8>>,
    accept_legacy_sha1: bool,
}

impl Meta {
    /// A verifier with these app secrets.
    pub fn new(secrets: &[String], accept_legacy_sha1: bool) -> Self {
        Self { keys: utf8_keys(secrets), accept_legacy_sha1 }
    }
}

impl Verify for Meta {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        if inbound.headers.contains_key("x-hub-signature-256") || !self.accept_legacy_sha1 {
            prefixed_hex_mac(inbound, "x-hub-signature-256", "sha256=", Algorithm::Sha256, &self.keys)
        } else {
            prefixed_hex_mac(inbound, "x-hub-signature", "sha1=", Algorithm::Sha1, &self.keys)
        }
    }
}
