//! What a verified delivery is: its event type, delivery id, when it
//! happened, which schema version describes it, and whether it is a
//! handshake to answer rather than an event to produce.
//!
//! | provider | event type | delivery id | occurred at | version selector |
//! |---|---|---|---|---|
//! | Stripe | `type` | `id` (the event id) | `created` | `api_version` |
//! | GitHub | `X-GitHub-Event` + `.` + `action` | `X-GitHub-Delivery` | — | — |
//! | Shopify | `X-Shopify-Topic` | `X-Shopify-Event-Id`, else `X-Shopify-Webhook-Id` | `X-Shopify-Triggered-At` | — |
//! | Slack | `event.type` (else `type`) | `event_id` | `event_time` | — |
//! | Twilio | `message.<status>` / `call.<status>` | `I-Twilio-Idempotency-Token`, else the Sid | — | — |
//! | Standard Webhooks | `type` | `webhook-id` / `svix-id` | `webhook-timestamp` | — |
//! | generic | configured pointer/header | configured pointer/header | configured pointer | — |
//!
//! Configured pointers and headers override the provider's rule. Without a
//! delivery id, the SHA-256 of the body stands in, so a repeated body is
//! still recognised.

use crate::config::{Provider, SourceConfig};
use axum::http::HeaderMap;
use schemas::doc::Doc;
use sha2::Digest;
use std::borrow::Cow;

/// What the bridge learned about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// e.g. `payment_intent.succeeded`.
    pub event_type: String,
    /// The provider's id for this delivery (dedup key).
    pub delivery_id: String,
    /// When the provider says it happened (ms since the epoch).
    pub occurred_at_ms: Option<i64>,
    /// The value that picks the schema version (Stripe `api_version`).
    pub selector: Option<String>,
    /// The record key.
    pub key: Option<String>,
}

