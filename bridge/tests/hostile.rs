//! The hostile corpus (`fixtures/hostile.json`, written by
//! `fixtures/make_hostile.py`): over 200 forged, stale, malformed, oversized,
//! unparseable and misrouted requests, each replayed against the bridge with
//! the status it must get. None may reach an event topic. Plus two copies of
//! one delivery racing each other.

mod support;

use serde_json::Value;
use support::*;

fn body_of(spec: &Value) -> Vec<u8> {
    match spec {
        Value::String(text) => text.as_bytes().to_vec(),
        Value::Object(o) if o.contains_key("repeat") => {
            o["repeat"].as_str().expect("repeat").repeat(o["times"].as_u64().expect("times") as usize).into_bytes()
        }
        Value::Object(o) if o.contains_key("nested") => {
            let depth = o["nested"].as_u64().expect("depth") as usize;
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        Value::Object(o) if o.contains_key("hex") => hex::decode(o["hex"].as_str().expect("hex")).expect("hex"),
        other => panic!("unknown body spec {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_request_gets_its_expected_status_and_none_is_produced() {
    let stack = Stack::start().await;
    let corpus: Value = serde_json::from_str(include_str!("fixtures/hostile.json")).expect("corpus");
    let cases = corpus["cases"].as_array().expect("cases");
    assert!(cases.len() >= 200, "the corpus holds {} requests", cases.len());
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let body = body_of(&case["body"]);
        let sent = case.get("sent").map(body_of).unwrap_or_else(|| body.clone());
        let mut request =
            client.post(format!("{}/webhooks/{}", stack.url, case["source"].as_str().expect("source"))).body(sent);
        let stripe_signature = match case["sign"].as_str().expect("sign") {
            "none" => None,
            "valid" => Some(stripe_headers(&body, STRIPE_SECRET, now())[0].1.clone()),
            "stale" => Some(stripe_headers(&body, STRIPE_SECRET, now() - 3600)[0].1.clone()),
            "future" => Some(stripe_headers(&body, STRIPE_SECRET, now() + 3600)[0].1.clone()),
            "wrong_secret" => Some(stripe_headers(&body, "whsec_wrong", now())[0].1.clone()),
            literal => Some(literal.to_owned()),
        };
        if let Some(signature) = stripe_signature {
            request = request.header("stripe-signature", signature);
        }
        for (header, value) in case["headers"].as_object().expect("headers") {
            request = request.header(header.as_str(), value.as_str().expect("value"));
        }
        let status = match request.send().await {
            Ok(response) => response.status().as_u16(),
            Err(error) => {
                wrong.push(format!("{name}: no answer ({error})"));
                continue;
            }
        };
        if i64::from(status) != case["expect"].as_i64().expect("expect") {
            wrong.push(format!("{name}: expected {}, got {status}", case["expect"]));
        }
    }
    assert!(wrong.is_empty(), "{} of {} unexpected:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    for topic in [
        "webhooks.stripe.payment_intent.succeeded",
        "webhooks.github.push",
        "webhooks.shopify.orders_create",
        "webhooks.svix.invoice.paid",
    ] {
        assert_eq!(stack.count(topic), 0, "a hostile request reached {topic}");
    }
    assert!(stack.count("webhooks.dead-letter") >= 10, "verified but unusable bodies are dead-lettered");
    let metrics = stack.app().metrics.render();
    assert!(metrics.contains("bridge_forged_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_of_one_delivery_racing_each_other_are_produced_once() {
    let stack = Stack::start().await;
    let body = serde_json::to_vec(&sample("stripe/payment_intent.succeeded.json")).expect("json");
    let mut racers = Vec::new();
    for _ in 0..20 {
        let (url, body) = (stack.url.clone(), body.clone());
        racers.push(tokio::spawn(async move {
            let mut request = reqwest::Client::new().post(format!("{url}/webhooks/stripe")).body(body.clone());
            for (name, value) in stripe_headers(&body, STRIPE_SECRET, now()) {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("answer");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or_default();
            (status, answer["status"].as_str().unwrap_or_default().to_owned())
        }));
    }
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("join"));
    }
    let accepted = outcomes.iter().filter(|(s, o)| *s == 200 && o == "accepted").count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|(s, o)| (*s == 200 && (o == "accepted" || o == "duplicate")) || *s == 409),
        "{outcomes:?}"
    );
    assert_eq!(stack.count("webhooks.stripe.payment_intent.succeeded"), 1);
}
