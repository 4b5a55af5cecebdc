//! Square: `x-square-hmacsha256-signature`, base64 of HMAC-SHA256 keyed
//! with the subscription's signature key, over the notification URL (the
//! public URL configured for the source, plus the query) followed by the
//! body exactly as sent. No timestamp; replays are caught by `event_id`.

use super::{Algorithm, Inbound, Verify, VerifyError, from_base64, header, mac_matches, utf8_keys};

/// The Square verifier.
#[derive(Debug)]
pub struct Square {
    keys: Vec<Vec<u8>>,
}

impl Square {
    /// A verifier with these signature keys.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: utf8_keys(secrets) }
    }
}

impl Verify for Square {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let signature = from_base64(header(inbound.headers, "x-square-hmacsha256-signature")?)
            .ok_or(VerifyError::Malformed("x-square-hmacsha256-signature"))?;
        let url = inbound.public_url.ok_or(VerifyError::NoPublicUrl)?;
        if mac_matches(Algorithm::Sha256, &self.keys, &[url.as_bytes(), inbound.body], &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
