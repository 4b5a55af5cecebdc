//! `bench`: measures, in one run on this machine, with the same signed ~2 KB
//! Stripe-style payloads:
//! - the bridge end to end (verify + transcode + produce, acks=all):
//!   throughput, p50/p99 answer latency, CPU per webhook, peak RSS, and p99
//!   at half of its peak rate;
//! - the Kafka limit: a bare rdkafka producer sending the bridge's own Avro
//!   records to the same broker, with the same producer settings;
//! - the HTTP limit: an axum server that only answers 200;
//! - a do-it-yourself Python receiver (Starlette + uvicorn, hmac, fastavro,
//!   confluent-kafka), if `--python` names an interpreter that has them;
//! - the sync consumer: events per second into PostgreSQL.
//!
//! and prints one table with the ratios. Run it through `scripts/bench`,
//! which builds in release mode and installs the Python peer. The load
//! generator runs on the same two cores as what it measures; the table says so.

use anyhow::Context;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Cli {
    /// Requests per measured run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The bridge binary (release build).
    #[arg(long, default_value = "target/release/bridge")]
    bridge: PathBuf,
    /// A Python with starlette, uvicorn, fastavro and confluent-kafka, for the peer.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Events for the consumer benchmark.
    #[arg(long, default_value_t = 10_000)]
    consumer_events: usize,
    /// Measure only the bridge (peak, half of peak, overload): a quicker
    /// run for trying a change; the limits, the peer and the consumer are
    /// left out.
    #[arg(long)]
    bridge_only: bool,
    /// Run as the HTTP-limit server on this address (used by the bench itself).
    #[arg(long, hide = true)]
    http_limit_server: Option<String>,
}

const SECRET: &str = "whsec_bench_secret_0123456789";
/// `server.max_in_flight` of the bridge in the overload run, which opens
/// eight times as many connections.
const MAX_IN_FLIGHT: usize = 128;

#[derive(Debug, Clone, Default)]
struct Measured {
    name: String,
    requests: usize,
    concurrency: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: Option<f64>,
    peak_rss_mib: Option<f64>,
    errors: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(listen) = &cli.http_limit_server {
        return http_limit_server(listen);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli))
}

