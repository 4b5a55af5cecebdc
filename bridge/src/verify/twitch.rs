//! Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex>`,
//! HMAC-SHA256 over `{Message-Id}{Message-Timestamp}{body}` (no separators),
//! keyed with the subscription secret. The timestamp header is used byte for
//! byte (Twitch sends 9-digit nanoseconds; re-formatting it breaks the MAC)
//! and must be at most `tolerance_secs` (Twitch: 600) old.

use super::{Algorithm, Inbound, Verify, VerifyError, from_hex, header, mac_matches, utf8_keys};

/// The Twitch verifier.
#[derive(Debug)]
pub struct Twitch {
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl Twitch {
    /// A verifier with these subscription secrets.
    pub fn new(secrets: &[String], tolerance: i64) -> Self {
        Self { keys: utf8_keys(secrets), tolerance }
    }
}

impl Verify for Twitch {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let id = header(inbound.headers, "twitch-eventsub-message-id")?;
        let timestamp = header(inbound.headers, "twitch-eventsub-message-timestamp")?;
        let value = header(inbound.headers, "twitch-eventsub-message-signature")?;
        let hex = value.strip_prefix("sha256=").ok_or(VerifyError::NoSupportedSignature("sha256"))?;
        let signature = from_hex(hex).ok_or(VerifyError::Malformed("Twitch-Eventsub-Message-Signature"))?;
        let sent = chrono::DateTime::parse_from_rfc3339(timestamp)
            .map_err(|_| VerifyError::Malformed("Twitch-Eventsub-Message-Timestamp"))?;
        let ts = sent.timestamp();
        if inbound.now - ts > self.tolerance || ts - inbound.now > self.tolerance {
            return Err(VerifyError::Stale { timestamp: ts, now: inbound.now, tolerance: self.tolerance });
        }
        let message = [id.as_bytes(), timestamp.as_bytes(), inbound.body];
        if mac_matches(Algorithm::Sha256, &self.keys, &message, &[signature]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
