//! A generic HMAC verifier for providers without a dedicated module: the
//! header, algorithm (sha1/sha256/sha512), encoding (hex/base64), an optional
//! prefix before the signature (`sha256=`), and an optional timestamp header
//! whose value is signed as `{timestamp}{separator}{body}` and must be within
//! the window.

use super::{Algorithm, Inbound, Verify, VerifyError, from_base64, from_hex, mac_matches, within_window};
use serde::Deserialize;

/// How signatures are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
}

/// The scheme's parameters, from the source's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericScheme {
    /// The header carrying the signature.
    pub header: String,
    /// The MAC algorithm.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// The signature's encoding.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// Text in front of the signature in the header (e.g. `sha256=`).
    #[serde(default)]
    pub prefix: String,
    /// A header with a unix timestamp that is signed too.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// What joins the timestamp and the body in the signed bytes.
    #[serde(default = "default_separator")]
    pub timestamp_separator: String,
}

fn default_algorithm() -> Algorithm {
    Algorithm::Sha256
}
fn default_encoding() -> Encoding {
    Encoding::Hex
}
fn default_separator() -> String {
    ".".into()
}

/// The generic verifier.
#[derive(Debug)]
pub struct GenericHmac {
    scheme: GenericScheme,
    keys: Vec<Vec<u8>>,
    tolerance: i64,
}

impl GenericHmac {
    /// A verifier for `scheme` with these secrets.
    pub fn new(scheme: GenericScheme, secrets: &[String], tolerance: i64) -> Self {
        Self { scheme, keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(), tolerance }
    }
}

fn lookup<'a>(inbound: &Inbound<'a>, name: &str) -> Result<&'a str, VerifyError> {
    inbound
        .headers
        .get(name)
        .ok_or(VerifyError::MissingHeader("signature or timestamp header (generic)"))?
        .to_str()
        .map(str::trim)
        .map_err(|_| VerifyError::Malformed("signature or timestamp header (generic)"))
}

impl Verify for GenericHmac {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let value = lookup(inbound, &self.scheme.header)?;
        let encoded =
            value.strip_prefix(self.scheme.prefix.as_str()).ok_or(VerifyError::Malformed("signature prefix"))?;
        let signature = match self.scheme.encoding {
            Encoding::Hex => from_hex(encoded),
            Encoding::Base64 => from_base64(encoded),
        }
        .ok_or(VerifyError::Malformed("signature encoding"))?;
        let found = match &self.scheme.timestamp_header {
            Some(name) => {
                let timestamp = lookup(inbound, name)?;
                let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("timestamp header"))?;
                within_window(ts, inbound.now, self.tolerance)?;
                let message = [timestamp.as_bytes(), self.scheme.timestamp_separator.as_bytes(), inbound.body];
                mac_matches(self.scheme.algorithm, &self.keys, &message, &[signature])
            }
            None => mac_matches(self.scheme.algorithm, &self.keys, &[inbound.body], &[signature]),
        };
        if found { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}
