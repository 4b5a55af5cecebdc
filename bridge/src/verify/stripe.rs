//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>][,v0=…]`.
//!
//! Signed bytes: `{t}.{body}`, HMAC-SHA256 keyed with the whole `whsec_…`
//! string as UTF-8 (not decoded, unlike Standard Webhooks). Only `v1`
//! signatures count. `t` within ±tolerance of now (Stripe's SDKs check only
//! the past; a timestamp far in the future is refused here too).

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, within_window};

/// The Stripe verifier.
#[derive(Debug)]
pub struct Stripe {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Stripe {
    /// A verifier with these endpoint secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(), tolerance }
    }
}

/// The `t` and the `v1` signatures of a `Stripe-Signature` header.
pub fn parse_header(value: &str) -> Result<(i64, Vec<Vec<u8>>), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let (label, content) = item.trim().split_once('=').ok_or(VerifyError::Malformed("Stripe-Signature"))?;
        match label {
            "t" => timestamp = Some(content.parse::<i64>().map_err(|_| VerifyError::Malformed("Stripe-Signature"))?),
            // A v1 that is not hex cannot match; another v1 may (Stripe's SDKs skip it too).
            "v1" => signatures.extend(from_hex(content)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed("Stripe-Signature"))?;
    if signatures.is_empty() {
        return Err(VerifyError::NoSupportedSignature("v1"));
    }
    Ok((timestamp, signatures))
}

impl Verify for Stripe {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let (timestamp, signatures) = parse_header(header(inbound.headers, "stripe-signature")?)?;
        within_window(timestamp, inbound.now, self.tolerance)?;
        let t = timestamp.to_string();
        let message = [t.as_bytes(), b".", inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &signatures) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
