//! The registry against a real broker (tansu), through raw HTTP and through
//! `schema_registry_converter`, the client a Rust data team would use.

use reqwest::StatusCode;
use schemas::registry::RunningRegistry;
use serde_json::{Value, json};
use testbed::Broker;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn customer_v1() -> String {
    json!({"type":"record","name":"Customer","namespace":"test","fields":[
        {"name":"id","type":"string"}]})
    .to_string()
}

fn customer_v2() -> String {
    json!({"type":"record","name":"Customer","namespace":"test","fields":[
        {"name":"id","type":"string"},
        {"name":"email","type":["null","string"],"default":null}]})
    .to_string()
}

fn customer_breaking() -> String {
    json!({"type":"record","name":"Customer","namespace":"test","fields":[
        {"name":"id","type":"string"},
        {"name":"tier","type":"int"}]})
    .to_string()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.to_owned() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header("content-type", CONTENT_TYPE).body(body.to_string());
        }
        let response = request.send().await.expect("registry answers");
        let status = response.status();
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some(CONTENT_TYPE),
            "{path} answers with the registry media type"
        );
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
    async fn raw_post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", CONTENT_TYPE)
            .body(body.to_owned())
            .send()
            .await
            .expect("registry answers");
        let status = response.status();
        (status, response.json().await.expect("error bodies are JSON"))
    }
}

fn error_code(body: &Value) -> i64 {
    body["error_code"].as_i64().unwrap_or_else(|| panic!("no error_code in {body}"))
}

