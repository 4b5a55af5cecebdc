//! Jira Cloud admin webhooks: `X-Hub-Signature: sha256=<hex>`, HMAC-SHA256
//! over the body keyed with the webhook secret. Only the `sha256=` label is
//! accepted. No timestamp; replays are caught by
//! `X-Atlassian-Webhook-Identifier` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, prefixed_hex_mac, utf8_keys};

/// The Jira verifier.
#[derive(Debug)]
pub struct Jira {
    keys: Vec<Vec<u8>>,
}

impl Jira {
    /// A verifier with these secrets.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: utf8_keys(secrets) }
    }
}

impl Verify for Jira {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        prefixed_hex_mac(inbound, "x-hub-signature", "sha256=", Algorithm::Sha256, &self.keys)
    }
}
