//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the body,
//! keyed with the webhook secret as UTF-8. The legacy SHA-1
//! `X-Hub-Signature` alone is refused unless the source sets
//! `accept_legacy_sha1` (hooks from GitHub Enterprise Server before 2.20).
//! GitHub signs no timestamp; replays are caught by the `X-GitHub-Delivery`
//! deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, prefixed_hex_mac, utf8_keys};

/// The GitHub verifier.
#[derive(Debug)]
pub struct Github {
    keys: Vec<Vec<u8>>,
    accept_legacy_sha1: bool,
}

impl Github {
    /// A verifier with these secrets.
    pub fn new(secrets: &[String], accept_legacy_sha1: bool) -> Self {
        Self { keys: utf8_keys(secrets), accept_legacy_sha1 }
    }
}

impl Verify for Github {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        if self.accept_legacy_sha1 && !inbound.headers.contains_key("x-hub-signature-256") {
            return prefixed_hex_mac(inbound, "x-hub-signature", "sha1=", Algorithm::Sha1, &self.keys);
        }
        prefixed_hex_mac(inbound, "x-hub-signature-256", "sha256=", Algorithm::Sha256, &self.keys)
    }
}