fn http_limit_server(listen: &str) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let app = axum::Router::new().route("/webhooks/stripe", axum::routing::post(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// A ~2 KB Stripe-style event with a unique id.
fn event(n: usize) -> Vec<u8> {
    let mut metadata = serde_json::Map::new();
    for i in 0..40 {
        metadata.insert(format!("field_{i:02}"), serde_json::Value::String(format!("value-{n}-{i:04}-padding")));
    }
    let now = chrono::Utc::now().timestamp();
    serde_json::to_vec(&serde_json::json!({
        "id": format!("evt_bench_{n}_{}", now), "object": "event", "api_version": "2024-06-20", "created": now,
        "type": "payment_intent.succeeded", "livemode": false, "pending_webhooks": 1,
        "request": {"id": format!("req_{n}"), "idempotency_key": null},
        "data": {"object": {
            "id": format!("pi_bench_{}", n % 1000), "object": "payment_intent", "amount": 1000 + n as i64, "amount_received": 1000 + n as i64,
            "currency": "usd", "status": "succeeded", "customer": format!("cus_{}", n % 97), "created": now - 5,
            "description": "Benchmark order", "payment_method": "pm_card_visa", "latest_charge": format!("ch_{n}"),
            "livemode": false, "metadata": metadata
        }}
    }))
    .unwrap_or_default()
}

fn signed(body: &[u8]) -> String {
    let t = chrono::Utc::now().timestamp().to_string();
    let mac = bridge::verify::mac(bridge::verify::Algorithm::Sha256, SECRET.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(mac))
}

/// `count` signed events numbered from `first` (unique ids per run).
fn signed_bodies(first: usize, count: usize) -> Arc<Vec<(Vec<u8>, String)>> {
    Arc::new(
        (first..first + count)
            .map(|n| {
                let body = event(n);
                let signature = signed(&body);
                (body, signature)
            })
            .collect(),
    )
}

struct Load {
    elapsed: Duration,
    latencies_us: Vec<u64>,
    errors: usize,
    /// Of the errors, answers 503 (refused at once under overload).
    unavailable: usize,
}

impl Load {
    fn empty() -> Self {
        Self { elapsed: Duration::ZERO, latencies_us: Vec::new(), errors: 0, unavailable: 0 }
    }

    /// Counts one answer that took `latency_us`.
    fn record(&mut self, latency_us: u64, status: u16) {
        self.latencies_us.push(latency_us);
        self.errors += usize::from(!(200..300).contains(&status));
        self.unavailable += usize::from(status == 503);
    }

    /// Adds another worker's answers.
    fn merge(&mut self, other: Load) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.unavailable += other.unavailable;
    }

    /// The table row of a run of `requests` (closed-loop rows add their concurrency).
    fn row(&self, name: &str, requests: usize) -> Measured {
        Measured {
            name: name.to_owned(),
            requests,
            per_second: requests as f64 / self.elapsed.as_secs_f64(),
            p50_ms: percentile(&self.latencies_us, 0.5),
            p99_ms: percentile(&self.latencies_us, 0.99),
            errors: self.errors,
            ..Default::default()
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

/// POSTs one signed webhook; the answer's status (0 when there was none).
async fn post_signed(client: &reqwest::Client, url: &str, body: &[u8], signature: &str) -> u16 {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Sends `bodies` to `url` from `concurrency` connections, as fast as answered.
async fn closed_loop(url: &str, bodies: Arc<Vec<(Vec<u8>, String)>>, concurrency: usize) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    unpaced(bodies.len(), concurrency, posting(client, url, bodies)).await
}

/// Runs `send(i)` for i in `0..count` from `concurrency` workers, each
/// starting its next when the last is answered (closed loop).
async fn unpaced<F, Fut>(count: usize, concurrency: usize, send: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (send, next) = (send.clone(), next.clone());
        tokio::spawn(async move {
            let mut load = Load::empty();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let sent = Instant::now();
                let status = send(i).await;
                load.record(sent.elapsed().as_micros() as u64, status);
            }
            load
        })
    });
    let mut load = Load::empty();
    for worker in futures::future::join_all(workers).await.into_iter().flatten() {
        load.merge(worker);
    }
    load.elapsed = started.elapsed();
    load.latencies_us.sort_unstable();
    load
}

/// Sends `bodies` at a fixed rate (open loop), measuring each answer from its scheduled start.
async fn open_loop(url: &str, bodies: Arc<Vec<(Vec<u8>, String)>>, per_second: f64) -> Load {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
    paced(bodies.len(), per_second, posting(client, url, bodies)).await
}

/// `send(i)` for the HTTP loops: posts signed body `i`, the answer's status.
fn posting(
    client: reqwest::Client,
    url: &str,
    bodies: Arc<Vec<(Vec<u8>, String)>>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> + Send + Sync + 'static {
    let url: Arc<str> = url.into();
    move |i| {
        let (client, bodies, url) = (client.clone(), bodies.clone(), url.clone());
        Box::pin(async move {
            let (body, signature) = &bodies[i];
            post_signed(&client, &url, body, signature).await
        })
    }
}

/// `send(i)` for the producer loops: produces record `i`, 200 once acknowledged, else 503.
fn producing(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> + Send + Sync + 'static {
    let records = Arc::new(records);
    let (producer, topic): (_, Arc<str>) = (producer.clone(), topic.into());
    move |i| {
        let (producer, records, topic) = (producer.clone(), records.clone(), topic.clone());
        Box::pin(async move {
            let (key, value) = &records[i];
            let record = FutureRecord::to(&topic).key(key.as_slice()).payload(value.as_slice());
            if producer.send(record, Duration::from_secs(30)).await.is_ok() { 200 } else { 503 }
        })
    }
}

/// Starts `send(i)` for i in `0..count` at `per_second` (open loop); each
/// latency runs from the scheduled start, so a stall delays every later send.
async fn paced<F, Fut>(count: usize, per_second: f64, send: F) -> Load
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    // Each send starts at its scheduled time, from this one pacing loop
    // (spawning every send up front took tens of milliseconds, during which
    // the first sends were already late: that harness delay was the p99).
    // Latency counts from the scheduled time, so a pacer or a server that
    // falls behind is measured, not hidden.
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let at = started + Duration::from_secs_f64(i as f64 / per_second);
        tokio::time::sleep_until(at).await;
        let sending = send(i);
        tasks.push(tokio::spawn(async move {
            let status = sending.await;
            (at.elapsed().as_micros() as u64, status)
        }));
    }
    let mut load = Load::empty();
    for task in tasks {
        if let Ok((latency, status)) = task.await {
            load.record(latency, status);
        }
    }
    load.elapsed = started.elapsed();
    load.latencies_us.sort_unstable();
    load
}

