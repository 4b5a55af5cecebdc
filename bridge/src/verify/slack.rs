//! Slack: `X-Slack-Signature: v0=<hex>` over the basestring
//! `v0:{X-Slack-Request-Timestamp}:{body}`, HMAC-SHA256 keyed with the
//! signing secret as UTF-8; timestamp within ±tolerance of now.

use super::{Inbound, Verify, VerifyError, utf8_keys, v0_basestring};

/// The Slack verifier.
#[derive(Debug)]
pub struct Slack {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Slack {
    /// A verifier with these signing secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: utf8_keys(secrets), tolerance }
    }
}

impl Verify for Slack {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        v0_basestring(inbound, "x-slack-request-timestamp", "x-slack-signature", &self.keys, self.tolerance)
    }
}
