//! Signature verification, one module per scheme.
//!
//! Every verifier works on the raw body bytes exactly as received, before
//! any parsing, compares MACs in constant time (`hmac`'s `verify_slice`,
//! after decoding the presented signature), accepts only the signature
//! versions it knows, holds a list of secrets (rotation: any may sign), and
//! judges timestamps against an injected `now` so tests can replay vectors.
//!
//! A request becomes [`Verified`] only through [`Verifier::verify`]: nothing
//! downstream can take an unverified body.

pub mod discord;
pub mod generic_hmac;
pub mod github;
pub mod gitlab;
pub mod intercom;
pub mod jira;
pub mod linear;
pub mod mailgun;
pub mod meta;
pub mod paddle;
pub mod pagerduty;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod twilio;
pub mod twitch;
pub mod zoom;

use axum::http::HeaderMap;
use bytes_of::Body;
use hmac::{Hmac, KeyInit, Mac};

/// The parts of a request a verifier may look at.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Request headers (names are case-insensitive).
    pub headers: &'a HeaderMap,
    /// The body, exactly as received.
    pub body: &'a [u8],
    /// The public URL the provider called, query included (Twilio signs it).
    pub public_url: Option<&'a str>,
    /// Unix seconds, as the clock reads now.
    pub now: i64,
}

/// Why a request is refused as not authentic. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header or signature could not be parsed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// No signature under a version label this scheme accepts.
    #[error("no signature with a supported version ({0})")]
    NoSupportedSignature(&'static str),
    /// The signed timestamp is outside the window (replay protection).
    #[error("timestamp {timestamp} is outside the {tolerance} s window around now ({now})")]
    Stale {
        /// The timestamp presented (unix seconds).
        timestamp: i64,
        /// The clock.
        now: i64,
        /// The window.
        tolerance: i64,
    },
    /// No configured secret produces any presented signature.
    #[error("signature mismatch")]
    Mismatch,
    /// The source needs a public URL in its config to verify (Twilio).
    #[error("the source has no public_url configured, which this scheme signs")]
    NoPublicUrl,
}

impl VerifyError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::Malformed(_) => "malformed",
            Self::NoSupportedSignature(_) => "unsupported_version",
            Self::Stale { .. } => "stale",
            Self::Mismatch => "mismatch",
            Self::NoPublicUrl => "no_public_url",
        }
    }
}

/// A scheme's verification.
pub trait Verify {
    /// Ok if the request is authentic and fresh.
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError>;
}

/// The closed set of verifiers.
#[derive(Debug)]
pub enum Verifier {
    /// Standard Webhooks / Svix.
    StandardWebhooks(standard_webhooks::StandardWebhooks),
    /// Stripe.
    Stripe(stripe::Stripe),
    /// GitHub.
    Github(github::Github),
    /// Shopify.
    Shopify(shopify::Shopify),
    /// Slack.
    Slack(slack::Slack),
    /// Twilio.
    Twilio(twilio::Twilio),
    /// Any HMAC over the body, as configured.
    GenericHmac(generic_hmac::GenericHmac),
    /// Square.
    Square(square::Square),
    /// Paddle Billing.
    Paddle(paddle::Paddle),
    /// Zoom.
    Zoom(zoom::Zoom),
    /// Meta (WhatsApp, Messenger, Instagram).
    Meta(meta::Meta),
    /// Discord (Ed25519).
    Discord(discord::Discord),
    /// Linear.
    Linear(linear::Linear),
    /// Intercom.
    Intercom(intercom::Intercom),
    /// Mailgun (signature in the body; the payload is not covered).
    Mailgun(mailgun::Mailgun),
    /// SendGrid (ECDSA P-256).
    Sendgrid(sendgrid::Sendgrid),
    /// PagerDuty v3.
    Pagerduty(pagerduty::Pagerduty),
    /// Jira Cloud admin webhooks.
    Jira(jira::Jira),
    /// GitLab (token, or Standard-Webhooks signing token).
    Gitlab(gitlab::Gitlab),
    /// Twitch EventSub.
    Twitch(twitch::Twitch),
}

impl Verifier {
    fn inner(&self) -> &dyn Verify {
        match self {
            Self::StandardWebhooks(v) => v,
            Self::Stripe(v) => v,
            Self::Github(v) => v,
            Self::Shopify(v) => v,
            Self::Slack(v) => v,
            Self::Twilio(v) => v,
            Self::GenericHmac(v) => v,
            Self::Square(v) => v,
            Self::Paddle(v) => v,
            Self::Zoom(v) => v,
            Self::Meta(v) => v,
            Self::Discord(v) => v,
            Self::Linear(v) => v,
            Self::Intercom(v) => v,
            Self::Mailgun(v) => v,
            Self::Sendgrid(v) => v,
            Self::Pagerduty(v) => v,
            Self::Jira(v) => v,
            Self::Gitlab(v) => v,
            Self::Twitch(v) => v,
        }
    }

