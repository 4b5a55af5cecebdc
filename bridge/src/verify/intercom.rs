//! Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1 over the body keyed
//! with the app's client secret. No timestamp; replays are caught by the
//! notification `id` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, prefixed_hex_mac, utf8_keys};

/// The Intercom verifier.
#[derive(Debug)]
pub struct Intercom {
    keys: Vec<Vec<u8>>,
}

impl Intercom {
    /// A verifier with these client secrets.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: utf8_keys(secrets) }
    }
}

impl Verify for Intercom {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        prefixed_hex_mac(inbound, "x-hub-signature", "sha1=", Algorithm::Sha1, &self.keys)
    }
}
