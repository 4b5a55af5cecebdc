//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>]`,
//! HMAC-SHA256 over `{ts}:{body}` keyed with the notification secret
//! (`pdl_ntfset_…`) as given. Only `h1` counts. Paddle's SDK allows 5 s of
//! age by default; the window is the source's `tolerance_secs`.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, utf8_keys};

/// The Paddle verifier.
#[derive(Debug)]
pub struct Paddle {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Paddle {
    /// A verifier with these secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: utf8_keys(secrets), tolerance }
    }
}

impl Verify for Paddle {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let value = header(inbound.headers, "paddle-signature")?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in value.split(';') {
            match item.trim().split_once('=') {
                Some(("ts", ts)) => timestamp = Some(ts),
                // A non-hex h1 (Paddle's own tests send `h1=dummy`) is skipped.
                Some(("h1", hex)) => signatures.extend(from_hex(hex)),
                _ => {}
            }
        }
        let ts_text = timestamp.ok_or(VerifyError::Malformed("Paddle-Signature"))?;
        let ts: i64 = ts_text.parse().map_err(|_| VerifyError::Malformed("Paddle-Signature"))?;
        if signatures.is_empty() {
            return Err(VerifyError::NoSupportedSignature("h1"));
        }
        if inbound.now - ts > self.tolerance || ts - inbound.now > self.tolerance {
            return Err(VerifyError::Stale { timestamp: ts, now: inbound.now, tolerance: self.tolerance });
        }
        if mac_matches(Algorithm::Sha256, &self.keys, &[ts_text.as_bytes(), b":", inbound.body], &signatures) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
