//! The shipped catalog, its samples, and the `schemas check` / `schemas
//! register` commands.

use apache_avro::types::Value as AvroValue;
use schemas::catalog::{Catalog, DEFAULT_TOPIC_TEMPLATE, topic_name};
use schemas::envelope::{Envelope, envelope_value};
use schemas::transcode::Transcoder;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("sample exists")).expect("sample is JSON")
}

#[test]
fn shipped_catalog_is_valid_and_compatible() {
    let catalog = Catalog::load(&catalog_dir()).expect("catalog loads");
    assert!(catalog.check().is_empty(), "{:?}", catalog.check());
    for (source, event) in [
        ("stripe", "payment_intent.succeeded"),
        ("stripe", "charge.refunded"),
        ("stripe", "customer.created"),
        ("github", "push"),
        ("github", "pull_request.opened"),
        ("shopify", "orders/create"),
    ] {
        assert!(catalog.find(source, event).is_some(), "{source} {event} has a typed schema");
    }
    assert!(catalog.find("stripe", "invoice.paid").is_none());
    assert_eq!(catalog.find("github", "pull_request.closed").map(|e| e.event.as_str()), Some("pull_request"));
}

#[test]
fn every_sample_transcodes_and_encodes_in_its_envelope() {
    let catalog = Catalog::load(&catalog_dir()).expect("catalog loads");
    for (source, event, file) in [
        ("stripe", "payment_intent.succeeded", "stripe/payment_intent.succeeded.json"),
        ("stripe", "charge.refunded", "stripe/charge.refunded.json"),
        ("stripe", "customer.created", "stripe/customer.created.json"),
        ("stripe", "customer.created", "stripe/customer.created.2023-10-16.json"),
        ("github", "push", "github/push.json"),
        ("github", "pull_request.opened", "github/pull_request.json"),
        ("shopify", "orders/create", "shopify/orders_create.json"),
    ] {
        let body = sample(file);
        let schemas = catalog.find(source, event).expect("typed");
        let version = schemas.select(body.get("api_version").and_then(Value::as_str));
        let payload =
            Transcoder::new(version.payload.clone()).transcode(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
        let raw = body.to_string();
        let envelope = Envelope {
            delivery_id: "d1",
            source,
            event_type: event,
            schema_version: version.version as i32,
            received_at_ms: 1,
            occurred_at_ms: None,
            origin: "webhook",
            headers: vec![("user-agent", "test")],
            raw: Some(&raw),
        };
        let bytes = schemas::wire::encode_avro(&version.envelope, envelope_value(&envelope, payload))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let decoded = schemas::wire::decode_avro(&version.envelope, &bytes).expect("decodes");
        assert_eq!(field(&decoded, "delivery_id"), &AvroValue::String("d1".into()));
        // What the bridge writes: encoded straight from the JSON, framed.
        let mut payload_avro = Vec::new();
        Transcoder::new(version.payload.clone())
            .encode(&schemas::doc::Doc::from(&body), &mut payload_avro)
            .expect("encodes");
        for envelope in [envelope.clone(), Envelope { occurred_at_ms: Some(7), headers: vec![], raw: None, ..envelope }]
        {
            let framed = schemas::envelope::frame_delivery(42, &envelope, &payload_avro);
            let (id, avro) = schemas::wire::unframe(&framed).expect("framed");
            assert_eq!(id, 42);
            let direct = schemas::wire::decode_avro(&version.envelope, avro).unwrap_or_else(|e| panic!("{file}: {e}"));
            let payload = Transcoder::new(version.payload.clone()).transcode(&body).expect("transcodes");
            let expected = schemas::wire::decode_avro(
                &version.envelope,
                &schemas::wire::encode_avro(&version.envelope, envelope_value(&envelope, payload)).expect("encodes"),
            )
            .expect("decodes");
            assert_eq!(direct, expected, "{file}: the framed envelope reads back as apache-avro's own encoding of it");
        }
        // The provider's id survives the trip, whatever its JSON type.
        let id = match &body["id"] {
            Value::String(s) => AvroValue::String(s.clone()),
            Value::Number(n) => AvroValue::Long(n.as_i64().expect("integer id")),
            _ => continue,
        };
        assert_eq!(field(field(&decoded, "payload"), "id"), &id, "{file}");
    }
}

fn field<'v>(record: &'v AvroValue, name: &str) -> &'v AvroValue {
    match record {
        AvroValue::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v).expect(name),
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn version_is_selected_by_api_version() {
    let catalog = Catalog::load(&catalog_dir()).expect("catalog loads");
    let customer = catalog.find("stripe", "customer.created").expect("typed");
    assert_eq!(customer.select(Some("2023-10-16")).version, 1);
    assert_eq!(customer.select(Some("2024-06-20")).version, 2);
    assert_eq!(customer.select(Some("2025-03-31.basil")).version, 2);
    assert_eq!(customer.select(None).version, 2);
    // v2 carries the new field; v1 does not.
    assert!(customer.select(Some("2024-06-20")).envelope_text.contains("\"phone\""));
    assert!(!customer.select(Some("2023-10-16")).envelope_text.contains("\"phone\""));
}

