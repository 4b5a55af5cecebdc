//! SendGrid Event Webhook: `X-Twilio-Email-Event-Webhook-Signature` is a
//! base64 DER ECDSA P-256/SHA-256 signature over
//! `{X-Twilio-Email-Event-Webhook-Timestamp}{body}` (the trailing CRLF of the
//! body included), checked with the verification key, a base64 DER
//! SubjectPublicKeyInfo. No window is defined; the source's
//! `tolerance_secs` is not applied.

use super::{Inbound, Verify, VerifyError, from_base64, header};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

/// The SendGrid verifier.
#[derive(Debug)]
pub struct Sendgrid {
    keys: Vec<VerifyingKey>,
}

/// A verification key that is not base64 DER of a P-256 public key.
#[derive(Debug, thiserror::Error)]
#[error(
    "a SendGrid verification key is the base64 public key shown in the Event Webhook settings (DER SubjectPublicKeyInfo, P-256)"
)]
pub struct BadVerificationKey;

impl Sendgrid {
    /// A verifier with these verification keys.
    pub fn new(keys: &[String]) -> Result<Self, BadVerificationKey> {
        let keys = keys
            .iter()
            .map(|k| {
                let der = from_base64(k).ok_or(BadVerificationKey)?;
                VerifyingKey::from_public_key_der(&der).map_err(|_| BadVerificationKey)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }
}

impl Verify for Sendgrid {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let timestamp = header(inbound.headers, "x-twilio-email-event-webhook-timestamp")?;
        let der = from_base64(header(inbound.headers, "x-twilio-email-event-webhook-signature")?)
            .ok_or(VerifyError::Malformed("X-Twilio-Email-Event-Webhook-Signature"))?;
        let signature = DerSignature::from_bytes(&der)
            .map_err(|_| VerifyError::Malformed("X-Twilio-Email-Event-Webhook-Signature"))?;
        let mut message = Vec::with_capacity(timestamp.len() + inbound.body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(inbound.body);
        if self.keys.iter().any(|key| key.verify(&message, &signature).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
