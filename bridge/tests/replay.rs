//! Dead letters replayed after a new schema version: the repaired ones land
//! on their topic, the rest stay on the dead-letter topic.

mod support;

use apache_avro::types::Value as Avro;
use bridge::verify::Algorithm;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use support::*;

fn acme_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    let ts = now().to_string();
    let signature = hex_mac(Algorithm::Sha256, ACME_SECRET.as_bytes(), &[ts.as_bytes(), b".", body]);
    vec![
        ("x-acme-signature", format!("sha256={signature}")),
        ("x-acme-timestamp", ts),
        ("x-acme-delivery", delivery.to_owned()),
    ]
}

fn widget_schema(colour_optional: bool) -> serde_json::Value {
    let colour = if colour_optional {
        json!({"name": "colour", "type": ["null", "string"], "default": null})
    } else {
        json!({"name": "colour", "type": "string"})
    };
    json!({"type": "record", "name": "WidgetMade", "namespace": "webhooks.acme", "fields": [
        {"name": "event", "type": "string"},
        {"name": "widget", "type": {"type": "record", "name": "Widget", "fields": [{"name": "id", "type": "string"}, colour]}}
    ]})
}

/// A catalog holding v1 of `generic/widget.made` (colour required), and the
/// event's directory, where a test adds v2.
fn widget_catalog() -> (std::path::PathBuf, std::path::PathBuf) {
    let catalog = std::env::temp_dir().join(format!("replay-catalog-{}", uuid::Uuid::new_v4().simple()));
    let event_dir = catalog.join("generic/widget.made");
    std::fs::create_dir_all(&event_dir).expect("dir");
    std::fs::write(event_dir.join("v1.avsc"), widget_schema(false).to_string()).expect("v1");
    (catalog, event_dir)
}

/// Posts a widget without a colour, which v1 dead-letters at the transcode stage.
async fn post_misfit(stack: &Stack, delivery: &str) {
    let misfit = br#"{"event":"widget.made","widget":{"id":"w1"}}"#.to_vec();
    let (status, answer, _) = stack.post("acme", &acme_headers(&misfit, delivery), misfit).await;
    assert_eq!((status, answer["stage"].as_str()), (202, Some("transcode")), "{answer}");
}

fn run_replay(config: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bridge-replay"))
        .arg("--config")
        .arg(config)
        .output()
        .expect("replay runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_after_a_new_schema_version_repairs_what_now_fits() {
    let (catalog, event_dir) = widget_catalog();
    let stack = Stack::start_with_catalog("", &catalog).await;

    post_misfit(&stack, "d-misfit").await;
    let garbage = b"not json".to_vec();
    let (status, _, _) = stack.post("acme", &acme_headers(&garbage, "d-garbage"), garbage).await;
    assert_eq!(status, 202);
    let fine = br#"{"event":"widget.made","widget":{"id":"w2","colour":"red"}}"#.to_vec();
    let (status, _, _) = stack.post("acme", &acme_headers(&fine, "d-fine"), fine).await;
    assert_eq!(status, 200);

    // The integration engineer adds v2, where colour is optional, and replays.
    std::fs::write(event_dir.join("v2.avsc"), widget_schema(true).to_string()).expect("v2");
    let config = stack.dir().join("bridge.toml");
    let summary = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run_replay(&config)
    })
    .await
    .expect("join");
    assert!(summary.contains("read 2, repaired 1, already repaired 0, still unusable 1"), "{summary}");

    let topic = "webhooks.acme.widget.made";
    let records = stack.records(topic, 2);
    assert_eq!(records.len(), 2);
    let decoder = stack.decoder();
    let mut replayed = None;
    for record in &records {
        let decoded = decoder.decode(rdkafka::message::Message::payload(record)).await.expect("decodes").value;
        if string(field(&decoded, "origin")) == "replay" {
            replayed = Some(decoded);
        }
    }
    let replayed = replayed.expect("the repaired record is on its topic");
    assert_eq!(string(field(&replayed, "delivery_id")), "d-misfit");
    assert_eq!(field(&replayed, "schema_version"), &Avro::Int(2));
    assert_eq!(field(&replayed, "payload.widget.colour"), &Avro::Union(0, Box::new(Avro::Null)));
    assert_eq!(stack.count("webhooks.dead-letter"), 2, "dead letters are left in place");

    // Replaying again changes nothing.
    let summary = tokio::task::spawn_blocking(move || run_replay(&config)).await.expect("join");
    assert!(summary.contains("repaired 0, already repaired 1, still unusable 1"), "{summary}");
    assert_eq!(stack.count(topic), 2);
    let _ = std::fs::remove_dir_all(&catalog);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_reads_the_whole_last_record_batch_of_the_dead_letter_topic() {
    let (catalog, event_dir) = widget_catalog();
    let stack = Stack::start_with_catalog("", &catalog).await;
    post_misfit(&stack, "d-0").await;

    // 29 more dead letters of other deliveries, as the bridge writes them
    // under load: enqueued at once and lingered on, so that the broker
    // stores them as one record batch (tansu 0.6 then gives the topic's high
    // watermark as that batch's first offset + 1).
    let dead_letter = stack.records("webhooks.dead-letter", 1).remove(0);
    let original: serde_json::Value =
        serde_json::from_str(&header(&dead_letter, "original_headers").expect("original headers")).expect("json");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .set("linger.ms", "100")
        .create()
        .expect("producer");
    let mut acks = Vec::new();
    for n in 1..30 {
        let delivery = format!("d-{n}");
        let mut headers = original.clone();
        headers["x-acme-delivery"] = json!(delivery);
        let mut record_headers = OwnedHeaders::new();
        for h in dead_letter.headers().expect("headers").iter() {
            let value = match h.key {
                "original_headers" => headers.to_string().into_bytes(),
                "delivery_id" => delivery.clone().into_bytes(),
                _ => h.value.unwrap_or_default().to_vec(),
            };
            record_headers = record_headers.insert(Header { key: h.key, value: Some(&value) });
        }
        let record = FutureRecord::<str, [u8]>::to("webhooks.dead-letter")
            .key(&delivery)
            .payload(dead_letter.payload().expect("body"))
            .headers(record_headers);
        acks.push(producer.send_result(record).map_err(|(error, _)| error).expect("enqueued"));
    }
    for ack in acks {
        ack.await.expect("delivery report").expect("acknowledged");
    }

    std::fs::write(event_dir.join("v2.avsc"), widget_schema(true).to_string()).expect("v2");
    let config = stack.dir().join("bridge.toml");
    let summary = tokio::task::spawn_blocking(move || run_replay(&config)).await.expect("join");
    assert!(summary.contains("read 30, repaired 30, already repaired 0, still unusable 0"), "{summary}");
    let repaired = stack.records("webhooks.acme.widget.made", 30);
    let decoder = stack.decoder();
    let mut deliveries = std::collections::BTreeSet::new();
    for record in &repaired {
        let decoded = decoder.decode(rdkafka::message::Message::payload(record)).await.expect("decodes").value;
        assert_eq!(string(field(&decoded, "origin")), "replay");
        deliveries.insert(string(field(&decoded, "delivery_id")).to_owned());
    }
    assert_eq!(deliveries, (0..30).map(|n| format!("d-{n}")).collect());
    let _ = std::fs::remove_dir_all(&catalog);
}