/// The bridge's own latency histograms (`/metrics`), summed over their
/// series: receipt to answer, and produce to the broker's acknowledgement.
#[derive(Debug, Default)]
struct BridgeHistograms {
    /// Cumulative counts at each `le` bound (seconds), `+Inf` last.
    answer: Vec<(f64, u64)>,
    broker_ack: Vec<(f64, u64)>,
}

impl BridgeHistograms {
    async fn scrape(url: &str) -> Self {
        let text = match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Self {
            answer: Self::buckets(&text, "bridge_ack_latency_seconds_bucket"),
            broker_ack: Self::buckets(&text, "bridge_produce_latency_seconds_bucket"),
        }
    }

    fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
        let mut sums: Vec<(f64, u64)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let Some((labels, count)) = line.rsplit_once(' ') else { continue };
            let Some(bound) = labels.split("le=\"").nth(1).and_then(|b| b.split('"').next()) else { continue };
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::NAN) };
            let count: u64 = count.parse().unwrap_or(0);
            match sums.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, sum)) => *sum += count,
                None => sums.push((bound, count)),
            }
        }
        sums
    }

    /// What was observed after `before` was scraped.
    fn since(&self, before: &Self) -> Self {
        let diff = |now: &[(f64, u64)], then: &[(f64, u64)]| {
            now.iter()
                .map(|(bound, n)| (*bound, n - then.iter().find(|(b, _)| b == bound).map_or(0, |(_, m)| (*m).min(*n))))
                .collect()
        };
        Self { answer: diff(&self.answer, &before.answer), broker_ack: diff(&self.broker_ack, &before.broker_ack) }
    }

    /// The smallest bucket bound holding at least `q` of the observations, in ms.
    fn quantile_bound_ms(buckets: &[(f64, u64)], q: f64) -> String {
        let total = buckets.last().map_or(0, |(_, n)| *n);
        match buckets.iter().find(|(_, n)| *n as f64 >= q * total as f64) {
            _ if total == 0 => "-".into(),
            Some((bound, _)) if bound.is_finite() => format!("≤ {:.0}", bound * 1000.0),
            _ => "> 30 000".into(),
        }
    }

    fn line(&self) -> String {
        let q = |buckets: &[(f64, u64)], q: f64| Self::quantile_bound_ms(buckets, q);
        format!(
            "half of peak, the bridge's own histograms: answer p50 {} ms, p99 {} ms; broker ack p50 {} ms, p99 {} ms",
            q(&self.answer, 0.5),
            q(&self.answer, 0.99),
            q(&self.broker_ack, 0.5),
            q(&self.broker_ack, 0.99)
        )
    }
}

/// CPU ticks (user + system) and peak RSS (KiB) of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, hwm))
}

/// Pids of a process and its children (uvicorn workers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            pids.extend(process_tree(child));
        }
    }
    pids
}

fn tree_stats(pid: u32) -> (u64, u64) {
    process_tree(pid).into_iter().filter_map(proc_stats).fold((0, 0), |(t, r), (ticks, hwm)| (t + ticks, r + hwm))
}

const TICKS_PER_SECOND: f64 = 100.0;

/// CPU µs per request from clock ticks spent on `requests`.
fn cpu_us(ticks: u64, requests: usize) -> f64 {
    ticks as f64 / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64
}

/// Runs `work`; with it, the CPU ticks the process tree of `pid` spent meanwhile.
async fn ticks_during<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let (before, _) = tree_stats(pid);
    let output = work.await;
    let (after, _) = tree_stats(pid);
    (output, after.saturating_sub(before))
}