/// A delivery that must be answered, not produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Slack `url_verification`: answer the challenge.
    SlackChallenge(String),
    /// GitHub `ping` when a hook is created: answer 200.
    GithubPing,
    /// Zoom `endpoint.url_validation`: answer the plain token and its HMAC.
    ZoomValidation(String),
    /// Discord interactions PING (`type: 1`): answer `{"type":1}`.
    DiscordPing,
    /// Discord webhook-events PING (`type: 0`): answer 204.
    DiscordWebhookPing,
    /// Twitch `webhook_callback_verification`: answer the challenge as text.
    TwitchChallenge(String),
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn text(json: &Doc<'_>, pointer: &str) -> Option<String> {
    match json.pointer(pointer)? {
        Doc::String(s) if !s.is_empty() => Some(s.to_string()),
        Doc::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn millis(json: &Doc<'_>, pointer: &str) -> Option<i64> {
    json.pointer(pointer).and_then(schemas::transcode::epoch_millis)
}

/// A handshake the provider expects an answer to, if this is one.
pub fn handshake(provider: Provider, headers: &HeaderMap, json: &Doc<'_>) -> Option<Handshake> {
    match provider {
        Provider::Slack if json.get("type").and_then(Doc::as_str) == Some("url_verification") => {
            Some(Handshake::SlackChallenge(text(json, "/challenge").unwrap_or_default()))
        }
        Provider::Github if header(headers, "x-github-event").as_deref() == Some("ping") => Some(Handshake::GithubPing),
        Provider::Zoom if json.get("event").and_then(Doc::as_str) == Some("endpoint.url_validation") => {
            Some(Handshake::ZoomValidation(text(json, "/payload/plainToken").unwrap_or_default()))
        }
        Provider::Discord if json.get("event").is_none() => match json.get("type").and_then(Doc::as_i64) {
            Some(1) => Some(Handshake::DiscordPing),
            Some(0) => Some(Handshake::DiscordWebhookPing),
            _ => None,
        },
        Provider::Twitch
            if header(headers, "twitch-eventsub-message-type").as_deref() == Some("webhook_callback_verification") =>
        {
            Some(Handshake::TwitchChallenge(text(json, "/challenge").unwrap_or_default()))
        }
        _ => None,
    }
}

/// Describes a verified delivery, or says why its event type is unknown.
pub fn describe(config: &SourceConfig, headers: &HeaderMap, json: &Doc<'_>, body: &[u8]) -> Result<Described, String> {
    let (event_type, delivery_id, occurred_at_ms, selector) = match config.provider {
        Provider::Stripe => {
            (text(json, "/type"), text(json, "/id"), millis(json, "/created"), text(json, "/api_version"))
        }
        Provider::Github => {
            let event = header(headers, "x-github-event");
            let event = match (event, text(json, "/action")) {
                (Some(event), Some(action)) => Some(format!("{event}.{action}")),
                (event, _) => event,
            };
            (event, header(headers, "x-github-delivery"), None, None)
        }
        Provider::Shopify => {
            let id = header(headers, "x-shopify-event-id").or_else(|| header(headers, "x-shopify-webhook-id"));
            let at = header(headers, "x-shopify-triggered-at").and_then(|t| schemas::transcode::epoch_millis_text(&t));
            (header(headers, "x-shopify-topic").or_else(|| header(headers, "shopify-topic")), id, at, None)
        }
        Provider::Slack => (
            text(json, "/event/type").or_else(|| text(json, "/type")),
            text(json, "/event_id"),
            millis(json, "/event_time"),
            None,
        ),
        Provider::Twilio => {
            let kind = if json.get("MessageSid").is_some() {
                text(json, "/SmsStatus").or_else(|| text(json, "/MessageStatus")).map(|s| format!("message.{s}"))
            } else if json.get("CallSid").is_some() {
                text(json, "/CallStatus").map(|s| format!("call.{s}"))
            } else {
                None
            };
            let id = header(headers, "i-twilio-idempotency-token")
                .or_else(|| text(json, "/MessageSid"))
                .or_else(|| text(json, "/CallSid"));
            (kind, id, None, None)
        }
        Provider::StandardWebhooks => {
            let id = header(headers, "webhook-id").or_else(|| header(headers, "svix-id"));
            let at = header(headers, "webhook-timestamp")
                .or_else(|| header(headers, "svix-timestamp"))
                .and_then(|t| t.parse::<i64>().ok())
                .map(|s| s * 1000);
            (text(json, "/type"), id, at, None)
        }
        Provider::Square => (text(json, "/type"), text(json, "/event_id"), millis(json, "/created_at"), None),
        Provider::Paddle => (
            text(json, "/event_type"),
            text(json, "/notification_id").or_else(|| text(json, "/event_id")),
            millis(json, "/occurred_at"),
            None,
        ),
        Provider::Zoom => (text(json, "/event"), header(headers, "x-zm-trackingid"), millis(json, "/event_ts"), None),
        Provider::Meta => {
            let object = text(json, "/object");
            let field = text(json, "/entry/0/changes/0/field")
                .or_else(|| json.pointer("/entry/0/messaging").map(|_| "messaging".to_owned()));
            let event = match (object, field) {
                (Some(object), Some(field)) => Some(format!("{object}.{field}")),
                (object, _) => object,
            };
            (event, None, millis(json, "/entry/0/time"), None)
        }
        Provider::Discord => (
            text(json, "/event/type")
                .map(|t| t.to_ascii_lowercase())
                .or_else(|| text(json, "/type").map(|t| format!("interaction.{t}"))),
            text(json, "/id"),
            millis(json, "/event/timestamp"),
            None,
        ),
        Provider::Linear => {
            let kind = text(json, "/type").or_else(|| header(headers, "linear-event"));
            let event = match (kind, text(json, "/action")) {
                (Some(kind), Some(action)) => Some(format!("{kind}.{action}")),
                (kind, _) => kind,
            };
            (event, header(headers, "linear-delivery"), millis(json, "/webhookTimestamp"), None)
        }
        Provider::Intercom => (text(json, "/topic"), text(json, "/id"), millis(json, "/created_at"), None),
        Provider::Mailgun => (
            text(json, "/event-data/event"),
            text(json, "/signature/token"),
            millis(json, "/event-data/timestamp"),
            None,
        ),
        Provider::Sendgrid => {
            (text(json, "/0/event"), text(json, "/0/sg_event_id"), millis(json, "/0/timestamp"), None)
        }
        Provider::Pagerduty => (
            text(json, "/event/event_type"),
            header(headers, "x-webhook-id").or_else(|| text(json, "/event/id")),
            millis(json, "/event/occurred_at"),
            None,
        ),
        Provider::Jira => (
            text(json, "/webhookEvent"),
            header(headers, "x-atlassian-webhook-identifier"),
            millis(json, "/timestamp"),
            None,
        ),
        Provider::Gitlab => (
            text(json, "/object_kind").or_else(|| header(headers, "x-gitlab-event")),
            header(headers, "idempotency-key")
                .or_else(|| header(headers, "x-gitlab-event-uuid"))
                .or_else(|| header(headers, "webhook-id")),
            None,
            None,
        ),
        Provider::Twitch => (
            header(headers, "twitch-eventsub-subscription-type"),
            header(headers, "twitch-eventsub-message-id"),
            header(headers, "twitch-eventsub-message-timestamp")
                .and_then(|t| schemas::transcode::epoch_millis_text(&t)),
            None,
        ),
        Provider::Generic => (None, None, None, None),
    };
    let event_type = config
        .event_type_header
        .as_deref()
        .and_then(|h| header(headers, h))
        .or_else(|| config.event_type_pointer.as_deref().and_then(|p| text(json, p)))
        .or(event_type)
        .ok_or_else(|| "the event type could not be found in the delivery (for a generic source set event_type_pointer or event_type_header)".to_owned())?;
    let delivery_id = config
        .delivery_id_header
        .as_deref()
        .and_then(|h| header(headers, h))
        .or_else(|| config.delivery_id_pointer.as_deref().and_then(|p| text(json, p)))
        .or(delivery_id)
        .unwrap_or_else(|| body_digest_id(body));
    let occurred_at_ms = config.occurred_at_pointer.as_deref().and_then(|p| millis(json, p)).or(occurred_at_ms);
    let selector = config
        .version_header
        .as_deref()
        .and_then(|h| header(headers, h))
        .or_else(|| config.version_pointer.as_deref().and_then(|p| text(json, p)))
        .or(selector);
    let key = config.key_pointer.as_deref().and_then(|p| text(json, p));
    Ok(Described { event_type, delivery_id, occurred_at_ms, selector, key })
}

/// The delivery id of a body that carries none: its SHA-256, so a repeated
/// body is still recognised.
pub fn body_digest_id(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// The body as JSON: JSON bodies parsed, form bodies (Twilio) turned into an
/// object of their parameters.
pub fn body_json<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Doc<'a>, String> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| format!("form body does not parse: {e}"))?;
        return Ok(Doc::Object(pairs.into_iter().map(|(k, v)| (Cow::Owned(k), Doc::String(Cow::Owned(v)))).collect()));
    }
    Doc::parse(body).map_err(|e| format!("body is not JSON: {e}"))
}
