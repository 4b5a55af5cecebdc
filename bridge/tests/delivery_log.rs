//! The delivery log read at start and then tailed, against a real broker.

use bridge::deliveries::{DeliveryLog, DeliveryRecord};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

const PER_RECORD: usize = 50;

fn delivery(record: usize, n: usize) -> DeliveryRecord {
    DeliveryRecord {
        source: "stripe".into(),
        delivery_id: format!("evt_{record}_{n}"),
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        outcome: "produced".into(),
        topic: "webhooks.stripe.charge.refunded".into(),
        partition: 1,
        offset: (record * PER_RECORD + n) as i64,
        event_type: Some("charge.refunded".into()),
        schema_id: Some(3),
        schema_version: Some(1),
        trace_id: None,
        origin: Some("webhook".into()),
    }
}

/// Writes log records `records` as another bridge instance would (batches
/// of deliveries as JSON arrays), all enqueued at once and lingered on, so
/// that the broker stores them as a few record batches of many records.
async fn write(brokers: &str, topic: &str, records: std::ops::Range<usize>) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "100").create().expect("producer");
    let mut acks = Vec::new();
    for record in records {
        let batch: Vec<DeliveryRecord> = (0..PER_RECORD).map(|n| delivery(record, n)).collect();
        let value = serde_json::to_vec(&batch).expect("json");
        let headers = OwnedHeaders::new().insert(Header { key: "bridge_instance", value: Some("another") });
        let sent =
            producer.send_result(FutureRecord::<str, [u8]>::to(topic).key("another").payload(&value).headers(headers));
        acks.push(sent.map_err(|(error, _)| error).expect("enqueued"));
    }
    for ack in acks {
        ack.await.expect("delivery report").expect("acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_bridge_holds_every_delivery_of_the_log_and_then_tails_it() {
    let broker = testbed::Broker::start().expect("broker");
    let brokers = broker.bootstrap();
    let topic = "_test_deliveries";
    // Opening creates the topic; the log is empty then.
    let first = DeliveryLog::open(&brokers, topic, Duration::from_secs(3600), usize::MAX).await.expect("open empty");
    assert_eq!(first.len(), 0);
    write(&brokers, topic, 0..40).await;

    // A bridge starting now answers only once it holds all of it, the last
    // record batch included (tansu 0.6's high watermark stops at that
    // batch's first record).
    let log = DeliveryLog::open(&brokers, topic, Duration::from_secs(3600), usize::MAX).await.expect("open");
    assert_eq!(log.len(), 40 * PER_RECORD);
    let last = log.get("stripe", "evt_39_49").expect("the last delivery written");
    assert_eq!(last, DeliveryRecord { received_at_ms: last.received_at_ms, ..delivery(39, 49) });

    // Then it tails what other instances write, as does the one opened before.
    write(&brokers, topic, 40..44).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (log.len(), first.len()) != (44 * PER_RECORD, 44 * PER_RECORD) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((log.len(), first.len()), (44 * PER_RECORD, 44 * PER_RECORD));
    assert!(log.get("stripe", "evt_43_49").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_bridge_reads_the_log_from_where_its_window_begins() {
    let broker = testbed::Broker::start().expect("broker");
    let brokers = broker.bootstrap();
    let topic = "_test_deliveries_window";
    let window = Duration::from_secs(1);
    DeliveryLog::open(&brokers, topic, window, usize::MAX).await.expect("open empty");
    write(&brokers, topic, 0..10).await;
    // Older than the window and its margin (as much again, for a window this short).
    tokio::time::sleep(window * 2 + Duration::from_secs(1)).await;
    // Two writes, so that the first record of the window is not in the
    // log's last record batch (tansu 0.6's high watermark stops at that
    // batch's first record).
    write(&brokers, topic, 10..20).await;
    write(&brokers, topic, 20..30).await;

    let log = DeliveryLog::open(&brokers, topic, window, usize::MAX).await.expect("open");
    assert!(log.get("stripe", "evt_0_0").is_none(), "a record older than the window was read");
    assert!(log.get("stripe", "evt_9_49").is_none(), "a record older than the window was read");
    assert!(log.get("stripe", "evt_10_0").is_some(), "the window's first record was not read");
    assert!(log.get("stripe", "evt_29_49").is_some(), "the window's last record was not read");
    assert_eq!(log.len(), 20 * PER_RECORD);
}