async fn measure_server(name: &str, url: &str, pid: u32, requests: usize, concurrency: usize) -> Measured {
    let warm = signed_bodies(10_000_000, 500);
    closed_loop(url, warm, concurrency).await;
    let bodies = signed_bodies(0, requests);
    let (load, ticks) = ticks_during(pid, closed_loop(url, bodies, concurrency)).await;
    let (_, rss_kib) = tree_stats(pid);
    Measured {
        concurrency,
        cpu_us_per_request: Some(cpu_us(ticks, requests)),
        peak_rss_mib: Some(rss_kib as f64 / 1024.0),
        ..load.row(name, requests)
    }
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not answer")
}

/// Starts the bridge binary with `config` written to `path`.
fn spawn_bridge(binary: &std::path::Path, path: &std::path::Path, config: &str) -> anyhow::Result<Killed> {
    std::fs::write(path, config)?;
    let child = Command::new(binary)
        .args(["--config"])
        .arg(path)
        // No per-delivery log line unless asked for (BENCH_BRIDGE_LOG=info, the bridge's default).
        .env("RUST_LOG", std::env::var("BENCH_BRIDGE_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(std::env::var("BENCH_BRIDGE_WORKERS").ok().map(|n| ("TOKIO_WORKER_THREADS", n)))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Killed(child))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child started as the leader of its own process group (uvicorn with
/// workers), killed with the whole group: killing only the leader leaves
/// its workers running, and their producers retrying into later runs.
struct KilledGroup(Child);
impl KilledGroup {
    fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0).spawn().map(Self)
    }
}
impl Drop for KilledGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let broker = testbed::Broker::start()?;
    let brokers = broker.bootstrap();
    let registry = schemas::registry::RunningRegistry::start(&brokers, "_schemas", "127.0.0.1:0".parse()?).await?;
    let dir = std::env::temp_dir().join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("secret"), SECRET)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bridge_config = |port: u16, extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}[kafka]\nbrokers = \"{brokers}\"\npartitions = 3\n[registry]\nurl = \"{}\"\n[catalog]\ndir = \"{}\"\n[sources.stripe]\nprovider = \"stripe\"\nsecrets_file = \"{}\"\nkey_pointer = \"/data/object/id\"\nversion_pointer = \"/api_version\"\n",
            registry.url,
            root.join("schemas/catalog").display(),
            dir.join("secret").display()
        )
    };
    let bridge_port = testbed::free_port()?;
    let mut results = Vec::new();

    // 1. The bridge.
    eprintln!("▶ bridge: {} requests, {} connections", cli.requests, cli.concurrency);
    let bridge = spawn_bridge(&cli.bridge, &dir.join("bridge.toml"), &bridge_config(bridge_port, ""))?;
    let bridge_url = format!("http://127.0.0.1:{bridge_port}/webhooks/stripe");
    wait_http(&format!("http://127.0.0.1:{bridge_port}/healthz")).await?;
    let bridge_result = measure_server(
        "bridge (verify+transcode+produce, acks=all)",
        &bridge_url,
        bridge.0.id(),
        cli.requests,
        cli.concurrency,
    )
    .await;
    eprintln!("▶ bridge at half its peak rate ({:.0}/s)", bridge_result.per_second / 2.0);
    let half_rate = bridge_result.per_second / 2.0;
    let half_count = ((half_rate * 10.0) as usize).clamp(1000, cli.requests);
    let bodies = signed_bodies(20_000_000, half_count);
    let metrics_url = format!("http://127.0.0.1:{bridge_port}/metrics");
    let histograms_before = BridgeHistograms::scrape(&metrics_url).await;
    let half = open_loop(&bridge_url, bodies, half_rate).await;
    let half_split = BridgeHistograms::scrape(&metrics_url).await.since(&histograms_before).line();
    // Overload: a bridge taking at most MAX_IN_FLIGHT deliveries at once,
    // eight times as many connections; the rest must be refused at once
    // (503) with memory staying bounded.
    let overload_connections = MAX_IN_FLIGHT * 8;
    eprintln!("▶ bridge overloaded: {overload_connections} connections, max_in_flight {MAX_IN_FLIGHT}");
    let overload_port = testbed::free_port()?;
    let overloaded = spawn_bridge(
        &cli.bridge,
        &dir.join("bridge-overload.toml"),
        &bridge_config(overload_port, &format!("max_in_flight = {MAX_IN_FLIGHT}\n")),
    )?;
    wait_http(&format!("http://127.0.0.1:{overload_port}/healthz")).await?;
    let overload_bodies = signed_bodies(30_000_000, cli.requests);
    let overload_url = format!("http://127.0.0.1:{overload_port}/webhooks/stripe");
    let overload = closed_loop(&overload_url, overload_bodies, overload_connections).await;
    let (_, overload_rss_kib) = tree_stats(overloaded.0.id());
    drop(overloaded);
    let overload_line = format!(
        "overload: {} requests from {overload_connections} connections (max_in_flight {MAX_IN_FLIGHT}): {} accepted, \
         {} answered 503 at once, {} other errors; bridge peak RSS {:.1} MiB",
        cli.requests,
        cli.requests - overload.errors,
        overload.unavailable,
        overload.errors - overload.unavailable,
        overload_rss_kib as f64 / 1024.0
    );
    results.push(bridge_result.clone());
    results.push(half.row("bridge at half of peak (open loop)", half_count));
    drop(bridge);
    let topic = "webhooks.stripe.payment_intent.succeeded";

    if !cli.bridge_only {
        results.extend(kafka_limits(&brokers, topic, &cli, half_count, half_rate).await?);
        results.extend(http_limits(&cli, half_count, half_rate).await?);
        // 4. The do-it-yourself Python peer.
        if let Some(python) = &cli.python {
            eprintln!("▶ Python peer: Starlette + uvicorn (2 workers), fastavro, confluent-kafka");
            match python_peer(python, &root, &dir, &brokers, &registry, cli.requests, cli.concurrency).await {
                Ok(measured) => results.push(measured),
                Err(error) => eprintln!("the Python peer could not be measured: {error:#}"),
            }
        }
    }

    print_table(&results, &cli);
    println!("{half_split}");
    println!("{overload_line}");

    // 5. The sync consumer.
    if !cli.bridge_only {
        eprintln!("▶ sync consumer: {} events into PostgreSQL", cli.consumer_events);
        match consumer_bench(&brokers, &registry.url, topic, cli.consumer_events).await {
            Ok((events, elapsed)) => println!(
                "\nsync consumer: {events} events into PostgreSQL in {:.2} s = {:.0} events/s (batches of 500, one transaction each)",
                elapsed.as_secs_f64(),
                events as f64 / elapsed.as_secs_f64()
            ),
            Err(error) => println!("\nsync consumer: not measured ({error})"),
        }
    }
    registry.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Step 2, the Kafka limit: the bridge's own records (read back from