async fn start(broker: &Broker, topic: &str) -> RunningRegistry {
    RunningRegistry::start(&broker.bootstrap(), topic, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("registry starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_and_error_code() {
    let broker = Broker::start().expect("broker");
    let registry = start(&broker, "_schemas").await;
    let c = Client::new(&registry.url);

    assert_eq!(c.get("/subjects").await, (StatusCode::OK, json!([])));
    assert_eq!(c.get("/schemas/types").await, (StatusCode::OK, json!(["AVRO"])));
    assert_eq!(c.get("/config").await, (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"})));

    // Register, then again: same id. Same schema, other subject: same id.
    let (status, body) = c.post("/subjects/customers-value/versions", json!({"schema": customer_v1()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id1 = body["id"].as_i64().expect("id");
    let with_whitespace =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&customer_v1()).expect("json")).expect("pretty");
    assert_eq!(
        c.post("/subjects/customers-value/versions", json!({"schema": with_whitespace})).await.1["id"],
        json!(id1)
    );
    assert_eq!(
        c.post("/subjects/other-value/versions", json!({"schema": customer_v1(), "schemaType": "AVRO"})).await.1["id"],
        json!(id1)
    );
    assert_eq!(c.get("/subjects/customers-value/versions").await.1, json!([1]));

    let (status, body) = c.post("/subjects/customers-value/versions", json!({"schema": customer_v2()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id2 = body["id"].as_i64().expect("id");
    assert_ne!(id1, id2);
    assert_eq!(c.get("/subjects").await.1, json!(["customers-value", "other-value"]));
    assert_eq!(c.get("/subjects/customers-value/versions").await.1, json!([1, 2]));

    let (status, latest) = c.get("/subjects/customers-value/versions/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (latest["subject"].clone(), latest["version"].clone(), latest["id"].clone()),
        (json!("customers-value"), json!(2), json!(id2))
    );
    let v1 = c.get("/subjects/customers-value/versions/1").await.1;
    assert_eq!(v1["id"], json!(id1));
    let raw = c.get("/subjects/customers-value/versions/1/schema").await.1;
    assert_eq!(raw["name"], json!("Customer"));
    assert_eq!(c.get("/subjects/customers-value/versions/-1").await.1["version"], json!(2));

    let by_id = c.get(&format!("/schemas/ids/{id2}")).await.1;
    let text = by_id["schema"].as_str().expect("schema string");
    assert!(text.contains("email"));
    assert_eq!(
        c.get(&format!("/schemas/ids/{id1}/versions")).await.1,
        json!([{"subject": "customers-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );

    // Lookup.
    let found = c.post("/subjects/customers-value", json!({"schema": customer_v2()})).await.1;
    assert_eq!((found["version"].clone(), found["id"].clone()), (json!(2), json!(id2)));
    let (status, body) = c.post("/subjects/other-value", json!({"schema": customer_v2()})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));

    // Compatibility.
    let check = c
        .post(
            "/compatibility/subjects/customers-value/versions/latest?verbose=true",
            json!({"schema": customer_breaking()}),
        )
        .await
        .1;
    assert_eq!(check["is_compatible"], json!(false));
    assert!(check["messages"][0].as_str().expect("message").contains("tier"), "{check}");
    let check = c.post("/compatibility/subjects/customers-value/versions/1", json!({"schema": customer_v2()})).await.1;
    assert_eq!(check, json!({"is_compatible": true}));
    let (status, body) = c.post("/subjects/customers-value/versions", json!({"schema": customer_breaking()})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, 409), "{body}");
    assert!(body["message"].as_str().expect("message").contains("tier"));

    // Config, global and per subject.
    assert_eq!(c.get("/config/customers-value").await.1["error_code"], json!(40408));
    assert_eq!(
        c.get("/config/customers-value?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        c.put("/config/customers-value", json!({"compatibility": "NONE"})).await,
        (StatusCode::OK, json!({"compatibility": "NONE"}))
    );
    assert_eq!(c.get("/config/customers-value").await.1, json!({"compatibilityLevel": "NONE"}));
    let (status, body) = c.post("/subjects/customers-value/versions", json!({"schema": customer_breaking()})).await;
    assert_eq!(status, StatusCode::OK, "NONE lets an incompatible version in: {body}");
    assert_eq!(c.delete("/config/customers-value").await.1, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(
        c.put("/config", json!({"compatibility": "FULL_TRANSITIVE"})).await.1,
        json!({"compatibility": "FULL_TRANSITIVE"})
    );
    assert_eq!(c.get("/config").await.1, json!({"compatibilityLevel": "FULL_TRANSITIVE"}));
    let (status, body) = c.put("/config", json!({"compatibility": "SIDEWAYS"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42203));

    // Errors.
    let (status, body) = c.get("/subjects/nope/versions").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (status, body) = c.get("/subjects/customers-value/versions/9").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40402));
    let (status, body) = c.get("/subjects/customers-value/versions/zero").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42202));
    let (status, body) = c.get("/subjects/customers-value/versions/0").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42202));
    let (status, body) = c.get("/schemas/ids/999").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (status, body) = c.post("/subjects/x/versions", json!({"schema": "{\"type\":\"recrod\"}"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42201));
    let (status, body) =
        c.post("/subjects/x/versions", json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42201));
    assert!(body["message"].as_str().expect("message").contains("PROTOBUF"));
    let (status, body) = c.raw_post("/subjects/x/versions", "{not json").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, 400));
    let (status, body) = c.post("/subjects/x/versions", json!({"nothing": 1})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, 42201));

    // Deletes: version soft then permanent, subject soft then permanent.
    let (status, body) = c.delete("/subjects/customers-value/versions/3?permanent=true").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40407));
    assert_eq!(c.delete("/subjects/customers-value/versions/3").await, (StatusCode::OK, json!(3)));
    let (status, body) = c.delete("/subjects/customers-value/versions/3").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40406));
    assert_eq!(c.get("/subjects/customers-value/versions").await.1, json!([1, 2]));
    assert_eq!(c.get("/subjects/customers-value/versions?deleted=true").await.1, json!([1, 2, 3]));
    assert_eq!(c.delete("/subjects/customers-value/versions/3?permanent=true").await, (StatusCode::OK, json!(3)));
    assert_eq!(c.get("/subjects/customers-value/versions?deleted=true").await.1, json!([1, 2]));

    let (status, body) = c.delete("/subjects/other-value?permanent=true").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40405));
    assert_eq!(c.delete("/subjects/other-value").await, (StatusCode::OK, json!([1])));
    let (status, body) = c.delete("/subjects/other-value").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40404));
    assert_eq!(c.get("/subjects").await.1, json!(["customers-value"]));
    assert_eq!(c.get("/subjects?deleted=true").await.1, json!(["customers-value", "other-value"]));
    // The id survives: it is still served, and other subjects keep it.
    assert_eq!(c.get(&format!("/schemas/ids/{id1}")).await.0, StatusCode::OK);
    assert_eq!(c.delete("/subjects/other-value?permanent=true").await, (StatusCode::OK, json!([1])));
    let (status, body) = c.delete("/subjects/other-value").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));

    let metrics = reqwest::get(format!("{}/metrics", registry.url)).await.expect("scrape").text().await.expect("text");
    assert!(metrics.contains("registry_subjects 1\n"), "{metrics}");
    assert!(metrics.contains("registry_versions 2\n"), "{metrics}");

    let (status, body) = c.get("/no/such/route").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 404));
    registry.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn incompatible_version_is_refused_with_409_and_not_stored() {
    let broker = Broker::start().expect("broker");
    let registry = start(&broker, "_schemas").await;
    let c = Client::new(&registry.url);
    c.post("/subjects/s-value/versions", json!({"schema": customer_v1()})).await;
    let (status, body) = c.post("/subjects/s-value/versions", json!({"schema": customer_breaking()})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, 409));
    assert_eq!(c.get("/subjects/s-value/versions").await.1, json!([1]));
    // Transitive levels look past the latest version.
    c.put("/config/s-value", json!({"compatibility": "BACKWARD_TRANSITIVE"})).await;
    let v2 = json!({"type":"record","name":"Customer","namespace":"test","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"int","default":0}]})
    .to_string();
    let v3 = json!({"type":"record","name":"Customer","namespace":"test","fields":[
        {"name":"id","type":"string"},{"name":"n","type":"int"}]})
    .to_string();
    assert_eq!(c.post("/subjects/s-value/versions", json!({"schema": v2})).await.0, StatusCode::OK);
    let (status, body) = c.post("/subjects/s-value/versions", json!({"schema": v3.clone()})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, 409), "v3 cannot read v1 data");
    assert!(body["message"].as_str().expect("message").contains("version 1"), "{body}");
    c.put("/config/s-value", json!({"compatibility": "BACKWARD"})).await;
    assert_eq!(c.post("/subjects/s-value/versions", json!({"schema": v3})).await.0, StatusCode::OK);
    registry.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_id_and_version() {
    let broker = Broker::start().expect("broker");
    let first = start(&broker, "_schemas").await;
    let c = Client::new(&first.url);
    let mut expected = Vec::new();
    for i in 0..6 {
        let schema = json!({"type":"record","name":format!("R{i}"),"fields":[{"name":"f","type":"long"}]}).to_string();
        let subject = format!("subject-{}", i % 3);
        c.put(&format!("/config/{subject}"), json!({"compatibility": "NONE"})).await;
        let id = c.post(&format!("/subjects/{subject}/versions"), json!({"schema": schema})).await.1["id"].clone();
        expected.push((subject, schema, id));
    }
    c.put("/config", json!({"compatibility": "FULL"})).await;
    c.delete("/subjects/subject-2/versions/1").await;
    let before = (c.get("/subjects?deleted=true").await.1, c.get("/subjects").await.1);
    first.stop();

    let second = start(&broker, "_schemas").await;
    let c = Client::new(&second.url);
    assert_eq!((c.get("/subjects?deleted=true").await.1, c.get("/subjects").await.1), before);
    assert_eq!(c.get("/config").await.1, json!({"compatibilityLevel": "FULL"}));
    assert_eq!(c.get("/config/subject-0").await.1, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(c.get("/subjects/subject-2/versions").await.1, json!([2]));
    for (subject, schema, id) in &expected {
        let found = c.post(&format!("/subjects/{subject}?deleted=true"), json!({"schema": schema})).await.1;
        assert_eq!(&found["id"], id, "{subject} keeps its id after restart");
        assert_eq!(c.get(&format!("/schemas/ids/{id}")).await.0, StatusCode::OK);
    }
    // A new schema gets a fresh id, not a reused one.
    let max = expected.iter().filter_map(|(_, _, id)| id.as_i64()).max().expect("ids");
    let fresh = json!({"type":"record","name":"Fresh","fields":[]}).to_string();
    c.put("/config/fresh", json!({"compatibility": "NONE"})).await;
    let id = c.post("/subjects/fresh/versions", json!({"schema": fresh})).await.1["id"].as_i64().expect("id");
    assert_eq!(id, max + 1);
    second.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_registering_at_once_never_share_an_id() {
    let broker = Broker::start().expect("broker");
    // Each instance waits 30 ms between deciding a claim and appending it,
    // so that the other one's claims land in between.
    let open = || async {
        let registry = schemas::registry::Registry::open(&broker.bootstrap(), "_schemas").await.expect("open");
        let registry = registry.with_claim_delay(std::time::Duration::from_millis(30));
        RunningRegistry::serve(registry, "127.0.0.1:0".parse().expect("addr")).await.expect("serve")
    };
    let a = open().await;
    let b = open().await;
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));
    ca.put("/config", json!({"compatibility": "NONE"})).await;

    // 24 distinct schemas; each is registered through both instances at once,
    // under one shared subject and one subject per instance.
    let schemas: Vec<String> = (0..24)
        .map(|i| json!({"type":"record","name":format!("Event{i}"),"fields":[{"name":"n","type":"long"}]}).to_string())
        .collect();
    // Instance b works through the list backwards, so the two instances are
    // mostly registering different schemas at the same moment: both compute
    // the same next id, and the log must decide.
    let mut tasks = Vec::new();
    let order: Vec<(usize, &str, &Client)> = (0..schemas.len())
        .map(|i| (i, "a", &ca))
        .zip((0..schemas.len()).rev().map(|i| (i, "b", &cb)))
        .flat_map(|(x, y)| [x, y])
        .collect();
    for (i, which, client) in order {
        let schema = &schemas[i];
        {
            let body = json!({"schema": schema});
            let shared = format!("/subjects/shared-{}/versions", i % 4);
            let own = format!("/subjects/{which}-{}/versions", i % 3);
            let (http, base) = (client.http.clone(), client.base.clone());
            tasks.push(tokio::spawn(async move {
                let c = Client { http, base };
                let (s1, r1) = c.post(&shared, body.clone()).await;
                let (s2, r2) = c.post(&own, body).await;
                assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{r1} {r2}");
                (i, r1["id"].as_i64().expect("id"), r2["id"].as_i64().expect("id"))
            }));
        }
    }
    let mut ids_by_schema = std::collections::HashMap::<usize, std::collections::HashSet<i64>>::new();
    for task in tasks {
        let (i, x, y) = task.await.expect("task");
        ids_by_schema.entry(i).or_default().extend([x, y]);
    }
    // Each schema got exactly one id, whichever instance and subject registered it…
    for (schema, ids) in &ids_by_schema {
        assert_eq!(ids.len(), 1, "schema {schema} got several ids: {ids:?}");
    }
    // …and no id was given to two schemas.
    let all: std::collections::HashSet<i64> = ids_by_schema.values().flatten().copied().collect();
    assert_eq!(all.len(), schemas.len());
    // Both instances agree on every id, and each id names its schema.
    b.registry.catch_up_for_tests().await;
    a.registry.catch_up_for_tests().await;
    for (index, ids) in &ids_by_schema {
        let id = ids.iter().next().copied().expect("id");
        let from_a = ca.get(&format!("/schemas/ids/{id}")).await.1;
        let from_b = cb.get(&format!("/schemas/ids/{id}")).await.1;
        assert_eq!(from_a, from_b);
        assert!(from_a["schema"].as_str().expect("schema").contains(&format!("\"Event{index}\"")));
    }
    // Every subject's versions are the same on both.
    for subject in ca.get("/subjects").await.1.as_array().expect("subjects") {
        let subject = subject.as_str().expect("name");
        assert_eq!(
            ca.get(&format!("/subjects/{subject}/versions")).await.1,
            cb.get(&format!("/subjects/{subject}/versions")).await.1
        );
    }
    let races = a.registry.races_lost() + b.registry.races_lost();
    let gave_way = a.registry.gave_way() + b.registry.gave_way();
    eprintln!("registration races lost and retried: {races}; writes that gave way to a retry: {gave_way}");
    assert!(races > 0, "the test did not make the instances race; it proves nothing");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_registry_converter_encodes_and_decodes_through_our_registry() {
    use apache_avro::types::Value as Avro;
    use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
    use schema_registry_converter::async_impl::schema_registry::SrSettings;
    use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

    let broker = Broker::start().expect("broker");
    let registry = start(&broker, "_schemas").await;
    let settings = SrSettings::new(registry.url.clone());
    let encoder = AvroEncoder::new(settings.clone());
    let decoder = AvroDecoder::new(settings);

    // The converter registers the schema itself (POST …/versions), then encodes.
    let supplied = SuppliedSchema::new(Some("test.Customer".into()), SchemaType::Avro, customer_v2());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema("customers".into(), false, supplied);
    let bytes = encoder
        .encode(
            vec![
                ("id", Avro::String("cus_1".into())),
                ("email", Avro::Union(1, Box::new(Avro::String("a@b.c".into())))),
            ],
            strategy,
        )
        .await
        .expect("encode through our registry");
    let (id, _) = schemas::wire::unframe(&bytes).expect("Confluent framing");
    let c = Client::new(&registry.url);
    assert_eq!(c.get("/subjects/customers-value/versions/latest").await.1["id"], json!(id));

    let decoded = decoder.decode(Some(&bytes)).await.expect("decode through our registry");
    assert_eq!(
        decoded.value,
        Avro::Record(vec![
            ("id".into(), Avro::String("cus_1".into())),
            ("email".into(), Avro::Union(1, Box::new(Avro::String("a@b.c".into())))),
        ])
    );

    // Latest-version encoding (no schema supplied) also works.
    let bytes = encoder
        .encode(
            vec![("id", Avro::String("cus_2".into())), ("email", Avro::Union(0, Box::new(Avro::Null)))],
            SubjectNameStrategy::TopicNameStrategy("customers".into(), false),
        )
        .await
        .expect("encode with latest");
    assert_eq!(schemas::wire::unframe(&bytes).expect("framing").0, id);
    registry.stop();
}