fn write(path: &Path, body: &Value) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body.to_string()).expect("write");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("schemas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn check_fails_naming_the_file_and_the_field() {
    let dir = temp_dir("check");
    let v1 = json!({"type":"record","name":"Thing","fields":[{"name":"id","type":"string"}]});
    let v2 = json!({"type":"record","name":"Thing","fields":[{"name":"id","type":"string"},{"name":"colour","type":"string"}]});
    write(&dir.join("acme/thing.made/v1.avsc"), &v1);
    write(&dir.join("acme/thing.made/v2.avsc"), &v2);
    let output =
        Command::new(env!("CARGO_BIN_EXE_schemas")).args(["check", "--catalog"]).arg(&dir).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a breaking version must fail the check");
    assert!(stderr.contains("acme/thing.made/v2.avsc"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");

    // With the subject's level set to FORWARD, the same change passes.
    std::fs::write(dir.join("acme/thing.made/compatibility"), "FORWARD\n").expect("write");
    let output =
        Command::new(env!("CARGO_BIN_EXE_schemas")).args(["check", "--catalog"]).arg(&dir).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // An invalid schema names its file.
    write(
        &dir.join("acme/broken/v1.avsc"),
        &json!({"type":"record","name":"B","fields":[{"name":"x","type":"strnig"}]}),
    );
    let output =
        Command::new(env!("CARGO_BIN_EXE_schemas")).args(["check", "--catalog"]).arg(&dir).output().expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("acme/broken/v1.avsc"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn register_pushes_the_catalog_idempotently() {
    let broker = testbed::Broker::start().expect("broker");
    let registry = schemas::registry::RunningRegistry::start(
        &broker.bootstrap(),
        "_schemas",
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("registry");
    let url = registry.url.clone();
    let run = move || {
        Command::new(env!("CARGO_BIN_EXE_schemas"))
            .args(["register", "--registry", &url, "--catalog"])
            .arg(catalog_dir())
            .output()
            .expect("runs")
    };
    let first = tokio::task::spawn_blocking(run.clone()).await.expect("join");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = tokio::task::spawn_blocking(run).await.expect("join");
    assert!(second.status.success());
    assert_eq!(first.stdout, second.stdout, "a second run registers nothing new and reports the same ids");

    let subject = format!("{}-value", topic_name(DEFAULT_TOPIC_TEMPLATE, "stripe", "customer.created"));
    assert_eq!(registry.registry.versions(&subject, false).expect("subject exists"), vec![1, 2]);
    assert_eq!(registry.registry.subjects(false).len(), 6);
    registry.stop();
}
