//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the body,
//! keyed with the webhook secret as UTF-8. The legacy SHA-1
//! `X-Hub-Signature` alone is refused. GitHub signs no timestamp; replays
//! are caught by the `X-GitHub-Delivery` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches};

/// The GitHub verifier.
#[derive(Debug)]
pub struct Github {
    keys: Vec<Vec<u8>>,
}

impl Github {
    /// A verifier with these secrets.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect() }
    }
}

impl Verify for Github {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let value = header(inbound.headers, "x-hub-signature-256")?;
        let hex = value.strip_prefix("sha256=").ok_or(VerifyError::Malformed("X-Hub-Signature-256"))?;
        let signature = from_hex(hex).ok_or(VerifyError::Malformed("X-Hub-Signature-256"))?;
        if mac_matches(Algorithm::Sha256, &self.keys, &[inbound.body], &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
