//! Shopify: `X-Shopify-Hmac-Sha256` (or, from the newer Events product,
//! `Shopify-Hmac-Sha256`): base64 of HMAC-SHA256 over the body, keyed with
//! the app's client secret as UTF-8. No signed timestamp; replays are caught
//! by the `X-Shopify-Event-Id` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, from_base64, header, mac_matches};

/// The Shopify verifier.
#[derive(Debug)]
pub struct Shopify {
    keys: Vec<Vec<u8>>,
}

impl Shopify {
    /// A verifier with these client secrets (old and new during rotation).
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect() }
    }
}

impl Verify for Shopify {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let value = header(inbound.headers, "x-shopify-hmac-sha256")
            .or_else(|_| header(inbound.headers, "shopify-hmac-sha256"))
            .map_err(|_| VerifyError::MissingHeader("X-Shopify-Hmac-Sha256"))?;
        let signature = from_base64(value).ok_or(VerifyError::Malformed("X-Shopify-Hmac-Sha256"))?;
        if mac_matches(Algorithm::Sha256, &self.keys, &[inbound.body], &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
