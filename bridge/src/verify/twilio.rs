//! Twilio: `X-Twilio-Signature`, base64 of HMAC-SHA1 keyed with the auth
//! token, over the public URL the provider called followed by every POST
//! parameter as `name` + `value`, sorted by name. For JSON bodies the URL
//! carries `bodySHA256=<hex sha256 of the body>` and only the URL is signed.
//!
//! Twilio's backend is inconsistent about default ports, so, like its SDKs,
//! the URL is tried as configured, with the default port added, and with it
//! removed. No signed timestamp; replays are caught by
//! `I-Twilio-Idempotency-Token` deduplication.

use super::{Algorithm, Inbound, Verify, VerifyError, from_base64, header, mac_matches};
use sha2::Digest;

/// The Twilio verifier.
#[derive(Debug)]
pub struct Twilio {
    keys: Vec<Vec<u8>>,
}

impl Twilio {
    /// A verifier with these auth tokens.
    pub fn new(secrets: &[String]) -> Self {
        Self { keys: secrets.iter().map(|s| s.as_bytes().to_vec()).collect() }
    }
}

/// The URL as given, and with its port removed (any port, as Twilio's SDKs
/// do) or, without one, with the scheme's default port added.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        let Some(rest) = url.strip_prefix(scheme) else { continue };
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, tail) = rest.split_at(host_end);
        match host.rsplit_once(':') {
            Some((bare, _)) => variants.push(format!("{scheme}{bare}{tail}")),
            None => variants.push(format!("{scheme}{host}{port}{tail}")),
        }
    }
    variants
}

/// `name` + `value` of every POST parameter: names sorted, and each name's
/// values sorted and de-duplicated, as Twilio computes it.
fn signed_params(mut params: Vec<(String, String)>) -> String {
    params.sort();
    params.dedup();
    params.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect()
}

impl Verify for Twilio {
    fn verify(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let signature = from_base64(header(inbound.headers, "x-twilio-signature")?)
            .ok_or(VerifyError::Malformed("X-Twilio-Signature"))?;
        let url = inbound.public_url.ok_or(VerifyError::NoPublicUrl)?;
        let is_form = inbound
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let mut params: Vec<(String, String)> = Vec::new();
        if is_form {
            params = serde_urlencoded::from_bytes(inbound.body).map_err(|_| VerifyError::Malformed("form body"))?;
        } else {
            // JSON body: the URL's bodySHA256 must be the body's digest.
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
            let expected = pairs.iter().find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.as_str());
            let actual = hex::encode(sha2::Sha256::digest(inbound.body));
            if expected != Some(actual.as_str()) {
                return Err(VerifyError::Mismatch);
            }
        }
        let tail = signed_params(params);
        let found = url_variants(url).iter().any(|variant| {
            mac_matches(
                Algorithm::Sha1,
                &self.keys,
                &[variant.as_bytes(), tail.as_bytes()],
                std::slice::from_ref(&signature),
            )
        });
        if found { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::url_variants;

    #[test]
    fn default_ports_are_tried_both_ways() {
        assert_eq!(
            url_variants("https://h.example/x?a=1"),
            vec!["https://h.example/x?a=1", "https://h.example:443/x?a=1"]
        );
        assert_eq!(url_variants("https://h.example:443/x"), vec!["https://h.example:443/x", "https://h.example/x"]);
        assert_eq!(url_variants("https://h.example:8443/x"), vec!["https://h.example:8443/x", "https://h.example/x"]);
    }
}
