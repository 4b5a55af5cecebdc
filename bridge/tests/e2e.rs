//! End to end, per provider, against a real broker and our registry: sign a
//! request as the provider does, POST it, consume the record with rdkafka,
//! decode it through the registry with `schema_registry_converter`, and
//! compare fields. Plus every refusal.

mod support;

use apache_avro::types::Value as Avro;
use bridge::metrics::Outcome;
use bridge::verify::Algorithm;
use rdkafka::message::Message;
use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn stripe_event_lands_typed_on_its_topic() {
    let stack = Stack::start().await;
    let mut event = sample("stripe/payment_intent.succeeded.json");
    let created = now() - 2;
    event["created"] = json!(created);
    let body = serde_json::to_vec(&event).expect("json");
    let mut headers = stripe_headers(&body, STRIPE_SECRET, now());
    headers.push(("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()));
    let (status, answer, _) = stack.post("stripe", &headers, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["topic"], "webhooks.stripe.payment_intent.succeeded");

    let records = stack.records("webhooks.stripe.payment_intent.succeeded", 1);
    assert_eq!(records.len(), 1);
    let message = &records[0];
    assert_eq!(message.key(), Some(&b"pi_3QSample01"[..]), "keyed by the payment intent id");
    assert_eq!(header(message, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(message, "ce_id").as_deref(), Some("evt_3QSample01"));
    assert_eq!(header(message, "ce_type").as_deref(), Some("stripe.payment_intent.succeeded"));
    assert_eq!(header(message, "ce_source").as_deref(), Some("/webhooks/stripe"));
    assert!(header(message, "ce_time").is_some());
    assert_eq!(header(message, "content-type").as_deref(), Some("application/avro"));
    assert_eq!(
        header(message, "traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(header(message, "schema_version").as_deref(), Some("1"));

    let payload = message.payload().expect("value");
    assert_eq!(payload[0], 0, "Confluent magic byte");
    let decoded = stack.decoder().decode(Some(payload)).await.expect("decodes through the registry").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "evt_3QSample01");
    assert_eq!(string(field(&decoded, "source")), "stripe");
    assert_eq!(string(field(&decoded, "event_type")), "payment_intent.succeeded");
    assert_eq!(field(&decoded, "schema_version"), &Avro::Int(1));
    assert_eq!(string(field(&decoded, "origin")), "webhook");
    assert_eq!(field(&decoded, "payload.data.object.amount"), &Avro::Long(88506));
    assert_eq!(string(field(&decoded, "payload.data.object.currency")), "usd");
    assert_eq!(field(&decoded, "payload.data.object.created"), &Avro::TimestampMillis(1_763_799_940_000));
    assert_eq!(field(&decoded, "occurred_at"), &Avro::Union(1, Box::new(Avro::TimestampMillis(created * 1000))));
    // The raw body keeps fields the schema does not have.
    assert!(string(field(&decoded, "raw")).contains("capture_method"));
    assert_eq!(stack.app().metrics.count("stripe", Outcome::Accepted), 1);
    let metrics = stack.metrics().await;
    assert!(metrics.contains(r#"bridge_deliveries_total{source="stripe",outcome="accepted"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"bridge_ack_latency_seconds_count{source="stripe"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"bridge_produce_latency_seconds_count{topic="webhooks.stripe.payment_intent.succeeded"} 1"#),
        "{metrics}"
    );
}

/// Records go out LZ4-compressed (the default), and librdkafka's broker
/// thread keeps one LZ4 context from message set to message set
/// (vendor/README.md): sets of every size, one at a time and several at
/// once (past LZ4's 64 KB block, with small ones after them), must all read
/// back whole. The bodies stay within the tests' 64 KB body limit.
#[tokio::test(flavor = "multi_thread")]
async fn lz4_message_sets_of_every_size_read_back_whole() {
    let stack = Stack::start().await;
    // Text that compresses as JSON does, not as one repeated byte.
    let text = |len: usize, seed: u64| -> String {
        let alphabet = b"abcdefghij klmnop\"qrstuvwxyz0123456789{}:,";
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                char::from(alphabet[(state >> 40) as usize % alphabet.len()])
            })
            .collect()
    };
    let body = |i: usize, padding: usize| {
        let mut event = sample("stripe/payment_intent.succeeded.json");
        event["id"] = json!(format!("evt_lz4_{i}"));
        event["padding"] = json!(text(padding, i as u64));
        serde_json::to_vec(&event).expect("json")
    };
    let mut sent = std::collections::HashMap::new();
    // One at a time: each its own message set.
    for (i, padding) in [0, 62_000, 10, 40_000, 3_000, 0, 62_000, 50].into_iter().enumerate() {
        let body = body(i, padding);
        let (status, answer, _) =
            stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        sent.insert(format!("evt_lz4_{i}"), body);
    }
    // Several at once, so that sets hold more than one record.
    let stack = &stack;
    let at_once = (8..40).map(|i| {
        let body = body(i, (i * 7_919) % 60_000);
        sent.insert(format!("evt_lz4_{i}"), body.clone());
        let headers = stripe_headers(&body, STRIPE_SECRET, now());
        async move { stack.post("stripe", &headers, body).await.0 }
    });
    let statuses = futures::future::join_all(at_once.collect::<Vec<_>>()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let records = stack.records("webhooks.stripe.payment_intent.succeeded", sent.len());
    assert_eq!(records.len(), sent.len());
    for message in &records {
        let decoded = stack.decoder().decode(message.payload()).await.expect("decodes through the registry").value;
        let id = string(field(&decoded, "delivery_id"));
        let body = sent.get(id).unwrap_or_else(|| panic!("{id} was not sent"));
        assert_eq!(string(field(&decoded, "raw")).as_bytes(), body.as_slice(), "{id}: the raw body, byte for byte");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stripe_api_version_selects_the_schema_version() {
    let stack = Stack::start().await;
    for (file, id) in [
        ("stripe/customer.created.2023-10-16.json", "evt_1QSample04"),
        ("stripe/customer.created.json", "evt_1QSample03"),
    ] {
        let body = serde_json::to_vec(&sample(file)).expect("json");
        let (status, answer, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["delivery_id"], id);
    }
    let records = stack.records("webhooks.stripe.customer.created", 2);
    assert_eq!(records.len(), 2);
    let decoder = stack.decoder();
    let mut by_version = std::collections::BTreeMap::new();
    for record in &records {
        let decoded = decoder.decode(record.payload()).await.expect("decodes").value;
        let Avro::Int(version) = field(&decoded, "schema_version") else { panic!("int") };
        by_version.insert(*version, decoded);
    }
    let old = &by_version[&1];
    let new = &by_version[&2];
    assert_eq!(string(field(old, "payload.data.object.email")), "old.api@example.com");
    assert_eq!(string(field(new, "payload.data.object.phone")), "+15555550100");
    assert_eq!(string(field(new, "payload.data.object.address.city")), "San Francisco");
    // Two versions registered under the topic's subject, in order.
    let subject = "webhooks.stripe.customer.created-value";
    assert_eq!(stack.registry.registry.versions(subject, false).expect("subject"), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_push_and_pull_request_are_typed_and_ping_is_answered() {
    let stack = Stack::start().await;
    let push = serde_json::to_vec(&sample("github/push.json")).expect("json");
    let (status, answer, _) = stack.post("github", &github_headers(&push, "push", "d-push-1"), push).await;
    assert_eq!(status, 200, "{answer}");
    let pr = serde_json::to_vec(&sample("github/pull_request.json")).expect("json");
    let (status, answer, _) = stack.post("github", &github_headers(&pr, "pull_request", "d-pr-1"), pr).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event_type"], "pull_request.opened");

    let push_record = &stack.records("webhooks.github.push", 1)[0];
    assert_eq!(push_record.key(), Some(&b"octocat/Hello-World"[..]));
    let decoded = stack.decoder().decode(push_record.payload()).await.expect("decodes").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "d-push-1");
    assert_eq!(string(field(&decoded, "payload.ref")), "refs/heads/main");
    let Avro::Array(commits) = field(&decoded, "payload.commits") else { panic!("commits") };
    assert_eq!(string(field(&commits[0], "message")), "Fix all the bugs");
    // RFC 3339 with an offset → timestamp-millis.
    assert_eq!(field(&commits[0], "timestamp"), &Avro::TimestampMillis(1_763_802_930_000));

    let pr_record = &stack.records("webhooks.github.pull_request.opened", 1)[0];
    let decoded = stack.decoder().decode(pr_record.payload()).await.expect("decodes").value;
    assert_eq!(field(&decoded, "payload.number"), &Avro::Long(1347));
    assert_eq!(string(field(&decoded, "payload.pull_request.title")), "Amazing new feature");
    assert_eq!(field(&decoded, "payload.pull_request.merged_at"), &Avro::Union(0, Box::new(Avro::Null)));

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let (status, answer, _) = stack.post("github", &github_headers(&ping, "ping", "d-ping"), ping).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("pong")));
    assert_eq!(stack.count("webhooks.github.ping"), 0, "a handshake is not an event");
}

#[tokio::test(flavor = "multi_thread")]
async fn shopify_order_lands_typed() {
    let stack = Stack::start().await;
    let body = serde_json::to_vec(&sample("shopify/orders_create.json")).expect("json");
    let headers = vec![
        ("x-shopify-hmac-sha256", b64_mac(Algorithm::Sha256, SHOPIFY_SECRET.as_bytes(), &[&body])),
        ("x-shopify-topic", "orders/create".to_owned()),
        ("x-shopify-event-id", "shop-evt-1".to_owned()),
        ("x-shopify-shop-domain", "example.myshopify.com".to_owned()),
        ("x-shopify-triggered-at", "2025-11-22T17:00:01.123Z".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, answer, _) = stack.post("shopify", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    let record = &stack.records("webhooks.shopify.orders_create", 1)[0];
    assert_eq!(record.key(), Some(&b"820982911946154508"[..]));
    let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
    assert_eq!(field(&decoded, "payload.id"), &Avro::Long(820_982_911_946_154_508));
    assert_eq!(string(field(&decoded, "payload.total_price")), "403.00");
    let Avro::Array(items) = field(&decoded, "payload.line_items") else { panic!("items") };
    assert_eq!(items.len(), 2);
    assert_eq!(field(&decoded, "occurred_at"), &Avro::Union(1, Box::new(Avro::TimestampMillis(1_763_830_801_123))));
    let Avro::Map(headers) = field(&decoded, "headers") else { panic!("map") };
    assert_eq!(headers.get("x-shopify-shop-domain"), Some(&Avro::String("example.myshopify.com".into())));
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_event_goes_through_the_generic_schema_and_the_challenge_is_answered() {
    let stack = Stack::start().await;
    let slack = |body: &[u8]| {
        let ts = now().to_string();
        let signature = hex_mac(Algorithm::Sha256, SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
        vec![
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", format!("v0={signature}")),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let challenge = br#"{"token":"x","challenge":"chal-123","type":"url_verification"}"#.to_vec();
    let (status, answer, _) = stack.post("slack", &slack(&challenge), challenge).await;
    assert_eq!((status, answer), (200, json!("chal-123")));

    let event = json!({"type":"event_callback","event_id":"Ev123","event_time":now(),"event":{"type":"message","channel":"C1","text":"hi"}});
    let body = serde_json::to_vec(&event).expect("json");
    let (status, answer, _) = stack.post("slack", &slack(&body), body).await;
    assert_eq!(status, 200, "{answer}");
    let record = &stack.records("webhooks.slack.message", 1)[0];
    let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "Ev123");
    let json: serde_json::Value =
        serde_json::from_str(string(field(&decoded, "payload.json"))).expect("generic payload keeps the JSON");
    assert_eq!(json["event"]["text"], "hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_form_webhook_is_verified_over_the_public_url() {
    let stack = Stack::start().await;
    let body = "MessageSid=SM123&AccountSid=AC1&From=%2B15005550006&To=%2B15005550001&Body=Order+%2342+shipped&SmsStatus=received";
    let params: Vec<(String, String)> = serde_urlencoded::from_str(body).expect("form");
    let mut sorted = params.clone();
    sorted.sort();
    let url = format!("{TWILIO_URL}?tenant=acme");
    let signed: String = std::iter::once(url.clone()).chain(sorted.iter().map(|(k, v)| format!("{k}{v}"))).collect();
    let signature = b64_mac(Algorithm::Sha1, TWILIO_SECRET.as_bytes(), &[signed.as_bytes()]);
    let headers = [
        ("x-twilio-signature", signature),
        ("content-type", "application/x-www-form-urlencoded".to_owned()),
        ("i-twilio-idempotency-token", "idem-1".to_owned()),
    ];
    let post = |tenant: &str| {
        reqwest::Client::new()
            .post(format!("{}/webhooks/twilio?tenant={tenant}", stack.url))
            .headers(
                headers
                    .iter()
                    .map(|(k, v)| (reqwest::header::HeaderName::from_static(k), v.parse().expect("value")))
                    .collect(),
            )
            .body(body)
            .send()
    };
    let response = post("acme").await.expect("answer");
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap_or_default());
    let record = &stack.records("webhooks.twilio.message.received", 1)[0];
    let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "idem-1");

    // Signed for another tenant's URL: refused.
    let response = post("evil").await.expect("answer");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_webhooks_and_generic_hmac_sources() {
    let stack = Stack::start().await;
    let body = br#"{"type":"invoice.paid","timestamp":"2025-11-22T08:26:00Z","data":{"id":"inv_1"}}"#.to_vec();
    let ts = now().to_string();
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(SVIX_SECRET.trim_start_matches("whsec_")).expect("b64")
    };
    let signature = b64_mac(Algorithm::Sha256, &key, &[b"msg_1", b".", ts.as_bytes(), b".", &body]);
    let headers = vec![
        ("svix-id", "msg_1".to_owned()),
        ("svix-timestamp", ts.clone()),
        ("svix-signature", format!("v1a,AAAA v1,{signature}")),
    ];
    let (status, answer, _) = stack.post("svix", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    let record = &stack.records("webhooks.svix.invoice.paid", 1)[0];
    let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "msg_1");

    let body = format!(r#"{{"event":"widget.made","occurred_at":{},"widget":{{"id":"w1"}}}}"#, now()).into_bytes();
    let signature = hex_mac(Algorithm::Sha256, ACME_SECRET.as_bytes(), &[ts.as_bytes(), b".", &body]);
    let headers = vec![
        ("x-acme-signature", format!("sha256={signature}")),
        ("x-acme-timestamp", ts),
        ("x-acme-delivery", "acme-1".to_owned()),
    ];
    let (status, answer, _) = stack.post("acme", &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    let record = &stack.records("webhooks.acme.widget.made", 1)[0];
    let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
    assert_eq!(string(field(&decoded, "delivery_id")), "acme-1");
    assert_eq!(string(field(&decoded, "event_type")), "widget.made");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_stale_unknown_and_oversized_requests_are_refused() {
    let stack = Stack::start().await;
    let body = serde_json::to_vec(&sample("stripe/payment_intent.succeeded.json")).expect("json");
    let topic = "webhooks.stripe.payment_intent.succeeded";

    let (status, answer, _) = stack.post("stripe", &stripe_headers(&body, "whsec_wrong", now()), body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["reason"], "signature mismatch");
    let (status, answer, _) =
        stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now() - 3600), body.clone()).await;
    assert_eq!(status, 401);
    assert!(answer["reason"].as_str().expect("reason").contains("outside"), "{answer}");
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (status, _, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), tampered).await;
    assert_eq!(status, 401);
    let (status, answer, _) = stack.post("stripe", &[], body.clone()).await;
    assert_eq!(status, 401);
    assert!(answer["reason"].as_str().expect("reason").contains("missing header"), "{answer}");
    assert_eq!(stack.app().metrics.count("stripe", Outcome::Forged), 4);
    assert!(stack.app().metrics.render().contains(r#"bridge_forged_total{source="stripe",reason="stale"} 1"#));
    assert_eq!(stack.count(topic), 0, "nothing forged was produced");

    let (status, _, _) = stack.post("nosuchsource", &stripe_headers(&body, STRIPE_SECRET, now()), body.clone()).await;
    assert_eq!(status, 404);
    let huge = vec![b'x'; 70_000];
    let (status, _, _) = stack.post("stripe", &stripe_headers(&huge, STRIPE_SECRET, now()), huge).await;
    assert_eq!(status, 413);
    assert_eq!(stack.count(topic), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verified_but_unusable_deliveries_go_to_the_dead_letter_topic() {
    let stack = Stack::start().await;
    // Validly signed, not JSON.
    let garbage = b"\xff\xfenot json at all".to_vec();
    let (status, answer, _) =
        stack.post("stripe", &stripe_headers(&garbage, STRIPE_SECRET, now()), garbage.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "dead-lettered");
    // Validly signed JSON that does not fit its typed schema (amount is not a number).
    let mut event = sample("stripe/payment_intent.succeeded.json");
    event["data"]["object"]["amount"] = json!("a lot");
    let misfit = serde_json::to_vec(&event).expect("json");
    let (status, answer, _) =
        stack.post("stripe", &stripe_headers(&misfit, STRIPE_SECRET, now()), misfit.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["reason"].as_str().expect("reason").contains("/data/object/amount"), "{answer}");

    let records = stack.records("webhooks.dead-letter", 2);
    assert_eq!(records.len(), 2);
    let stage = |name: &str| {
        records
            .iter()
            .find(|r| header(r, "dlq_stage").as_deref() == Some(name))
            .unwrap_or_else(|| panic!("a {name} dead letter"))
    };
    assert_eq!(stage("parse").payload(), Some(&garbage[..]), "the raw body is kept byte for byte");
    assert!(header(stage("transcode"), "dlq_reason").expect("reason").contains("/data/object/amount"));
    assert_eq!(stage("transcode").payload(), Some(&misfit[..]));
    assert_eq!(header(stage("transcode"), "source").as_deref(), Some("stripe"));
    assert_eq!(stack.count("webhooks.stripe.payment_intent.succeeded"), 0);
    assert_eq!(stack.app().metrics.count("stripe", Outcome::DeadLettered), 2);
}

/// The registry's count of registrations asked for.
async fn registrations(stack: &Stack) -> u64 {
    let text =
        reqwest::get(format!("{}/metrics", stack.registry.url)).await.expect("scrape").text().await.expect("text");
    let line = text.lines().find(|line| line.starts_with("registry_registrations_total ")).expect("the counter");
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a count")
}

/// A bridge that has not yet seen an event type gets its first deliveries
/// all at once (a restart under load): one of them registers the schema
/// and creates the topic, the others wait for it; each lands.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_deliveries_of_an_event_type_arriving_at_once_share_one_registration() {
    let stack = Stack::start().await;
    let topic = "webhooks.stripe.payment_intent.succeeded";
    let before = registrations(&stack).await;
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..48).map(|n| format!("evt_first_{n:02}")).collect();
    let posts = ids.iter().map(|id| signed_stripe_post(&client, &stack.url, stripe_body(id)).send());
    for answer in futures::future::join_all(posts).await {
        let answer = answer.expect("bridge answers");
        let status = answer.status().as_u16();
        let text = answer.text().await.expect("body");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(r#""status":"accepted""#), "{text}");
    }
    assert_eq!(registrations(&stack).await - before, 1, "one registration for 48 deliveries of a new schema");

    let records = stack.records(topic, ids.len());
    assert_eq!(records.len(), ids.len());
    let schema_ids: std::collections::BTreeSet<&[u8]> =
        records.iter().map(|record| &record.payload().expect("value")[1..5]).collect();
    assert_eq!(schema_ids.len(), 1, "one schema id");
    let mut delivered = Vec::new();
    for record in &records {
        let decoded = stack.decoder().decode(record.payload()).await.expect("decodes through the registry").value;
        delivered.push(string(field(&decoded, "delivery_id")).to_owned());
    }
    delivered.sort();
    assert_eq!(delivered, ids, "each delivery once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_is_not_produced_twice_even_after_a_restart() {
    let mut stack = Stack::start().await;
    let body = serde_json::to_vec(&sample("stripe/charge.refunded.json")).expect("json");
    let topic = "webhooks.stripe.charge.refunded";
    let (status, first, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body.clone()).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("accepted")));
    let (status, again, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body.clone()).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["offset"], first["offset"]);

    stack.stop_bridge().await;
    stack.start_bridge().await;
    let (status, after_restart, _) =
        stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body.clone()).await;
    assert_eq!((status, after_restart["status"].as_str()), (200, Some("duplicate")), "{after_restart}");
    assert_eq!(stack.count(topic), 1, "one record, however often it was delivered");
    let decoded = stack.decoder().decode(stack.records(topic, 1)[0].payload()).await.expect("decodes").value;
    assert_eq!(field(&decoded, "payload.data.object.amount_refunded"), &Avro::Long(10000));
    assert_eq!(string(field(&decoded, "payload.data.previous_attributes")), r#"{"amount_refunded":0}"#);
}

/// The delivery log writes the deliveries of 50 ms together (README): a
/// stream of webhooks becomes a log record per 50 ms, not one each or one
/// every few milliseconds. Every record is a batch the log's readers fetch
/// past, and tansu 0.6 lists all of them on each fetch, under the lock its
/// produces need (BENCHMARKS.md, 2026-12-06). Each write covers at least
/// 50 ms of arrivals, so the bound holds however slow the machine is.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_logged_a_record_per_50_ms_not_one_each() {
    let mut stack = Stack::start().await;
    let log = stack.config.kafka.deliveries_topic.clone();
    // The first of an event type waits for its topic and schema: not timed.
    let body = stripe_body("evt_logged_first");
    assert_eq!(stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await.0, 200);
    // Its log record, before the timed deliveries start.
    let waited = std::time::Instant::now();
    let before = loop {
        match stack.count(&log) {
            0 => assert!(waited.elapsed() < Duration::from_secs(10), "the first delivery was never logged"),
            logged => break logged,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<String> = (0..40).map(|i| format!("evt_logged_{i}")).collect();
    let started = std::time::Instant::now();
    for id in &ids {
        let body = stripe_body(id);
        let (status, answer, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let took = started.elapsed();
    // The batch still pending is written on a graceful stop.
    stack.stop_bridge().await;

    let after = stack.count(&log);
    let mut logged = std::collections::HashSet::new();
    for record in stack.records(&log, after as usize) {
        let batch: Vec<serde_json::Value> =
            serde_json::from_slice(record.payload().expect("payload")).expect("an array");
        logged.extend(batch.iter().filter_map(|d| d["delivery_id"].as_str().map(str::to_owned)));
    }
    for id in &ids {
        assert!(logged.contains(id), "{id} is not in the delivery log");
    }
    let written = after - before;
    let most = took.as_millis() / 50 + 2;
    assert!(
        written as u128 <= most,
        "{} deliveries one after another over {took:?} were logged in {written} records; at most {most} (one per 50 ms, and one at the stop)",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bridge_instances_share_their_dedup_view_through_the_log() {
    let stack = Stack::start().await;
    // A second instance with the same config: same broker, same `_bridge_deliveries`.
    let second = Instance::start(stack.config.clone()).await;
    let second_url = second.url.clone();
    let client = reqwest::Client::new();
    let post = async |url: &str, id: &str| {
        let body = stripe_body(id);
        let answer = signed_stripe_post(&client, url, body).send().await.expect("answer");
        let status = answer.status().as_u16();
        (status, answer.json::<serde_json::Value>().await.expect("json"))
    };
    // Known to the other instance once its tail has read the writer's log record.
    let known_at = async |url: &str, id: &str| {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let lookup = client.get(format!("{url}/admin/deliveries/stripe/{id}")).bearer_auth(ADMIN_TOKEN);
            if lookup.send().await.expect("answer").status() == 200 {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{id} never reached the view of the instance at {url}");
    };
    for (writer, reader, id) in [(&stack.url, &second_url, "evt_shared_1"), (&second_url, &stack.url, "evt_shared_2")] {
        let (status, first) = post(writer, id).await;
        assert_eq!((status, first["status"].as_str()), (200, Some("accepted")), "{first}");
        let took = known_at(reader, id).await;
        eprintln!("{id}: in the other instance's view after {took:?}");
        let (status, again) = post(reader, id).await;
        assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")), "{again}");
        assert_eq!(again["offset"], first["offset"], "the duplicate names the first record");
    }
    assert_eq!(stack.count("webhooks.stripe.payment_intent.succeeded"), 2, "one record per delivery");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_dedup_max_deliveries_the_oldest_are_forgotten_and_counted() {
    // One delivery per shard of the view (16): of 200, at most 16 are held.
    let stack = Stack::start_with("[dedup]\nmax_deliveries = 16").await;
    let topic = "webhooks.stripe.payment_intent.succeeded";
    let post = async |id: &str| {
        let body = stripe_body(id);
        stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await
    };
    for n in 0..200 {
        let (status, answer, _) = post(&format!("evt_cap_{n}")).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    }
    // The newest is its shard's newest: remembered.
    let (status, answer, _) = post("evt_cap_199").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    // The oldest was pushed out by a later delivery of its shard (all but
    // certainly: 199 others, each in its shard with p = 1/16), so its
    // redelivery is produced again.
    let (status, answer, _) = post("evt_cap_0").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(stack.count(topic), 201);

    let metrics = stack.metrics().await;
    let value = |name: &str| -> u64 {
        match metric_values(&metrics, &format!("{name} "))[..] {
            [value] => value as u64,
            _ => panic!("{name}: not one value in\n{metrics}"),
        }
    };
    assert_eq!(value("bridge_dedup_max_deliveries"), 16);
    let held = value("bridge_dedup_window_deliveries");
    assert!((1..=16).contains(&held), "{held} held");
    assert_eq!(value("bridge_dedup_evicted_total"), 201 - held, "every delivery produced is held or was evicted");
    assert!(value("bridge_dedup_reach_seconds") < 60, "the 3-day window is cut to the last seconds");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_is_answered_503_with_retry_after_and_readyz_false() {
    let mut stack = Stack::start().await;
    let (status, ready, _) = get(&stack, "/readyz").await;
    assert_eq!((status, ready), (200, json!({"broker": true, "registry": true})));
    // Warm the topic and the schema id, then take the broker away.
    let body = serde_json::to_vec(&sample("stripe/payment_intent.succeeded.json")).expect("json");
    assert_eq!(stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await.0, 200);
    stack.broker.kill();

    let body = stripe_body("evt_during_outage");
    let (status, answer, headers) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    assert_eq!(stack.app().metrics.count("stripe", Outcome::BrokerUnavailable), 1);
    let (status, ready, _) = get(&stack, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(ready["broker"], false);
    let (status, _, _) = get(&stack, "/healthz").await;
    assert_eq!(status, 200, "the bridge itself stays up");
}

async fn get(stack: &Stack, path: &str) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let response = reqwest::get(format!("{}{path}", stack.url)).await.expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("text");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), headers)
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_handshakes_are_answered_as_each_provider_expects_and_not_produced() {
    use ed25519_dalek::{Signer, SigningKey};
    let stack = Stack::start().await;
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/providers.json")).expect("fixture");
    let handshakes = fixture["handshakes"].as_array().expect("handshakes");
    assert_eq!(handshakes.len(), 6);
    let signing = SigningKey::from_bytes(&hex::decode(DISCORD_PRIVATE_KEY).expect("hex").try_into().expect("32 bytes"));
    for handshake in handshakes {
        let scheme = handshake["scheme"].as_str().expect("scheme");
        let body = handshake["request"]["body"].as_str().unwrap_or_default().as_bytes().to_vec();
        let expected = &handshake["expected_response"];
        let ts = now().to_string();
        let (status, text) = match scheme {
            "meta" => {
                let query = handshake["request"]["query"].as_str().expect("query");
                let response = reqwest::get(format!("{}/webhooks/meta?{query}", stack.url)).await.expect("answer");
                (response.status().as_u16(), response.text().await.expect("text"))
            }
            _ => {
                let headers: Vec<(&str, String)> = match scheme {
                    "slack" => {
                        let signature =
                            hex_mac(Algorithm::Sha256, SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", &body]);
                        vec![
                            ("x-slack-request-timestamp", ts.clone()),
                            ("x-slack-signature", format!("v0={signature}")),
                        ]
                    }
                    "zoom" => {
                        let signature =
                            hex_mac(Algorithm::Sha256, ZOOM_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", &body]);
                        vec![("x-zm-request-timestamp", ts.clone()), ("x-zm-signature", format!("v0={signature}"))]
                    }
                    "discord" => {
                        let signature = signing.sign(&[ts.as_bytes(), &body].concat());
                        vec![
                            ("x-signature-timestamp", ts.clone()),
                            ("x-signature-ed25519", hex::encode(signature.to_bytes())),
                        ]
                    }
                    "twitch" => {
                        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                        let id = "hs-twitch-1";
                        let signature = hex_mac(
                            Algorithm::Sha256,
                            TWITCH_SECRET.as_bytes(),
                            &[id.as_bytes(), at.as_bytes(), &body],
                        );
                        vec![
                            ("twitch-eventsub-message-id", id.to_owned()),
                            ("twitch-eventsub-message-timestamp", at),
                            ("twitch-eventsub-message-type", "webhook_callback_verification".to_owned()),
                            ("twitch-eventsub-message-signature", format!("sha256={signature}")),
                        ]
                    }
                    other => panic!("no handshake test for {other}"),
                };
                let mut request =
                    reqwest::Client::new().post(format!("{}/webhooks/{scheme}", stack.url)).body(body.clone());
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                let response = request.send().await.expect("answer");
                (response.status().as_u16(), response.text().await.expect("text"))
            }
        };
        assert_eq!(status as i64, expected["status"].as_i64().expect("status"), "{scheme} {}", handshake["kind"]);
        let want = expected["body"].as_str().unwrap_or_default();
        if want.starts_with('{') {
            let got: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{scheme}: {text}"));
            assert_eq!(
                got,
                serde_json::from_str::<serde_json::Value>(want).expect("json"),
                "{scheme} {}",
                handshake["kind"]
            );
        } else {
            assert_eq!(text, want, "{scheme} {}", handshake["kind"]);
        }
    }
    // A wrong Meta verify token is refused.
    let response =
        reqwest::get(format!("{}/webhooks/meta?hub.mode=subscribe&hub.challenge=1&hub.verify_token=guess", stack.url))
            .await
            .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    for (source, outcome) in [("slack", 1), ("zoom", 1), ("meta", 1), ("discord", 2), ("twitch", 1)] {
        assert_eq!(stack.app().metrics.count(source, Outcome::Handshake), outcome, "{source}");
        assert_eq!(stack.app().metrics.count(source, Outcome::Accepted), 0, "{source}: a handshake is not produced");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_providers_land_on_per_event_type_topics() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/providers.json")).expect("fixture");
    let vector =
        |id: &str| fixture["vectors"].as_array().expect("vectors").iter().find(|v| v["id"] == id).cloned().expect(id);
    // Schemes without a signed timestamp can be replayed as the vectors stand.
    let cases = [
        ("PG-1", "pagerduty", "webhooks.pagerduty.incident.priority_updated"),
        ("JR-1", "jira", "webhooks.jira.jira_issue_created"),
        ("IC-1", "intercom", "webhooks.intercom.user.created"),
        ("GL-1", "gitlab", "webhooks.gitlab.push"),
        ("SG-1", "sendgrid", "webhooks.sendgrid.dropped"),
        ("MG-1", "mailgun", "webhooks.mailgun.delivered"),
    ];
    let dir = std::env::temp_dir().join(format!("more-providers-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut extra = String::new();
    for (id, provider, _) in cases {
        let path = dir.join(provider);
        std::fs::write(&path, vector(id)["secret"].as_str().expect("secret")).expect("write");
        extra.push_str(&format!(
            "[sources.{provider}]\nprovider = \"{provider}\"\nsecrets_file = \"{}\"\n",
            path.display()
        ));
    }
    let stack = Stack::start_with(&extra).await;
    for (id, provider, topic) in cases {
        let v = vector(id);
        let headers: Vec<(&str, String)> = v["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, val)| (k.as_str(), val.as_str().expect("value").to_owned()))
            .collect();
        let (status, answer, _) =
            stack.post(provider, &headers, v["body"].as_str().expect("body").as_bytes().to_vec()).await;
        assert_eq!(status, 200, "{id}: {answer}");
        assert_eq!(answer["topic"], topic, "{id}");
        let record = &stack.records(topic, 1)[0];
        let decoded = stack.decoder().decode(record.payload()).await.expect("decodes").value;
        assert_eq!(string(field(&decoded, "source")), provider);
        let authenticated = header(record, "payload_authenticated");
        if provider == "mailgun" {
            assert_eq!(authenticated.as_deref(), Some("false"), "Mailgun's payload is not covered by its signature");
            let Avro::Map(envelope_headers) = field(&decoded, "headers") else { panic!("headers map") };
            assert_eq!(
                envelope_headers.get("payload_authenticated"),
                Some(&Avro::String("false".into())),
                "the envelope says so too"
            );
        } else {
            assert_eq!(authenticated, None);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_looks_up_a_delivery_behind_a_token() {
    let stack = Stack::start().await;
    let body = serde_json::to_vec(&sample("stripe/customer.created.json")).expect("json");
    let (status, answer, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
    assert_eq!(status, 200);
    let url = format!("{}/admin/deliveries/stripe/evt_1QSample03", stack.url);
    let client = reqwest::Client::new();
    let anonymous = client.get(&url).send().await.expect("answer");
    assert_eq!(anonymous.status().as_u16(), 401);
    let wrong = client.get(&url).bearer_auth("guess").send().await.expect("answer");
    assert_eq!(wrong.status().as_u16(), 401);
    let found: serde_json::Value =
        client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.expect("answer").json().await.expect("json");
    assert_eq!(found["outcome"], "produced");
    assert_eq!(found["verification"], "verified");
    assert_eq!(found["topic"], "webhooks.stripe.customer.created");
    assert_eq!(found["offset"], answer["offset"]);
    assert_eq!(found["schema_version"], 2);
    assert!(found["received_at"].is_string());
    let missing = client
        .get(format!("{}/admin/deliveries/stripe/evt_nope", stack.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(missing.status().as_u16(), 404);
}

/// Under load an idempotent producer has one request in flight per
/// partition, and the next batch waits for its acknowledgement. The
/// bridge's librdkafka (vendor/README.md) sleeps through that wait; the
/// published one polled with no timeout until the acknowledgement came,
/// every request, once the batch's linger had passed. Against a broker 20 ms
/// away that was about 10 000 of the thread's wakeups per request, where
/// sleeping takes three or four. This counts them on `/metrics`, as a user
/// would.
#[tokio::test(flavor = "multi_thread")]
async fn the_producer_sleeps_while_a_partition_waits_for_its_acknowledgement() {
    use futures::StreamExt;
    let broker = testbed::Broker::start_delayed(Duration::from_millis(10)).await.expect("broker starts");
    let stack = Stack::start_on_broker(broker, "[kafka.producer]\n\"statistics.interval.ms\" = \"100\"\n").await;
    let client = reqwest::Client::new();
    // 64 connections at a time, as a provider's burst: batches queue up
    // behind each partition's request in flight.
    let statuses: Vec<u16> = futures::stream::iter(0..1500)
        .map(|n| {
            let request = signed_stripe_post(&client, &stack.url, stripe_body(&format!("evt_wait_{n}")));
            async move { request.send().await.expect("bridge answers").status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");

    // The statistics come every 100 ms: wait for one that has seen the
    // whole burst (its count stops growing).
    let (mut requests, mut wakeups, mut metrics, mut before) = (0.0, 0.0, String::new(), -1.0);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        metrics = stack.metrics().await;
        requests = metric_values(&metrics, "bridge_kafka_requests_total{broker=").iter().sum();
        wakeups = metric_values(&metrics, "bridge_kafka_broker_wakeups_total{broker=").iter().sum();
        if requests > 0.0 && requests == before {
            break;
        }
        before = requests;
    }
    // 1 500 webhooks and their delivery-log entries, batched: tens of
    // requests at least, fewer than one a webhook.
    assert!((20.0..3000.0).contains(&requests), "{requests} requests\n{metrics}");
    assert!(
        wakeups < 50.0 * requests,
        "{wakeups} wakeups of the producer's threads for {requests} requests\n{metrics}"
    );
}

/// librdkafka's statistics of the producer reach `/metrics`: the records
/// queued, and per broker the requests, its thread's wakeups (the sign of
/// a thread polling in a loop) and the round trip itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_producers_statistics_are_on_the_metrics_page() {
    let stack = Stack::start_with("[kafka.producer]\n\"statistics.interval.ms\" = \"100\"\n").await;
    let body = serde_json::to_vec(&sample("stripe/payment_intent.succeeded.json")).expect("json");
    let (status, answer, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
    assert_eq!(status, 200, "{answer}");

    // The first report after the produce request holds its round trip, and
    // later ones, with no request in their window, keep it.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = stack.metrics().await;
        if metrics.contains("bridge_kafka_broker_rtt_seconds{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let values = |prefix: &str| metric_values(&metrics, prefix);
    assert_eq!(values("bridge_kafka_queue_messages ").len(), 1, "{metrics}");
    let requests = values("bridge_kafka_requests_total{broker=");
    assert!(!requests.is_empty() && requests.iter().all(|n| *n >= 1.0), "{metrics}");
    let wakeups = values("bridge_kafka_broker_wakeups_total{broker=");
    assert_eq!(wakeups.len(), requests.len(), "{metrics}");
    assert!(wakeups.iter().all(|n| *n >= 1.0), "{metrics}");
    let rtt = values("bridge_kafka_broker_rtt_seconds{broker=");
    assert!(!rtt.is_empty() && rtt.iter().all(|s| *s > 0.0 && *s < 5.0), "{metrics}");
    assert!(metrics.contains(r#",quantile="0.99"}"#), "{metrics}");
}
