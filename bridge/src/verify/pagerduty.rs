//! PagerDuty v3: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`, HMAC-SHA256
//! over the body keyed with the subscription secret as given (it looks like
//! base64 but is not decoded). Only `v1` counts. No timestamp; replays are
//! caught by `X-Webhook-Id` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, utf8_keys};

/// The PagerDuty verifier.
#[derive(Debug)]
pub struct Pagerduty {
    keys: Vec<Vec<u8>>,
}

impl Pagerduty {
    /// A verifier with these secrets.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: utf8_keys(secrets) }
    }
}

impl Verify for Pagerduty {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let value = header(inbound.headers, "x-pagerduty-signature")?;
        let signatures: Vec<Vec<u8>> =
            value.split(',').filter_map(|item| item.trim().strip_prefix("v1=")).filter_map(from_hex).collect();
        if signatures.is_empty() {
            return Err(VerifyError::NoSupportedSignature("v1"));
        }
        if mac_matches(Algorithm::Sha256, &self.keys, &[inbound.body], &signatures) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
