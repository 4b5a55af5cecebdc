//! A 30-second broker outage under load, with the broker on durable storage
//! (tansu on PostgreSQL): the bridge stays up, `/readyz` goes false and
//! back, deliveries during the outage are answered 503 with `Retry-After`,
//! every delivery answered 2xx — before, during or after — is on its topic
//! once the broker is back, and throughput returns.

mod support;

use rdkafka::message::Message;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use testbed::{Broker, DurableStorage};

const OUTAGE: Duration = Duration::from_secs(30);
const WORKERS: usize = 8;

#[derive(Debug, Clone)]
struct Answer {
    /// When the answer arrived, since the load started.
    at: Duration,
    status: u16,
    retry_after: Option<String>,
    id: String,
    reason: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_second_broker_outage_on_durable_storage_loses_nothing_acknowledged() {
    let storage = DurableStorage::start().expect("PostgreSQL for tansu's storage");
    let broker = Broker::start_with_storage(&storage.url()).expect("tansu starts on PostgreSQL storage");
    let port = broker.port();
    let mut stack = Stack::start_on_broker(broker, "").await;
    let url = stack.url.clone();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    assert_eq!(readyz(&client, &url).await, Some(200), "ready before the outage");

    let started = Instant::now();
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..WORKERS {
        let (answers, next, stop, url, client) =
            (answers.clone(), next.clone(), stop.clone(), url.clone(), client.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let id = format!("evt_outage_{}", next.fetch_add(1, Ordering::Relaxed));
                let request = signed_stripe_post(&client, &url, stripe_body(&id));
                let response = request.send().await.expect("the bridge stays up and answers");
                let retry_after =
                    response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let status = response.status().as_u16();
                let reason = if status == 200 { String::new() } else { response.text().await.unwrap_or_default() };
                answers.lock().expect("lock").push(Answer { at: started.elapsed(), status, retry_after, id, reason });
                if status == 503 {
                    // A provider backs off; this one just does not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.broker.kill();
    let killed = started.elapsed();
    let unready = wait_for_readyz(&client, &url, 503, Duration::from_secs(30), started).await;
    let unready_after = unready.expect("/readyz turns 503 while the broker is down") - killed;
    tokio::time::sleep((killed + OUTAGE).saturating_sub(started.elapsed())).await;

    stack.broker = Broker::start_on(port, &storage.url()).expect("tansu restarts on the same storage");
    let restarted = started.elapsed();
    let ready = wait_for_readyz(&client, &url, 200, Duration::from_secs(60), started).await;
    let ready_after = ready.expect("/readyz turns 200 once the broker is back") - restarted;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load worker");
    }
    let healthz = client.get(format!("{url}/healthz")).send().await.expect("healthz").status().as_u16();
    assert_eq!(healthz, 200, "the bridge process stayed up");

    let answers = answers.lock().expect("lock").clone();
    let acked: HashSet<&str> =
        answers.iter().filter(|a| (200..300).contains(&a.status)).map(|a| a.id.as_str()).collect();
    let unexpected: Vec<&Answer> = answers.iter().filter(|a| a.status != 200 && a.status != 503).collect();
    assert!(unexpected.is_empty(), "answers other than 200 and 503: {unexpected:?}");
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(!refused.is_empty(), "deliveries during the outage were answered 503");
    let not_about_kafka: Vec<&&Answer> = refused.iter().filter(|a| !a.reason.contains("Kafka")).collect();
    assert!(not_about_kafka.is_empty(), "503s that do not say the broker is the cause: {not_about_kafka:?}");
    let without_retry_after = refused.iter().filter(|a| a.retry_after.is_none()).count();
    assert_eq!(without_retry_after, 0, "every 503 carries Retry-After");
    let during = |a: &&Answer| a.at > killed && a.at < restarted;
    let accepted_during = answers.iter().filter(|a| a.status == 200).filter(during).count();

    // Throughput in one-second windows: before the outage, and from the restart on.
    let per_second = |from: Duration, to: Duration| -> Vec<usize> {
        let seconds = (to - from).as_secs() as usize;
        let mut counts = vec![0; seconds];
        for answer in answers.iter().filter(|a| a.status == 200 && a.at >= from && a.at < to) {
            let slot = (answer.at - from).as_secs() as usize;
            if slot < seconds {
                counts[slot] += 1;
            }
        }
        counts
    };
    let before = per_second(Duration::from_secs(1), killed);
    let before_rate = before.iter().sum::<usize>() as f64 / before.len().max(1) as f64;
    let after = per_second(restarted, restarted + Duration::from_secs(10));
    let recovered_in = after.iter().position(|&n| n as f64 >= 0.8 * before_rate);
    let first_ack_after =
        answers.iter().filter(|a| a.status == 200 && a.at > restarted).map(|a| a.at - restarted).min();

    // Everything acknowledged is on the topic, read back from the restarted broker.
    let topic = "webhooks.stripe.payment_intent.succeeded";
    let records = stack.records(topic, acked.len());
    let decoder = stack.decoder();
    let mut found: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let decoded = decoder.decode(record.payload()).await.expect("decodes").value;
        *found.entry(string(field(&decoded, "delivery_id")).to_owned()).or_default() += 1;
    }
    let missing: Vec<&&str> = acked.iter().filter(|id| !found.contains_key(**id)).collect();
    // A record whose answer gave up (503) stays queued in the producer and
    // lands once the broker is back: on the topic although refused.
    let landed_after_503 =
        refused.iter().filter(|a| !acked.contains(a.id.as_str()) && found.contains_key(&a.id)).count();
    let duplicates: usize = found.values().map(|n| n - 1).sum();
    println!(
        "outage {OUTAGE:?} on PostgreSQL storage, {WORKERS} senders: acked {}, found {}, missing {}, duplicates {duplicates}",
        acked.len(),
        found.len(),
        missing.len()
    );
    println!(
        "answered 503 (all with Retry-After): {}, of which {landed_after_503} landed once the broker was back; \
         accepted while the broker was down: {accepted_during}",
        refused.len()
    );
    println!(
        "/readyz false {:.1} s after the kill, true {:.1} s after the restart; first 2xx {:.2} s after the restart",
        unready_after.as_secs_f64(),
        ready_after.as_secs_f64(),
        first_ack_after.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    println!(
        "throughput before {before_rate:.0}/s; per second after the restart {after:?}; back to ≥ 80 % in {}",
        recovered_in.map_or("more than 10 s".to_owned(), |s| format!("{} s", s + 1))
    );
    assert!(acked.len() > 100, "too few acknowledged deliveries to prove anything: {}", acked.len());
    assert!(missing.is_empty(), "acknowledged deliveries lost: {missing:?}");
    assert!(first_ack_after.is_some(), "deliveries are accepted again after the restart");
}

async fn readyz(client: &reqwest::Client, url: &str) -> Option<u16> {
    let response = client.get(format!("{url}/readyz")).timeout(Duration::from_secs(5)).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Polls `/readyz` until it answers `status`; when it did, since the test's start.
async fn wait_for_readyz(
    client: &reqwest::Client,
    url: &str,
    status: u16,
    within: Duration,
    started: Instant,
) -> Option<Duration> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if readyz(client, url).await == Some(status) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
