//! Every verifier's header parsing and checking, on arbitrary header values
//! and bodies: must never panic, and never accept (the secrets are not in the
//! input's reach, so any acceptance would be a forgery).
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bridge::verify::{Inbound, Verify};
use libfuzzer_sys::fuzz_target;

const HEADERS: [&str; 24] = [
    "stripe-signature", "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp",
    "svix-signature", "x-hub-signature-256", "x-hub-signature", "x-shopify-hmac-sha256", "x-slack-request-timestamp",
    "x-slack-signature", "x-twilio-signature", "x-square-hmacsha256-signature", "paddle-signature", "x-zm-signature",
    "x-zm-request-timestamp", "x-signature-ed25519", "x-signature-timestamp", "linear-signature",
    "x-twilio-email-event-webhook-signature", "x-twilio-email-event-webhook-timestamp", "x-pagerduty-signature",
    "twitch-eventsub-message-signature",
];

fuzz_target!(|data: &[u8]| {
    // The input: header values separated by newlines, then the body after a NUL.
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &data[..0]),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in HEADERS.iter().zip(head.split(|b| *b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert("twitch-eventsub-message-id", HeaderValue::from_static("id"));
    headers.insert("twitch-eventsub-message-timestamp", HeaderValue::from_static("2025-11-22T10:00:00.123456789Z"));
    let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()];
    let inbound = Inbound { headers: &headers, body, public_url: Some("https://hooks.example.com/x"), now: 1_763_800_000 };
    let _ = bridge::verify::stripe::parse_header(std::str::from_utf8(head).unwrap_or_default());
    let verifiers: Vec<Box<dyn Verify>> = vec![
        Box::new(bridge::verify::stripe::Stripe::new(&secrets, 300)),
        Box::new(bridge::verify::standard_webhooks::StandardWebhooks::new(&secrets, 300).expect("secret")),
        Box::new(bridge::verify::github::Github::new(&secrets, true)),
        Box::new(bridge::verify::shopify::Shopify::new(&secrets)),
        Box::new(bridge::verify::slack::Slack::new(&secrets, 300)),
        Box::new(bridge::verify::twilio::Twilio::new(&secrets)),
        Box::new(bridge::verify::square::Square::new(&secrets)),
        Box::new(bridge::verify::paddle::Paddle::new(&secrets, 5)),
        Box::new(bridge::verify::zoom::Zoom::new(&secrets, 300)),
        Box::new(bridge::verify::meta::Meta::new(&secrets, true)),
        Box::new(bridge::verify::linear::Linear::new(&secrets, 60)),
        Box::new(bridge::verify::mailgun::Mailgun::new(&secrets)),
        Box::new(bridge::verify::pagerduty::Pagerduty::new(&secrets)),
        Box::new(bridge::verify::twitch::Twitch::new(&secrets, 600)),
        Box::new(bridge::verify::gitlab::Gitlab::new(&secrets, 300).expect("secret")),
    ];
    for verifier in &verifiers {
        assert!(verifier.verify(&inbound).is_err(), "a fuzzed request was accepted");
    }
});
