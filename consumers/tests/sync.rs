//! The sync consumer against a real broker, registry and PostgreSQL.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn events_once_entities_in_provider_order_and_bad_records_dead_lettered() {
    let stack = Stack::start().await;
    let pool = stack.pool().await;
    // The newer state arrives first, the older one late: the older must not win.
    let newer = stripe_event("evt_2", "payment_intent.succeeded", 2_000, payment_intent("pi_1", 500, "succeeded"));
    let older = stripe_event("evt_1", "payment_intent.processing", 1_000, payment_intent("pi_1", 500, "processing"));
    assert_eq!(stack.ingest("stripe", &[], &newer).await["status"], "accepted");
    assert_eq!(stack.ingest("stripe", &[], &older).await["status"], "accepted");
    // A copy of an already-produced record (e.g. a producer retry) on the topic.
    let topic = "webhooks.stripe.payment_intent.succeeded";
    let records = bridge_records(&stack, topic, 1);
    copy_record(&stack, topic, &records[0]).await;
    // A record that is not Avro at all, then a good one behind it on another topic.
    schemas::topics::ensure_topic(&stack.broker.bootstrap(), "webhooks.stripe.garbage", 1, &[]).await.expect("topic");
    raw_produce(&stack, "webhooks.stripe.garbage", b"this is not a confluent record").await;
    let order: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("schemas/samples/shopify/orders_create.json")).expect("sample"),
    )
    .expect("json");
    assert_eq!(
        stack.ingest("shopify", &[("x-shopify-topic", "orders/create"), ("x-shopify-event-id", "o-1")], &order).await["status"],
        "accepted"
    );

    run_until(
        &stack,
        consumers::sync::Sync,
        &[("SELECT count(*) FROM webhook_events", 3), ("SELECT count(*) FROM orders", 1)],
    )
    .await;

    let (status, delivery): (String, String) =
        sqlx::query_as("SELECT status, delivery_id FROM payment_intents WHERE id = 'pi_1'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(
        (status.as_str(), delivery.as_str()),
        ("succeeded", "evt_2"),
        "the older event did not overwrite the newer"
    );
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_events WHERE entity_id = 'pi_1'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(events, 2, "two events, the copied record counted once");
    let (total, name): (String, String) =
        sqlx::query_as("SELECT total_price::text, name FROM orders WHERE id = '820982911946154508'")
            .fetch_one(&pool)
            .await
            .expect("order");
    assert_eq!((total.as_str(), name.as_str()), ("403.00", "#9999"));
    let dead = bridge_records(&stack, "webhooks.consumer-dead-letter", 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(rdkafka::message::Message::payload(&dead[0]), Some(&b"this is not a confluent record"[..]));
    // Offsets are stored past every record, the bad one included.
    let (stored,): (i64,) = sqlx::query_as(
        "SELECT next_offset FROM consumer_offsets WHERE consumer = 'sync' AND topic = 'webhooks.stripe.garbage'",
    )
    .fetch_one(&pool)
    .await
    .expect("offset");
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_mid_batch_and_restarted_yields_the_same_database() {
    let stack = Stack::start().await;
    // 400 events over 40 payment intents, each intent's status changing over time.
    for n in 0..400i64 {
        let intent = format!("pi_{}", n % 40);
        let status = if n >= 360 { "succeeded" } else { "processing" };
        let event = stripe_event(
            &format!("evt_{n}"),
            "payment_intent.succeeded",
            1_000 + n,
            payment_intent(&intent, 100 + n, status),
        );
        assert_eq!(stack.ingest("stripe", &[], &event).await["status"], "accepted");
    }
    let config_path = stack.write_consumer_config("");
    let pool = stack.pool().await;
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_consumers"))
            .args(["--config"])
            .arg(&config_path)
            .arg("sync")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("consumer starts")
    };
    // Kill it (SIGKILL) as soon as some, but not all, events are in.
    let mut child = spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_events").fetch_one(&pool).await.expect("count");
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the consumer wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let (at_kill,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_events").fetch_one(&pool).await.expect("count");
    eprintln!("killed with {at_kill} of 400 events applied");
    let metrics_port = testbed::free_port().expect("port");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_consumers"))
        .args(["--config"])
        .arg(&config_path)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}"), "sync"])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("consumer restarts");
    wait_for_count(&pool, "SELECT count(*) FROM webhook_events", 400, Duration::from_secs(60)).await;
    // Its scrape endpoint shows the records it applied and no lag left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let lag_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("consumer_lag_records{")).collect();
        if !lag_lines.is_empty() && lag_lines.iter().all(|l| l.ends_with(" 0")) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "lag never reached 0:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        metrics.contains(r#"consumer_records_total{consumer="sync",topic="webhooks.stripe.payment_intent.succeeded"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"consumer_end_to_end_latency_seconds_count{consumer="sync"}"#), "{metrics}");
    child.kill().expect("kill");
    child.wait().expect("reaped");

    // Each intent ends in the state of its latest event, exactly as an uninterrupted run leaves it.
    let rows: Vec<(String, i64, String, String)> =
        sqlx::query_as("SELECT id, amount, status, delivery_id FROM payment_intents ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(rows.len(), 40);
    for (id, amount, status, delivery) in rows {
        let k: i64 = id.trim_start_matches("pi_").parse().expect("n");
        let last = 360 + k;
        assert_eq!((amount, status.as_str(), delivery), (100 + last, "succeeded", format!("evt_{last}")), "{id}");
    }
    let (distinct,): (i64,) =
        sqlx::query_as("SELECT count(DISTINCT delivery_id) FROM webhook_events").fetch_one(&pool).await.expect("n");
    assert_eq!(distinct, 400);
    let (consumed,): (i64,) =
        sqlx::query_as("SELECT sum(next_offset)::bigint FROM consumer_offsets WHERE consumer = 'sync'")
            .fetch_one(&pool)
            .await
            .expect("n");
    assert_eq!(consumed, 400, "stored offsets account for every record exactly once");
}

/// Every table the sync writes, as text, in key order.
async fn tables(pool: &sqlx::PgPool) -> Vec<String> {
    rows_as_text(
        pool,
        &[
            r#"SELECT source, delivery_id, event_type, provider, schema_id, schema_version, origin, received_at, occurred_at,
                      topic, "partition", "offset", entity_type, entity_id, payload FROM webhook_events"#,
            "SELECT * FROM payment_intents",
            "SELECT * FROM charges",
            "SELECT * FROM customers",
            "SELECT * FROM orders",
            "SELECT * FROM pull_requests",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_leaves_the_database_as_one_event_at_a_time_does() {
    let records = mixed_events(300);
    let both = apply_both_ways(&consumers::sync::Sync, &records).await;
    let (sequential, batch) = (&both.one_at_a_time, &both.batched);

    let expected = tables(sequential).await;
    assert_eq!(tables(batch).await, expected);
    // And the sequential outcome is the rule: per entity, the first of
    // its latest events (among first copies of deliveries).
    let mut seen = std::collections::HashSet::new();
    let mut latest: std::collections::BTreeMap<String, (i64, String)> = Default::default();
    for record in &records {
        let delivery = (record.text("/source").expect("source"), record.text("/delivery_id").expect("delivery"));
        if !seen.insert(delivery) || record.ce_type.as_deref() != Some("stripe.payment_intent.succeeded") {
            continue;
        }
        let payload = record.payload().expect("payload");
        let id = payload["data"]["object"]["id"].as_str().expect("id").to_owned();
        let version = payload["created"].as_i64().expect("created");
        let status = payload["data"]["object"]["status"].as_str().expect("status").to_owned();
        if latest.get(&id).is_none_or(|(v, _)| version > *v) {
            latest.insert(id, (version, status));
        }
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM payment_intents ORDER BY id").fetch_all(batch).await.expect("rows");
    let rule: Vec<(String, String)> = latest.into_iter().map(|(id, (_, status))| (id, status)).collect();
    assert_eq!(rows, rule);
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_events").fetch_one(batch).await.expect("n");
    let deliveries: std::collections::HashSet<(&str, &str)> = records
        .iter()
        .map(|r| (r.text("/source").expect("source"), r.text("/delivery_id").expect("delivery")))
        .collect();
    assert_eq!(events, deliveries.len() as i64, "each delivery once");
    assert!(events < 300, "the events include copies of deliveries");
}

fn bridge_records(stack: &Stack, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    testbed::read_records(&stack.broker.bootstrap(), topic, count, Duration::from_secs(15)).expect("records")
}

async fn copy_record(stack: &Stack, topic: &str, record: &rdkafka::message::OwnedMessage) {
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", stack.broker.bootstrap()).create().expect("producer");
    let mut copy =
        FutureRecord::<[u8], [u8]>::to(topic).payload(record.payload().expect("payload")).partition(record.partition());
    if let Some(key) = record.key() {
        copy = copy.key(key);
    }
    producer.send(copy, Duration::from_secs(5)).await.expect("copied");
}

async fn raw_produce(stack: &Stack, topic: &str, bytes: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", stack.broker.bootstrap()).create().expect("producer");
    producer
        .send(FutureRecord::<[u8], [u8]>::to(topic).payload(bytes), Duration::from_secs(5))
        .await
        .expect("produced");
}

/// A flood of records that are not Avro (a misconfigured producer writing
/// to a webhook topic), more than a batch: each is copied to the
/// dead-letter topic once, in the order read, with where it came from, and
/// the offsets move past them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_records_is_dead_lettered_in_order() {
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = Stack::start().await;
    let topic = "webhooks.stripe.garbage";
    schemas::topics::ensure_topic(&stack.broker.bootstrap(), topic, 1, &[]).await.expect("topic");
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", stack.broker.bootstrap()).create().expect("producer");
    let bodies: Vec<String> = (0..1200).map(|n| format!("not a confluent record {n:04}")).collect();
    let sends = bodies.iter().map(|body| {
        producer.send(FutureRecord::<[u8], [u8]>::to(topic).payload(body.as_bytes()), Duration::from_secs(5))
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("produced");
    }

    let stored = "SELECT coalesce(max(next_offset), 0) FROM consumer_offsets WHERE consumer = 'sync' AND topic = 'webhooks.stripe.garbage'";
    run_until(&stack, consumers::sync::Sync, &[(stored, bodies.len() as i64)]).await;

    let dead = bridge_records(&stack, "webhooks.consumer-dead-letter", bodies.len());
    let copied: Vec<String> =
        dead.iter().map(|record| String::from_utf8_lossy(record.payload().expect("payload")).into_owned()).collect();
    assert_eq!(copied, bodies, "each once, in the order read");
    let offsets: Vec<String> = dead.iter().map(|record| header(record, "dlq_offset").expect("dlq_offset")).collect();
    assert_eq!(offsets, (0..bodies.len()).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(dead.iter().all(|record| header(record, "dlq_topic").as_deref() == Some(topic)));
}

fn header(record: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    let value = record.headers()?.iter().find(|h| h.key == name)?.value?;
    Some(String::from_utf8_lossy(value).into_owned())
}
