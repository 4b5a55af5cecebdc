//! The known-answer vectors (`fixtures/vectors.json`, copied from the shared
//! webhook-vectors, signed with the providers' own SDKs), each judged at its
//! `now` through `Source::verify_request`, the function the HTTP route calls.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use bridge::app::Source;
use bridge::config::Config;
use serde_json::Value;

fn provider(scheme: &str) -> &'static str {
    match scheme {
        "stripe" => "stripe",
        "standard-webhooks" => "standard-webhooks",
        "github" => "github",
        "shopify" => "shopify",
        "slack" => "slack",
        "twilio" => "twilio",
        other => panic!("unknown scheme {other}"),
    }
}

#[test]
fn every_vector_is_judged_as_expected() {
    let text = include_str!("fixtures/vectors.json");
    let vectors: Value = serde_json::from_str(text).expect("fixtures are JSON");
    let vectors = vectors["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 31, "the fixture holds every shared vector");
    let dir = std::env::temp_dir().join(format!("bridge-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut valid, mut invalid) = (0, 0);
    for (i, vector) in vectors.iter().enumerate() {
        let scheme = vector["scheme"].as_str().expect("scheme");
        let secrets_file = dir.join(format!("secrets-{i}"));
        let secrets: Vec<&str> =
            vector["secrets"].as_array().expect("secrets").iter().filter_map(Value::as_str).collect();
        std::fs::write(&secrets_file, secrets.join("\n")).expect("write secrets");
        let url = vector["url"].as_str();
        let (public_url, uri) = match url {
            Some(url) => {
                let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
                let path = format!("/webhooks/twilio{}", query.map(|q| format!("?{q}")).unwrap_or_default());
                (format!("public_url = \"{base}\"\n"), path.parse::<Uri>().expect("uri"))
            }
            None => (String::new(), "/webhooks/x".parse::<Uri>().expect("uri")),
        };
        let config = Config::from_toml(&format!(
            "[kafka]\nbrokers = \"unused:9092\"\n[registry]\nurl = \"http://unused\"\n[sources.s]\nprovider = \"{}\"\nsecrets_file = \"{}\"\ntolerance_secs = {}\n{public_url}",
            provider(scheme),
            secrets_file.display(),
            vector["tolerance_s"].as_i64().expect("tolerance")
        ))
        .expect("config");
        let source = Source::build("s", &config.sources["s"]).expect("source builds");
        let mut headers = HeaderMap::new();
        for (name, value) in vector["headers"].as_object().expect("headers") {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value.as_str().expect("value")).expect("value"),
            );
        }
        let body = Bytes::from(vector["body"].as_str().expect("body").to_owned());
        let now = vector["now"].as_i64().expect("now");
        let outcome = source.verify_request(&uri, &headers, body, now);
        let description = vector["description"].as_str().unwrap_or_default();
        match vector["expect"].as_str() {
            Some("valid") => {
                assert!(outcome.is_ok(), "{scheme} '{description}' must be accepted: {outcome:?}");
                valid += 1;
            }
            _ => {
                assert!(outcome.is_err(), "{scheme} '{description}' must be refused");
                invalid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (12, 19));
    let _ = std::fs::remove_dir_all(&dir);
}
