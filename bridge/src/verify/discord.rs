//! Discord: `X-Signature-Ed25519` (hex) is an Ed25519 signature over
//! `{X-Signature-Timestamp}{body}`, checked with the application's public
//! key (the "secret" configured is that hex public key). Discord defines no
//! replay window.

use super::{Inbound, Verify, VerifyError, from_hex, header};
use ed25519_dalek::{Signature, VerifyingKey};

/// The Discord verifier.
#[derive(Debug)]
pub struct Discord {
    keys: Vec<VerifyingKey>,
}

/// A public key that is not 32 bytes of hex on the curve.
#[derive(Debug, thiserror::Error)]
#[error("a Discord public key is 64 hex characters (the application's PUBLIC KEY in the developer portal)")]
pub struct BadPublicKey;

impl Discord {
    /// A verifier with these public keys.
    pub fn new(public_keys: &[String]) -> Result<Self, BadPublicKey> {
        let keys = public_keys
            .iter()
            .map(|k| {
                let bytes: [u8; 32] = from_hex(k).and_then(|b| b.try_into().ok()).ok_or(BadPublicKey)?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| BadPublicKey)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }
}

impl Verify for Discord {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let timestamp = header(inbound.headers, "x-signature-timestamp")?;
        let bytes: [u8; 64] = from_hex(header(inbound.headers, "x-signature-ed25519")?)
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::Malformed("X-Signature-Ed25519"))?;
        let signature = Signature::from_bytes(&bytes);
        let mut message = Vec::with_capacity(timestamp.len() + inbound.body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(inbound.body);
        if self.keys.iter().any(|key| key.verify_strict(&message, &signature).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
