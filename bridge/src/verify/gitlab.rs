//! GitLab, two ways:
//! - the classic `X-Gitlab-Token`: the configured secret token sent in clear
//!   text, compared in constant time byte for byte (no trimming). It proves
//!   only knowledge of the token;
//! - the opt-in signing token: Standard Webhooks (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`), used when those headers are
//!   present, with the `whsec_` secrets of the source.
//!
//! Replays are caught by `Idempotency-Key` deduplication.

use super::standard_webhooks::StandardWebhooks;
use super::{Inbound, Verify, VerifyError};
use subtle::ConstantTimeEq;

/// The GitLab verifier.
#[derive(Debug)]
pub struct Gitlab {
    tokens: Vec<Vec<u8>>,
    signing: Option<StandardWebhooks>,
}

impl Gitlab {
    /// A verifier with these tokens; `whsec_` ones are signing tokens.
    pub fn new(secrets: &[String], tolerance: i64) -> Result<Self, super::standard_webhooks::BadSecret> {
        let signing: Vec<String> = secrets.iter().filter(|s| s.starts_with("whsec_")).cloned().collect();
        let signing = if signing.is_empty() { None } else { Some(StandardWebhooks::new(&signing, tolerance)?) };
        Ok(Self { tokens: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(), signing })
    }
}

impl Verify for Gitlab {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        if inbound.headers.contains_key("webhook-signature") {
            return match &self.signing {
                Some(signing) => signing.verify(inbound),
                None => Err(VerifyError::NoSupportedSignature("a whsec_ signing token is not configured")),
            };
        }
        let presented =
            inbound.headers.get("x-gitlab-token").ok_or(VerifyError::MissingHeader("X-Gitlab-Token"))?.as_bytes();
        let mut found = subtle::Choice::from(0);
        for token in &self.tokens {
            found |= token.as_slice().ct_eq(presented);
        }
        if bool::from(found) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}