/// `topic`), re-sent by a bare producer with the bridge's producer settings.
async fn kafka_limits(
    brokers: &str,
    topic: &str,
    cli: &Cli,
    half_count: usize,
    half_rate: f64,
) -> anyhow::Result<Vec<Measured>> {
    eprintln!("▶ Kafka limit: bare rdkafka producer");
    let records = read_records(brokers, topic, cli.requests)?;
    schemas::topics::ensure_topic(brokers, "bench.kafka-limit", 3, &[]).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "2")
        .create()?;
    // The producer runs in this process: its CPU is this process's during each run.
    let own = std::process::id();
    let started = Instant::now();
    let sends = records.iter().map(|(key, value)| {
        let producer = producer.clone();
        async move {
            let record = FutureRecord::to("bench.kafka-limit").key(key.as_slice()).payload(value.as_slice());
            producer.send(record, Duration::from_secs(30)).await.is_ok()
        }
    });
    let (acked, ticks) = ticks_during(own, futures::future::join_all(sends)).await;
    let acked = acked.into_iter().filter(|ok| *ok).count();
    let all_at_once = Measured {
        name: "Kafka limit (bare producer, same records)".into(),
        requests: records.len(),
        per_second: records.len() as f64 / started.elapsed().as_secs_f64(),
        cpu_us_per_request: Some(cpu_us(ticks, records.len())),
        errors: records.len() - acked,
        ..Default::default()
    };
    // The same records with as many in flight as the bridge has connections:
    // the batches the bridge's producer sees, so its CPU per record is the
    // Kafka part of the bridge's own.
    let (shaped, ticks) = ticks_during(
        own,
        unpaced(records.len(), cli.concurrency, producing(&producer, "bench.kafka-limit", records.clone())),
    )
    .await;
    let shaped = Measured {
        concurrency: cli.concurrency,
        cpu_us_per_request: Some(cpu_us(ticks, records.len())),
        ..shaped.row(&format!("Kafka limit, {} records in flight", cli.concurrency), records.len())
    };
    // The same records at the bridge's half-peak rate, each acknowledged
    // from its scheduled send: the broker's own latency at that load.
    let half_records: Vec<_> = records.iter().cycle().take(half_count).cloned().collect();
    let (half, ticks) =
        ticks_during(own, paced(half_count, half_rate, producing(&producer, "bench.kafka-limit", half_records))).await;
    let half = Measured {
        cpu_us_per_request: Some(cpu_us(ticks, half_count)),
        ..half.row("Kafka limit at the bridge's half-peak rate (open loop)", half_count)
    };
    Ok(vec![all_at_once, shaped, half])
}