    /// Verifies `inbound`; on success its body becomes [`Verified`].
    pub fn verify(&self, inbound: &Inbound<'_>, body: Body) -> Result<Verified, VerifyError> {
        self.inner().verify(inbound)?;
        Ok(Verified { body })
    }
}

/// A body whose signature has been checked. Only [`Verifier::verify`] makes one.
#[derive(Debug, Clone)]
pub struct Verified {
    body: Body,
}

impl Verified {
    /// The verified body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Marks a body as verified without a signature check: for the internal
    /// path of records the bridge itself fetched from a provider's API
    /// (reconciliation), never for HTTP input.
    pub fn trusted_internal(body: Body) -> Self {
        Self { body }
    }
}

/// Body bytes, cheap to clone.
pub mod bytes_of {
    /// The request body type.
    pub type Body = axum::body::Bytes;
}

/// The value of a header as text, if present and visible ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(name))?
        .to_str()
        .map(str::trim)
        .map_err(|_| VerifyError::Malformed(name))
}

/// Checks `timestamp` is within `tolerance` seconds of `now`, either way.
pub fn within_window(timestamp: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance {
        return Err(VerifyError::Stale { timestamp, now, tolerance });
    }
    Ok(())
}

/// Checks a `<prefix><hex MAC of the body>` header (GitHub, Meta, Jira,
/// Intercom): the prefix names the algorithm, and only that prefix is accepted.
pub fn prefixed_hex_mac(
    inbound: &Inbound<'_>,
    name: &'static str,
    prefix: &str,
    algorithm: Algorithm,
    keys: &[Vec<u8>],
) -> Result<(), VerifyError> {
    let value = header(inbound.headers, name)?;
    let hex = value.strip_prefix(prefix).ok_or(VerifyError::NoSupportedSignature("the header's algorithm label"))?;
    let signature = from_hex(hex).ok_or(VerifyError::Malformed(name))?;
    if mac_matches(algorithm, keys, &[inbound.body], &[signature]) { Ok(()) } else { Err(VerifyError::Mismatch) }
}

/// The `v0` basestring scheme Slack and Zoom share: `<sig header>: v0=<hex>`
/// over `v0:{<timestamp header>}:{body}`, HMAC-SHA256, timestamp within
/// `tolerance` seconds of now.
pub fn v0_basestring(
    inbound: &Inbound<'_>,
    timestamp_header: &'static str,
    signature_header: &'static str,
    keys: &[Vec<u8>],
    tolerance: i64,
) -> Result<(), VerifyError> {
    let timestamp = header(inbound.headers, timestamp_header)?;
    let value = header(inbound.headers, signature_header)?;
    let hex = value.strip_prefix("v0=").ok_or(VerifyError::NoSupportedSignature("v0"))?;
    let signature = from_hex(hex).ok_or(VerifyError::Malformed(signature_header))?;
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed(timestamp_header))?;
    within_window(ts, inbound.now, tolerance)?;
    let message = [b"v0:".as_slice(), timestamp.as_bytes(), b":", inbound.body];
    if mac_matches(Algorithm::Sha256, keys, &message, &[signature]) { Ok(()) } else { Err(VerifyError::Mismatch) }
}

/// Secrets as HMAC keys: their UTF-8 bytes, used as given.
pub fn utf8_keys(secrets: &[String]) -> Vec<Vec<u8>> {
    secrets.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// The MAC algorithms webhook schemes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA1 (Twilio, legacy GitHub).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

fn matches_with<M: Mac + KeyInit + Clone>(keys: &[Vec<u8>], message: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    let mut found = false;
    for key in keys {
        let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else { continue };
        for part in message {
            mac.update(part);
        }
        for candidate in candidates {
            // Constant-time comparison; every pair is tried so timing does not
            // reveal which secret or signature matched.
            found |= mac.clone().verify_slice(candidate).is_ok();
        }
    }
    found
}

/// Whether any key's MAC over the concatenated `message` parts equals any
/// candidate signature (already decoded to bytes). Constant-time per pair.
pub fn mac_matches(algorithm: Algorithm, keys: &[Vec<u8>], message: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    match algorithm {
        Algorithm::Sha1 => matches_with::<Hmac<sha1::Sha1>>(keys, message, candidates),
        Algorithm::Sha256 => matches_with::<Hmac<sha2::Sha256>>(keys, message, candidates),
        Algorithm::Sha512 => matches_with::<Hmac<sha2::Sha512>>(keys, message, candidates),
    }
}

/// The MAC of `message` under `key` (for signing in tests and tools).
pub fn mac(algorithm: Algorithm, key: &[u8], message: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in message {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, message),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, message),
    }
}

/// Decodes lowercase or uppercase hex; `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.trim()).ok()
}

/// Decodes a base64 secret leniently: padded or not, and with non-zero
/// trailing bits (as the Python and JavaScript Standard Webhooks libraries
/// accept them).
pub fn secret_from_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    lenient.decode(text.trim()).ok()
}

/// Decodes standard base64 (padded or not); `None` if it is not base64.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('=')))
        .ok()
}