/// Step 3, the HTTP limit: a server that only answers 200, closed loop and
/// at the bridge's half-peak rate.
async fn http_limits(cli: &Cli, half_count: usize, half_rate: f64) -> anyhow::Result<Vec<Measured>> {
    eprintln!("▶ HTTP limit: axum answering 200");
    let http_port = testbed::free_port()?;
    let server = Killed(
        Command::new(std::env::current_exe()?)
            .args(["--http-limit-server", &format!("127.0.0.1:{http_port}")])
            .spawn()?,
    );
    let http_url = format!("http://127.0.0.1:{http_port}/webhooks/stripe");
    wait_http(&http_url).await?;
    let closed =
        measure_server("HTTP limit (axum, answers 200)", &http_url, server.0.id(), cli.requests, cli.concurrency).await;
    // The same open loop as the bridge's half-peak run, against a server
    // that does nothing: the latency the load generator itself adds.
    let bodies = signed_bodies(40_000_000, half_count);
    let baseline = open_loop(&http_url, bodies, half_rate).await;
    Ok(vec![closed, baseline.row("HTTP limit at the bridge's half-peak rate (open loop)", half_count)])
}

async fn python_peer(
    python: &std::path::Path,
    root: &std::path::Path,
    dir: &std::path::Path,
    brokers: &str,
    registry: &schemas::registry::RunningRegistry,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Measured> {
    let subject = "webhooks.stripe.payment_intent.succeeded-value";
    let latest = registry.registry.version(subject, schemas::registry::VersionSpec::Latest, false)?;
    std::fs::write(dir.join("schema.avsc"), latest.schema.as_bytes())?;
    schemas::topics::ensure_topic(brokers, "bench.peer", 3, &[]).await?;
    let peer_port = testbed::free_port()?;
    let peer = KilledGroup::spawn(
        Command::new(python)
            .args(["-m", "uvicorn", "peer:app", "--workers", "2", "--log-level", "warning", "--host", "127.0.0.1"])
            .args(["--port", &peer_port.to_string()])
            .current_dir(root.join("bench"))
            .env("PEER_BROKERS", brokers)
            .env("PEER_TOPIC", "bench.peer")
            .env("PEER_SCHEMA", dir.join("schema.avsc"))
            .env("PEER_SCHEMA_ID", latest.id.to_string())
            .env("PEER_SECRET", SECRET),
    )?;
    let peer_url = format!("http://127.0.0.1:{peer_port}/webhooks/stripe");
    wait_http(&peer_url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(measure_server(
        "Python peer (Starlette, fastavro, confluent-kafka)",
        &peer_url,
        peer.0.id(),
        requests,
        concurrency,
    )
    .await)
}

fn read_records(brokers: &str, topic: &str, max: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(testbed::read_records(brokers, topic, max, Duration::from_secs(20))?
        .into_iter()
        .take(max)
        .map(|m| (m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec()))
        .collect())
}

async fn consumer_bench(
    brokers: &str,
    registry: &str,
    topic: &str,
    events: usize,
) -> anyhow::Result<(usize, Duration)> {
    let name = format!("bench_{}", std::process::id());
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let pool = sqlx::PgPool::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let result = async {
        let records = read_records(brokers, topic, events)?;
        let events = records.len();
        let config = consumers::config::Config::from_toml(&format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopic_pattern = \"^{}$\"\n[registry]\nurl = \"{registry}\"\n[postgres]\nurl = \"{url}\"\n",
            topic.replace('.', "\\\\.")
        ))?;
        let db = consumers::runner::connect(&url).await?;
        let started = Instant::now();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = {
            let db = db.clone();
            tokio::spawn(async move {
                consumers::runner::run(&config, &db, &consumers::sync::Sync, async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        loop {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_events").fetch_one(&db).await?;
            if n as usize >= events {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "only {n} of {events} after 300 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(());
        let _ = runner.await;
        db.close().await;
        anyhow::Ok((events, elapsed))
    }
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await?;
    result
}

fn print_table(results: &[Measured], cli: &Cli) {
    println!(
        "\nmachine: {} cores, {}; load generator on the same machine",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        os()
    );
    println!(
        "{:<54} {:>8} {:>5} {:>9} {:>8} {:>8} {:>11} {:>9} {:>6}",
        "scenario", "requests", "conc", "per s", "p50 ms", "p99 ms", "CPU µs/req", "RSS MiB", "errors"
    );
    for r in results {
        let opt = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into());
        let ms = |v: f64| if v == 0.0 { "-".to_owned() } else { format!("{v:.2}") };
        println!(
            "{:<54} {:>8} {:>5} {:>9.0} {:>8} {:>8} {:>11} {:>9} {:>6}",
            r.name,
            r.requests,
            if r.concurrency == 0 { "-".to_owned() } else { r.concurrency.to_string() },
            r.per_second,
            ms(r.p50_ms),
            ms(r.p99_ms),
            opt(r.cpu_us_per_request, 1),
            opt(r.peak_rss_mib, 1),
            r.errors
        );
    }
    let find = |prefix: &str| results.iter().find(|r| r.name.starts_with(prefix)).map(|r| r.per_second);
    let bridge = find("bridge (").unwrap_or(0.0);
    println!();
    for (label, other) in
        [("Kafka limit", find("Kafka")), ("HTTP limit", find("HTTP")), ("Python peer", find("Python"))]
    {
        match other {
            Some(other) if other > 0.0 => println!("bridge / {label}: {:.2}", bridge / other),
            _ => println!("bridge / {label}: not measured"),
        }
    }
    let limit = find("Kafka").into_iter().chain(find("HTTP")).reduce(f64::min);
    let b = results.iter().find(|r| r.name.starts_with("bridge (")).cloned().unwrap_or_default();
    let half = results.iter().find(|r| r.name.starts_with("bridge at half")).cloned().unwrap_or_default();
    println!("\ntargets (issue 7):");
    if let Some(limit) = limit {
        println!(
            "  throughput ≥ 0.8 × min(Kafka, HTTP) limit: {:.0}/s vs {:.0}/s → {}",
            bridge,
            0.8 * limit,
            verdict(bridge >= 0.8 * limit)
        );
    }
    if let Some(peer) = find("Python") {
        println!("  ≥ 5 × the Python peer: {:.1}× → {}", bridge / peer, verdict(bridge >= 5.0 * peer));
    }
    let cpu = b.cpu_us_per_request.unwrap_or(f64::MAX);
    println!("  ≤ 20 µs CPU per webhook: {cpu:.1} µs → {}", verdict(cpu <= 20.0));
    println!("  p99 ≤ 10 ms at half of peak: {:.2} ms → {}", half.p99_ms, verdict(half.p99_ms <= 10.0));
    let rss = b.peak_rss_mib.unwrap_or(f64::MAX);
    println!("  peak RSS ≤ 64 MiB: {rss:.1} MiB → {}", verdict(rss <= 64.0));
    println!("(requests per run: {}, connections: {})", cli.requests, cli.concurrency);
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn os() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
