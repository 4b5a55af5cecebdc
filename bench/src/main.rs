//! `bench`: measures, in one run on this machine, with the same signed ~2 KB
//! Stripe-style payloads:
//! - the bridge end to end (verify + transcode + produce, acks=all):
//!   throughput, p50/p99 answer latency, CPU per webhook, peak RSS, and p99
//!   at half of its peak rate;
//! - the Kafka limit: a bare rdkafka producer sending the bridge's own Avro
//!   records to the same broker, with the bridge's own producer settings
//!   (`bridge::sink::producer_config`);
//! - the HTTP limit: an axum server that only answers 200;
//! - a do-it-yourself Python receiver (Starlette + uvicorn, hmac, fastavro,
//!   confluent-kafka), if `--python` names an interpreter that has them;
//! - the sync and analytics consumers: events per second into PostgreSQL.
//!
//! Everything compared is started first and measured in rounds: each round
//! runs every closed-loop scenario once, in turn, so that a ratio compares
//! runs seconds apart on a machine whose speed drifts from one minute to
//! the next. It prints one table (each scenario's median over the rounds
//! and its range) with the ratios. Run it through `scripts/bench`,
//! which builds in release mode and installs the Python peer. The load
//! generator runs on the same two cores as what it measures; the table says so.

use anyhow::Context;
use clap::Parser;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod http1;
mod instructions;
mod webhooks;

use webhooks::{SECRET, Webhook};

#[derive(Debug, Parser)]
struct Cli {
    /// The webhooks sent, in every scenario of the run.
    #[arg(long, value_enum, default_value_t = Webhook::Stripe)]
    webhook: Webhook,
    /// Requests per measured run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent connections of the load generator (the bridge and the
    /// Kafka limit are also measured at four times as many).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds of the closed-loop runs. Each round runs every scenario once,
    /// in turn, so the ratios compare runs a few seconds apart on a machine
    /// whose speed drifts; the table gives each scenario's median and range.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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
    /// Measure only the consumers, on `--consumer-events` records the
    /// bridge produces first: a quicker run for trying a consumer change.
    #[arg(long, conflicts_with = "bridge_only")]
    consumers_only: bool,
    /// The bridges' `dedup.max_deliveries` (their default if not given): a
    /// small one shows memory levelling off once the view is full.
    #[arg(long)]
    dedup_max_deliveries: Option<usize>,
    /// The open-loop rate, requests per second, instead of half the
    /// bridge's peak: to compare two builds or settings at the same load.
    #[arg(long)]
    open_loop_rate: Option<f64>,
    /// Hold every byte between the broker and its clients this long each
    /// way (a proxy in this process): a round trip like a production
    /// cluster's instead of tansu's on the loopback.
    #[arg(long)]
    broker_delay_ms: Option<u64>,
    /// Count the bridge's instructions per webhook under callgrind instead
    /// of timing it: one bridge, warmed up, then `--requests` webhooks from
    /// `--concurrency` connections (valgrind runs it about fifty times
    /// slower: 3 000 take about ten seconds). Counts repeat for the same
    /// build where timings swing with the machine: compare builds with this.
    #[arg(long, conflicts_with_all = ["bridge_only", "consumers_only"])]
    instructions: bool,
    /// Run as the HTTP-limit server on this address (used by the bench itself).
    #[arg(long, hide = true)]
    http_limit_server: Option<String>,
}

/// `server.max_in_flight` of the bridge in the overload run, which opens
/// eight times as many connections.
const MAX_IN_FLIGHT: usize = 128;

const BRIDGE: &str = "bridge (verify+transcode+produce, acks=all)";
const KAFKA: &str = "Kafka limit (bare producer, same records)";
const HTTP: &str = "HTTP limit (axum, answers 200)";
const PEER: &str = "Python peer (Starlette, fastavro, confluent-kafka)";
const HALF: &str = "bridge at half of peak (open loop)";

#[derive(Debug, Clone, Default)]
struct Measured {
    name: String,
    /// The round of a closed-loop run (from 1); 0 for a run made once.
    round: usize,
    requests: usize,
    concurrency: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: Option<f64>,
    /// The load generator's own CPU per request (closed-loop HTTP runs).
    generator_cpu_us_per_request: Option<f64>,
    peak_rss_mib: Option<f64>,
    errors: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(listen) = &cli.http_limit_server {
        return http_limit_server(listen);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        // Stopped with Ctrl-C or SIGTERM (a CI timeout), the run is dropped,
        // and with it every process it started (broker, bridges, peer):
        // none is left running to hold its port or load the next run.
        tokio::select! {
            ran = run(cli) => ran,
            () = bridge::shutdown_signal() => anyhow::bail!("interrupted: stopped what the bench had started"),
        }
    })
}

fn http_limit_server(listen: &str) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let app = axum::Router::new().route("/webhooks/{source}", axum::routing::post(|| async { "ok" }));
        // The bridge's accept queue and TCP_NODELAY.
        let address = listen.parse().with_context(|| format!("{listen}: not an ip:port"))?;
        axum::serve(schemas::net::no_delay(schemas::net::listen(address)?), app).await?;
        Ok(())
    })
}

/// Numbers the signed events, so that every delivery of every run is new
/// to the bridge (a repeated id would take its cheap duplicate path).
#[derive(Debug)]
struct Events {
    webhook: Webhook,
    /// This run's start (unix seconds), in every delivery id.
    run: i64,
    next: usize,
}

impl Events {
    fn new(webhook: Webhook) -> Self {
        Self { webhook, run: chrono::Utc::now().timestamp(), next: 0 }
    }

    /// The next `count` webhooks, each signed now (within Stripe's 5-minute tolerance).
    fn take(&mut self, count: usize) -> Arc<Vec<(Vec<u8>, String)>> {
        let first = self.next;
        self.next += count;
        Arc::new((first..first + count).map(|n| self.webhook.signed(n, self.run)).collect())
    }
}

struct Load {
    elapsed: Duration,
    latencies_us: Vec<u64>,
    errors: usize,
    /// Of the errors, answers 503 (refused at once under overload).
    unavailable: usize,
    /// Open loops: when the slow answers were scheduled.
    slow: SlowAnswers,
}

impl Load {
    fn empty() -> Self {
        Self {
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            errors: 0,
            unavailable: 0,
            slow: SlowAnswers::default(),
        }
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

/// Where an open loop's answers over the p99 target fell in its schedule,
/// by windows of 100 ms: a p99 made by one stall (of the broker, of the
/// machine) reads differently from one made by steady queueing.
#[derive(Debug, Default)]
struct SlowAnswers {
    answers: usize,
    /// The number of windows the schedule spans.
    windows: u64,
    /// Per window with slow answers: how many, and the slowest (µs).
    by_window: std::collections::BTreeMap<u64, (usize, u64)>,
}

impl SlowAnswers {
    /// The p99 target of issue 7 at half of peak.
    const SLOW_US: u64 = 10_000;
    const WINDOW_US: u64 = 100_000;

    /// Counts the answer to the request scheduled `scheduled_us` after the start.
    fn add(&mut self, scheduled_us: u64, latency_us: u64) {
        let window = scheduled_us / Self::WINDOW_US;
        self.answers += 1;
        self.windows = self.windows.max(window + 1);
        if latency_us > Self::SLOW_US {
            let (count, slowest) = self.by_window.entry(window).or_default();
            *count += 1;
            *slowest = (*slowest).max(latency_us);
        }
    }

    /// One line: how many answers were slow, in how many windows, and the worst window.
    fn line(&self, name: &str) -> String {
        let slow: usize = self.by_window.values().map(|(count, _)| count).sum();
        let Some((window, (count, slowest))) = self.by_window.iter().max_by_key(|(_, (count, _))| *count) else {
            return format!("{name}: none of {} answers over 10 ms", self.answers);
        };
        format!(
            "{name}: {slow} of {} answers over 10 ms ({:.2} %), in {} of {} windows of 100 ms; the worst, at {:.1} s, held {count} of them ({:.0} %), the slowest {:.1} ms",
            self.answers,
            100.0 * slow as f64 / self.answers.max(1) as f64,
            self.by_window.len(),
            self.windows,
            (window * Self::WINDOW_US) as f64 / 1e6,
            100.0 * *count as f64 / slow as f64,
            *slowest as f64 / 1000.0,
        )
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

/// Sends `bodies` to `url` from `concurrency` connections, as fast as answered.
async fn closed_loop(url: &str, bodies: Arc<Vec<(Vec<u8>, String)>>, concurrency: usize) -> Load {
    unpaced(bodies.len(), concurrency, posting(client(url), bodies)).await
}

/// A load generator's client for one of the bench's own servers (all at `http://127.0.0.1:port/...`).
fn client(url: &str) -> Arc<http1::Client> {
    Arc::new(http1::Client::new(url).expect("the bench's servers listen on http://ip:port"))
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

/// Sends `bodies` at a fixed rate (open loop), measuring each answer from
/// its scheduled start, over `connections` opened before the first (more
/// are opened if that many are all busy).
async fn open_loop(url: &str, bodies: Arc<Vec<(Vec<u8>, String)>>, per_second: f64, connections: usize) -> Load {
    let client = client(url);
    if let Err(error) = client.connect(connections).await {
        eprintln!(
            "  could not open {connections} connections to {url} before the open loop ({error}); opening them on demand"
        );
    }
    paced(bodies.len(), per_second, posting(client, bodies)).await
}

/// `send(i)` for the HTTP loops: posts signed body `i`, the answer's status
/// (0 when there was none).
fn posting(
    client: Arc<http1::Client>,
    bodies: Arc<Vec<(Vec<u8>, String)>>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> + Send + Sync + 'static {
    move |i| {
        let (client, bodies) = (client.clone(), bodies.clone());
        Box::pin(async move {
            let (body, signature) = &bodies[i];
            client.post(body, signature).await
        })
    }
}

/// `send(i)` for the producer loops: produces record `i`, 200 once acknowledged, else 503.
fn producing(
    producer: &FutureProducer,
    topic: &str,
    records: Arc<Vec<(Vec<u8>, Vec<u8>)>>,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> + Send + Sync + 'static {
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
        let scheduled = Duration::from_secs_f64(i as f64 / per_second);
        let at = started + scheduled;
        tokio::time::sleep_until(at).await;
        let sending = send(i);
        tasks.push(tokio::spawn(async move {
            let status = sending.await;
            (scheduled, at.elapsed().as_micros() as u64, status)
        }));
    }
    let mut load = Load::empty();
    for task in tasks {
        if let Ok((scheduled, latency, status)) = task.await {
            load.record(latency, status);
            load.slow.add(scheduled.as_micros() as u64, latency);
        }
    }
    load.elapsed = started.elapsed();
    load.latencies_us.sort_unstable();
    load
}

/// The bridge's `/metrics` text (empty if it does not answer).
async fn scrape(metrics_url: &str) -> String {
    match reqwest::get(metrics_url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// What a bridge holds for deduplication (the `bridge_dedup_*` gauges of its
/// metrics `text`), beside its peak RSS: the part of the RSS that grows with
/// the deliveries seen, up to `dedup.max_deliveries`.
fn dedup_view_line(text: &str, pid: u32, connections: usize) -> String {
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' '))).unwrap_or("?").to_owned()
    };
    let (_, rss_kib) = tree_stats(pid);
    format!(
        "dedup view of the bridge at {connections} connections: {} deliveries held (max_deliveries {}), {} evicted; its peak RSS {:.1} MiB",
        value("bridge_dedup_window_deliveries"),
        value("bridge_dedup_max_deliveries"),
        value("bridge_dedup_evicted_total"),
        rss_kib as f64 / 1024.0
    )
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
    fn parse(text: &str) -> Self {
        Self {
            answer: Self::buckets(text, "bridge_ack_latency_seconds_bucket"),
            broker_ack: Self::buckets(text, "bridge_produce_latency_seconds_bucket"),
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

/// The CPU ticks (user + system) in a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks (user + system) and peak RSS (KiB) of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let ticks = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
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

/// What a thread of the bridge is, by its name (`comm`).
fn thread_group(comm: &str) -> &'static str {
    match comm {
        "tokio-rt-worker" => "tokio workers",
        // rdkafka's "producer polling thread", cut to 15 bytes by the kernel.
        "producer pollin" => "delivery reports",
        comm if comm.starts_with("rdk:broker") => "librdkafka brokers",
        comm if comm.starts_with("rdk:") => "librdkafka main",
        _ => "other",
    }
}

/// CPU ticks of a process's threads (not its children's), by [`thread_group`].
#[derive(Debug, Default)]
struct ThreadTicks(BTreeMap<&'static str, u64>);

impl ThreadTicks {
    fn of(pid: u32) -> Self {
        let mut ticks = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let read = |name: &str| std::fs::read_to_string(task.path().join(name)).ok();
            if let (Some(comm), Some(spent)) = (read("comm"), read("stat").as_deref().and_then(stat_ticks)) {
                *ticks.entry(thread_group(comm.trim())).or_default() += spent;
            }
        }
        Self(ticks)
    }

    /// Adds what was spent between `before` and `after` (a thread that ended meanwhile is not counted).
    fn add_between(&mut self, before: &Self, after: &Self) {
        for (group, spent) in &after.0 {
            *self.0.entry(group).or_default() += spent.saturating_sub(before.0.get(group).copied().unwrap_or(0));
        }
    }

    /// `label`: CPU µs per request of each group, the largest first.
    fn line(&self, label: &str, requests: usize) -> String {
        let mut groups: Vec<(&str, u64)> =
            self.0.iter().filter(|(_, ticks)| **ticks > 0).map(|(group, ticks)| (*group, *ticks)).collect();
        groups.sort_by_key(|(_, ticks)| std::cmp::Reverse(*ticks));
        let parts: Vec<String> =
            groups.iter().map(|(group, ticks)| format!("{group} {:.1}", cpu_us(*ticks, requests))).collect();
        format!("{label}, CPU µs per webhook by thread: {}", parts.join(", "))
    }
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

/// CPU ticks of this process alone: the load generator, the bare producer
/// and the registry, without the children it started (the broker, the
/// bridges, the HTTP-limit server, the peer).
fn own_ticks() -> u64 {
    proc_stats(std::process::id()).map_or(0, |(ticks, _)| ticks)
}

/// Runs `work`; with it, the CPU ticks this process alone spent meanwhile.
async fn own_ticks_during<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = own_ticks();
    let output = work.await;
    (output, own_ticks().saturating_sub(before))
}

/// One closed-loop run of `bodies` against the server whose process tree is `pid`.
async fn measure_server(
    name: &str,
    url: &str,
    pid: u32,
    bodies: Arc<Vec<(Vec<u8>, String)>>,
    concurrency: usize,
) -> Measured {
    let requests = bodies.len();
    let ((load, ticks), generator_ticks) =
        own_ticks_during(ticks_during(pid, closed_loop(url, bodies, concurrency))).await;
    let (_, rss_kib) = tree_stats(pid);
    Measured {
        concurrency,
        cpu_us_per_request: Some(cpu_us(ticks, requests)),
        generator_cpu_us_per_request: Some(cpu_us(generator_ticks, requests)),
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

/// A server under test: its process (killed when this is dropped) and the URL webhooks are posted to.
struct Running<P> {
    process: P,
    url: String,
}

impl<P: Pid> Running<P> {
    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// The process whose tree's CPU and memory are measured.
trait Pid {
    fn pid(&self) -> u32;
}

/// Starts the bridge binary with `config(port)` written to `dir/name.toml`, and waits until it answers;
/// webhooks go to its `source`. `launcher` is a command the binary is run under (valgrind), if any.
async fn start_bridge(
    launcher: &[String],
    binary: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    source: &str,
    config: &dyn Fn(u16) -> String,
) -> anyhow::Result<Running<Killed>> {
    let port = testbed::free_port()?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(port))?;
    let mut command = match launcher.split_first() {
        None => Command::new(binary),
        Some((program, options)) => {
            let mut command = Command::new(program);
            command.args(options).arg(binary);
            command
        }
    };
    let child = command
        .args(["--config"])
        .arg(&path)
        // No per-delivery log line unless asked for (BENCH_BRIDGE_LOG=info, the bridge's default).
        .env("RUST_LOG", std::env::var("BENCH_BRIDGE_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(std::env::var("BENCH_BRIDGE_WORKERS").ok().map(|n| ("TOKIO_WORKER_THREADS", n)))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let bridge = Running { process: Killed(child), url: format!("http://127.0.0.1:{port}/webhooks/{source}") };
    wait_http(&format!("http://127.0.0.1:{port}/healthz")).await?;
    Ok(bridge)
}

/// The run's directory (configs, secret, schema; the callgrind dumps),
/// removed when the run ends, however it ends: done, failed or interrupted.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Killed(Child);
impl Pid for Killed {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}
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
impl Pid for KilledGroup {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}
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
    if cli.instructions {
        instructions::check_tools()?;
    }
    let broker = match cli.broker_delay_ms {
        None => testbed::Broker::start()?,
        Some(ms) => {
            eprintln!("▶ the broker behind a proxy holding every byte {ms} ms each way");
            testbed::Broker::start_delayed(Duration::from_millis(ms)).await?
        }
    };
    let brokers = broker.bootstrap();
    let registry = schemas::registry::RunningRegistry::start(&brokers, "_schemas", "127.0.0.1:0".parse()?).await?;
    let dir = Scratch::create(std::env::temp_dir().join(format!("bench-{}", std::process::id())))?;
    std::fs::write(dir.join("secret"), SECRET)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Each bridge keeps its own delivery log, so none replays or tails the
    // deliveries of another.
    let dedup = cli.dedup_max_deliveries.map(|n| format!("[dedup]\nmax_deliveries = {n}\n")).unwrap_or_default();
    let bridge_config = |port: u16, name: &str, server: &str| {
        format!(
            "{dedup}[server]\nlisten = \"127.0.0.1:{port}\"\n{server}[kafka]\nbrokers = \"{brokers}\"\npartitions = 3\ndeliveries_topic = \"_bench_{name}_deliveries\"\n[registry]\nurl = \"{}\"\n[catalog]\ndir = \"{}\"\n{}",
            registry.url,
            root.join("schemas/catalog").display(),
            Webhook::sources_config(&dir.join("secret")),
        )
    };
    let (topic, source) = (cli.webhook.topic(), cli.webhook.source());
    let (narrow, wide) = (cli.concurrency, cli.concurrency * 4);
    let rounds = cli.rounds.max(1);
    let mut events = Events::new(cli.webhook);

    if cli.instructions {
        eprintln!("▶ the bridge under callgrind: warm-up, then {} webhooks from {narrow} connections", cli.requests);
        let bridge = start_bridge(&instructions::launcher(&dir), &cli.bridge, &dir, "bridge", source, &|port| {
            bridge_config(port, "bridge", "")
        })
        .await?;
        closed_loop(&bridge.url, events.take(WARM_UP), narrow).await;
        instructions::zero(bridge.pid())?;
        let load = closed_loop(&bridge.url, events.take(cli.requests), narrow).await;
        let dump = instructions::dump(bridge.pid(), &dir)?;
        anyhow::ensure!(load.errors == 0, "{} of {} webhooks were not answered 200", load.errors, cli.requests);
        println!("webhooks: {}", cli.webhook.describe());
        print!("{}", instructions::report(&dump, cli.requests)?);
        let kept = root.join("target/callgrind.bridge.out");
        std::fs::copy(&dump, &kept).with_context(|| format!("keeping the profile at {}", kept.display()))?;
        let kept = kept.canonicalize().unwrap_or(kept);
        println!("the whole profile: callgrind_annotate --inclusive=yes {}", kept.display());
        drop(bridge);
        registry.stop();
        return Ok(());
    }

    // Everything measured in the rounds is started first, then measured in
    // turns: a ratio compares runs seconds apart, not minutes.
    eprintln!("▶ starting the bridge (two instances: {narrow} and {wide} connections) and what it is compared with");
    let bridge =
        start_bridge(&[], &cli.bridge, &dir, "bridge", source, &|port| bridge_config(port, "bridge", "")).await?;
    if cli.consumers_only {
        closed_loop(&bridge.url, events.take(cli.consumer_events), narrow).await;
        drop(bridge);
        measure_consumers(&brokers, &registry.url, topic, cli.consumer_events).await;
        registry.stop();
        return Ok(());
    }
    let wide_bridge =
        start_bridge(&[], &cli.bridge, &dir, "wide", source, &|port| bridge_config(port, "wide", "")).await?;
    closed_loop(&bridge.url, events.take(WARM_UP), narrow).await;
    // The wide bridge's warm-up is a restart under load: its first
    // webhooks all at once, their schema already in the registry (the
    // first bridge registered it) but not in this bridge's cache.
    let cold_start = closed_loop(&wide_bridge.url, events.take(WARM_UP), wide).await;
    let limits = match cli.bridge_only {
        true => None,
        false => Some(Limits::start(&cli, &root, &dir, &brokers, &registry, &mut events).await?),
    };

    let mut runs = Vec::new();
    let mut records = Arc::new(Vec::new());
    // Where the bridge's CPU goes at `narrow` connections, all rounds together.
    let mut narrow_threads = ThreadTicks::default();
    for round in 1..=rounds {
        eprintln!("▶ round {round} of {rounds}");
        let threads_before = ThreadTicks::of(bridge.pid());
        let mut ran = vec![measure_server(BRIDGE, &bridge.url, bridge.pid(), events.take(cli.requests), narrow).await];
        narrow_threads.add_between(&threads_before, &ThreadTicks::of(bridge.pid()));
        ran.push(measure_server(BRIDGE, &wide_bridge.url, wide_bridge.pid(), events.take(cli.requests), wide).await);
        if let Some(limits) = &limits {
            if records.is_empty() {
                records = Arc::new(read_records(&brokers, topic, cli.requests)?);
            }
            for depth in [narrow, wide, records.len()] {
                ran.push(limits.kafka(&records, depth).await);
            }
            ran.push(
                measure_server(HTTP, &limits.http.url, limits.http.pid(), events.take(cli.requests), narrow).await,
            );
            if let Some(peer) = &limits.peer {
                ran.push(measure_server(PEER, &peer.url, peer.pid(), events.take(cli.requests), narrow).await);
            }
        }
        runs.extend(ran.into_iter().map(|run| Measured { round, ..run }));
    }

    // Half of the bridge's median peak at `narrow` connections, open loop.
    let half_rate = cli.open_loop_rate.unwrap_or_else(|| {
        median(runs.iter().filter(|r| r.name == BRIDGE && r.concurrency == narrow).map(|r| r.per_second)) / 2.0
    });
    // Ten seconds of it, whatever --requests says: a p99 over a run of two
    // or three seconds missed the broker's slower moments.
    let half_count = ((half_rate * 10.0) as usize).max(1000);
    // Once per round, as the closed loops: a p99 from one run of ten
    // seconds swung by a factor of two from one full run to the next
    // (BENCHMARKS.md, 2026-12-06); the table gives the median of the runs.
    let metrics_url = bridge.url.replace(&format!("/webhooks/{source}"), "/metrics");
    let histograms_before = BridgeHistograms::parse(&scrape(&metrics_url).await);
    let mut half_threads = ThreadTicks::default();
    let mut slow_lines = Vec::new();
    for round in 1..=rounds {
        eprintln!("▶ bridge at half its peak rate ({half_rate:.0}/s), round {round} of {rounds}");
        let of_round = |what: &str| if rounds > 1 { format!("{what}, round {round}") } else { what.to_owned() };
        let threads_before = ThreadTicks::of(bridge.pid());
        let (half, ticks) =
            ticks_during(bridge.pid(), open_loop(&bridge.url, events.take(half_count), half_rate, narrow)).await;
        half_threads.add_between(&threads_before, &ThreadTicks::of(bridge.pid()));
        slow_lines.push(half.slow.line(&of_round("half of peak, the bridge")));
        runs.push(Measured {
            round,
            cpu_us_per_request: Some(cpu_us(ticks, half_count)),
            ..half.row(HALF, half_count)
        });
        if let Some(limits) = &limits {
            // The broker's own latency at that load, each record acknowledged
            // from its scheduled send; then the latency the load generator adds
            // by itself, against a server that does nothing.
            let half_records = Arc::new(records.iter().cycle().take(half_count).cloned().collect());
            let (half, ticks) =
                own_ticks_during(paced(half_count, half_rate, producing(&limits.producer, KAFKA_TOPIC, half_records)))
                    .await;
            slow_lines.push(half.slow.line(&of_round("the Kafka limit at that rate")));
            runs.push(Measured {
                round,
                cpu_us_per_request: Some(cpu_us(ticks, half_count)),
                ..half.row("Kafka limit at the bridge's half-peak rate (open loop)", half_count)
            });
            let baseline = open_loop(&limits.http.url, events.take(half_count), half_rate, narrow).await;
            slow_lines.push(baseline.slow.line(&of_round("the HTTP limit at that rate")));
            runs.push(Measured {
                round,
                ..baseline.row("HTTP limit at the bridge's half-peak rate (open loop)", half_count)
            });
        }
    }
    let thread_lines = [
        narrow_threads.line(&format!("the bridge at {narrow} connections (all rounds)"), cli.requests * rounds),
        half_threads.line("the bridge at half of peak (all rounds)", half_count * rounds),
    ];
    let metrics_after = scrape(&metrics_url).await;
    let half_split = BridgeHistograms::parse(&metrics_after).since(&histograms_before).line();
    let dedup_view = dedup_view_line(&metrics_after, bridge.pid(), narrow);
    drop(limits);
    drop(wide_bridge);

    // Overload: a bridge taking at most MAX_IN_FLIGHT deliveries at once,
    // eight times as many connections; the rest must be refused at once
    // (503) with memory staying bounded.
    let overload_connections = MAX_IN_FLIGHT * 8;
    eprintln!("▶ bridge overloaded: {overload_connections} connections, max_in_flight {MAX_IN_FLIGHT}");
    let overloaded = start_bridge(&[], &cli.bridge, &dir, "overload", source, &|port| {
        bridge_config(port, "overload", &format!("max_in_flight = {MAX_IN_FLIGHT}\n"))
    })
    .await?;
    let overload = closed_loop(&overloaded.url, events.take(cli.requests), overload_connections).await;
    let (_, overload_rss_kib) = tree_stats(overloaded.pid());
    drop(overloaded);
    drop(bridge);

    print_table(&runs, &cli);
    println!("{half_split}");
    for line in slow_lines {
        println!("{line}");
    }
    for line in thread_lines {
        println!("{line}");
    }
    println!("{dedup_view}");
    println!(
        "cold start: the first {WARM_UP} webhooks to a fresh bridge from {wide} connections: answered in {:.0} ms, \
         p50 {:.2} ms, slowest {:.2} ms, {} errors",
        cold_start.elapsed.as_secs_f64() * 1000.0,
        percentile(&cold_start.latencies_us, 0.5),
        percentile(&cold_start.latencies_us, 1.0),
        cold_start.errors
    );
    println!(
        "overload: {} requests from {overload_connections} connections (max_in_flight {MAX_IN_FLIGHT}): {} accepted, \
         {} answered 503 at once, {} other errors; bridge peak RSS {:.1} MiB",
        cli.requests,
        cli.requests - overload.errors,
        overload.unavailable,
        overload.errors - overload.unavailable,
        overload_rss_kib as f64 / 1024.0
    );

    if !cli.bridge_only {
        measure_consumers(&brokers, &registry.url, topic, cli.consumer_events).await;
    }
    registry.stop();
    Ok(())
}

/// Where the bare producer of the Kafka-limit runs sends.
const KAFKA_TOPIC: &str = "bench.kafka-limit";
/// Requests that warm up each server before its first measured run.
const WARM_UP: usize = 500;

/// What the bridge is compared with, started once and measured in turns.
struct Limits {
    /// A bare producer with the bridge's producer settings (in this process).
    producer: FutureProducer,
    /// An axum server that only answers 200.
    http: Running<Killed>,
    /// The do-it-yourself Python receiver, if it started.
    peer: Option<Running<KilledGroup>>,
}

impl Limits {
    async fn start(
        cli: &Cli,
        root: &std::path::Path,
        dir: &std::path::Path,
        brokers: &str,
        registry: &schemas::registry::RunningRegistry,
        events: &mut Events,
    ) -> anyhow::Result<Self> {
        schemas::topics::ensure_topic(brokers, KAFKA_TOPIC, 3, &[]).await?;
        let kafka = bridge::config::KafkaConfig::with_brokers(brokers);
        let ack_timeout = Duration::from_millis(bridge::config::ServerConfig::default().ack_timeout_ms);
        let producer: FutureProducer = bridge::sink::producer_config(&kafka, ack_timeout).create()?;
        let http_port = testbed::free_port()?;
        let http = Running {
            process: Killed(
                Command::new(std::env::current_exe()?)
                    .args(["--http-limit-server", &format!("127.0.0.1:{http_port}")])
                    .spawn()?,
            ),
            url: format!("http://127.0.0.1:{http_port}/webhooks/{}", cli.webhook.source()),
        };
        wait_http(&http.url).await?;
        closed_loop(&http.url, events.take(WARM_UP), cli.concurrency).await;
        let peer = match &cli.python {
            None => None,
            Some(python) => match start_peer(python, root, dir, brokers, registry, cli.webhook).await {
                Ok(peer) => {
                    closed_loop(&peer.url, events.take(WARM_UP), cli.concurrency).await;
                    Some(peer)
                }
                Err(error) => {
                    eprintln!("the Python peer could not be started: {error:#}");
                    None
                }
            },
        };
        Ok(Self { producer, http, peer })
    }

    /// The Kafka limit: the bridge's own records (read back from its topic)
    /// re-sent by the bare producer, `depth` of them in flight at a time. Its
    /// CPU per record is this process's alone during the run (not the
    /// broker's, a child of it).
    async fn kafka(&self, records: &Arc<Vec<(Vec<u8>, Vec<u8>)>>, depth: usize) -> Measured {
        let count = records.len();
        let (load, ticks) =
            own_ticks_during(unpaced(count, depth, producing(&self.producer, KAFKA_TOPIC, records.clone()))).await;
        Measured { concurrency: depth, cpu_us_per_request: Some(cpu_us(ticks, count)), ..load.row(KAFKA, count) }
    }
}

/// The do-it-yourself Python peer: Starlette on uvicorn (2 workers).
async fn start_peer(
    python: &std::path::Path,
    root: &std::path::Path,
    dir: &std::path::Path,
    brokers: &str,
    registry: &schemas::registry::RunningRegistry,
    webhook: Webhook,
) -> anyhow::Result<Running<KilledGroup>> {
    // The schema the bridge registered for these webhooks, encoded with the same id.
    let latest = registry.registry.version(&webhook.subject(), schemas::registry::VersionSpec::Latest, false)?;
    std::fs::write(dir.join("schema.avsc"), latest.schema.as_bytes())?;
    schemas::topics::ensure_topic(brokers, "bench.peer", 3, &[]).await?;
    let peer_port = testbed::free_port()?;
    let peer = Running {
        process: KilledGroup::spawn(
            Command::new(python)
                // uvicorn with TCP_NODELAY on its workers' connections (serve_peer.py).
                .args(["serve_peer.py", "peer:app", "--workers", "2", "--log-level", "warning", "--host", "127.0.0.1"])
                .args(["--port", &peer_port.to_string()])
                .current_dir(root.join("bench"))
                .env("PEER_BROKERS", brokers)
                .env("PEER_TOPIC", "bench.peer")
                .env("PEER_SCHEMA", dir.join("schema.avsc"))
                .env("PEER_SCHEMA_ID", latest.id.to_string())
                .env("PEER_SECRET", SECRET)
                .env("PEER_WEBHOOK", webhook.source()),
        )?,
        url: format!("http://127.0.0.1:{peer_port}/webhooks/{}", webhook.source()),
    };
    wait_http(&peer.url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(peer)
}

fn read_records(brokers: &str, topic: &str, max: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(testbed::read_records(brokers, topic, max, Duration::from_secs(20))?
        .into_iter()
        .take(max)
        .map(|m| (m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec()))
        .collect())
}

/// The sync and analytics consumers, each on `events` of the bridge's
/// records from `topic` into a database of its own: one line each.
async fn measure_consumers(brokers: &str, registry: &str, topic: &str, events: usize) {
    let sync = consumer_bench(brokers, registry, topic, events, consumers::sync::Sync, APPLIED_BY_SYNC).await;
    let analytics =
        consumer_bench(brokers, registry, topic, events, consumers::analytics::Analytics, APPLIED_BY_ANALYTICS).await;
    println!();
    for (name, measured) in [("sync", sync), ("analytics", analytics)] {
        match measured {
            Ok((events, elapsed)) => println!(
                "{name} consumer: {events} events into PostgreSQL in {:.2} s = {:.0} events/s (batches of 500, one transaction each)",
                elapsed.as_secs_f64(),
                events as f64 / elapsed.as_secs_f64()
            ),
            Err(error) => println!("{name} consumer: not measured ({error})"),
        }
    }
}

/// The events the sync consumer has applied: one row each.
const APPLIED_BY_SYNC: &str = "SELECT count(*) FROM webhook_events";
/// The events the analytics consumer has applied: one count each.
const APPLIED_BY_ANALYTICS: &str = "SELECT coalesce(sum(events), 0)::bigint FROM rollup_counts";

/// A consumer's time to apply `events` of the bridge's records from `topic`
/// into a fresh database, from its start until `applied` counts them all.
async fn consumer_bench<E: consumers::runner::Effect + 'static>(
    brokers: &str,
    registry: &str,
    topic: &str,
    events: usize,
    effect: E,
    applied: &'static str,
) -> anyhow::Result<(usize, Duration)> {
    eprintln!("▶ {} consumer: {events} events into PostgreSQL", effect.name());
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
                consumers::runner::run(&config, &db, &effect, async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        loop {
            let (n,): (i64,) = sqlx::query_as(applied).fetch_one(&db).await?;
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

/// A scenario's runs (same name and concurrency): the median of each
/// figure, the range of its throughput.
struct Summary {
    row: Measured,
    runs: usize,
    slowest: f64,
    fastest: f64,
}

fn summarise(runs: &[Measured]) -> Vec<Summary> {
    let mut scenarios: Vec<(&str, usize)> = Vec::new();
    for run in runs {
        if !scenarios.contains(&(run.name.as_str(), run.concurrency)) {
            scenarios.push((run.name.as_str(), run.concurrency));
        }
    }
    scenarios
        .into_iter()
        .map(|(name, concurrency)| {
            let of: Vec<&Measured> = runs.iter().filter(|r| r.name == name && r.concurrency == concurrency).collect();
            let median_of = |figure: fn(&Measured) -> f64| median(of.iter().map(|r| figure(r)));
            // A figure some scenarios lack: the median if every run has it.
            let median_of_all = |figure: fn(&Measured) -> Option<f64>| {
                of.iter().map(|r| figure(r)).collect::<Option<Vec<_>>>().map(|all| median(all.into_iter()))
            };
            let per_second = of.iter().map(|r| r.per_second);
            Summary {
                row: Measured {
                    name: name.to_owned(),
                    round: 0,
                    requests: of[0].requests,
                    concurrency,
                    per_second: median_of(|r| r.per_second),
                    p50_ms: median_of(|r| r.p50_ms),
                    p99_ms: median_of(|r| r.p99_ms),
                    cpu_us_per_request: median_of_all(|r| r.cpu_us_per_request),
                    generator_cpu_us_per_request: median_of_all(|r| r.generator_cpu_us_per_request),
                    peak_rss_mib: of.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max),
                    errors: of.iter().map(|r| r.errors).sum(),
                },
                runs: of.len(),
                slowest: per_second.clone().fold(f64::INFINITY, f64::min),
                fastest: per_second.fold(0.0, f64::max),
            }
        })
        .collect()
}

/// The median (of an even count, the mean of the middle two); 0 when empty.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// The highest throughput among a round's runs of `name`.
fn best(round: &[&Measured], name: &str) -> Option<f64> {
    round.iter().filter(|r| r.name == name).map(|r| r.per_second).reduce(f64::max)
}

/// The throughput of a round's run of `name` at `concurrency`.
fn at(round: &[&Measured], name: &str, concurrency: usize) -> Option<f64> {
    round.iter().find(|r| r.name == name && r.concurrency == concurrency).map(|r| r.per_second)
}

/// "median (rounds: a, b, c)".
fn ratios_line(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "not measured".into();
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!("{:.2} (rounds: {})", median(ratios.iter().copied()), each.join(", "))
}

fn print_table(runs: &[Measured], cli: &Cli) {
    println!(
        "\nmachine: {} cores, {}; load generator on the same machine",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        os()
    );
    println!("webhooks: {}", cli.webhook.describe());
    println!(
        "{:<54} {:>8} {:>5} {:>4} {:>9} {:>13} {:>8} {:>8} {:>11} {:>8} {:>6}",
        "scenario", "requests", "conc", "runs", "per s", "range", "p50 ms", "p99 ms", "CPU µs/req", "RSS MiB", "errors"
    );
    let summaries = summarise(runs);
    for Summary { row: r, runs, slowest, fastest } in &summaries {
        let opt = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into());
        let ms = |v: f64| if v == 0.0 { "-".to_owned() } else { format!("{v:.2}") };
        let concurrency = match r.concurrency {
            0 => "-".to_owned(),
            c if c == r.requests => "all".to_owned(),
            c => c.to_string(),
        };
        println!(
            "{:<54} {:>8} {:>5} {:>4} {:>9.0} {:>13} {:>8} {:>8} {:>11} {:>8} {:>6}",
            r.name,
            r.requests,
            concurrency,
            runs,
            r.per_second,
            if *runs > 1 { format!("{slowest:.0}–{fastest:.0}") } else { "-".into() },
            ms(r.p50_ms),
            ms(r.p99_ms),
            opt(r.cpu_us_per_request, 1),
            opt(r.peak_rss_mib, 1),
            r.errors
        );
    }

    // Ratios within each round, then their median: each compares runs made
    // seconds apart. The bridge's and the Kafka limit's best are each the
    // fastest of their in-flight depths; the peer is compared at the same
    // number of connections.
    let rounds: Vec<Vec<&Measured>> =
        (1..=cli.rounds.max(1)).map(|k| runs.iter().filter(|r| r.round == k).collect()).collect();
    let per_round = |ratio: &dyn Fn(&[&Measured]) -> Option<f64>| -> Vec<f64> {
        rounds.iter().filter_map(|round| ratio(round)).collect()
    };
    let to_kafka = per_round(&|r| Some(best(r, BRIDGE)? / best(r, KAFKA)?));
    let to_http = per_round(&|r| Some(best(r, BRIDGE)? / best(r, HTTP)?));
    // The lower of the two limits' best rates in a round.
    let lower_limit = |r: &[&Measured]| Some(best(r, KAFKA)?.min(best(r, HTTP)?));
    let to_limit = per_round(&|r| Some(best(r, BRIDGE)? / lower_limit(r)?));
    let to_peer = per_round(&|r| Some(at(r, BRIDGE, cli.concurrency)? / at(r, PEER, cli.concurrency)?));
    println!();
    println!("bridge (best) / Kafka limit (best): {}", ratios_line(&to_kafka));
    for concurrency in [cli.concurrency, cli.concurrency * 4] {
        let same = per_round(&|r| Some(at(r, BRIDGE, concurrency)? / at(r, KAFKA, concurrency)?));
        if !same.is_empty() {
            println!("bridge / Kafka limit, both at {concurrency} in flight: {}", ratios_line(&same));
        }
    }
    println!("bridge (best) / HTTP limit: {}", ratios_line(&to_http));
    println!("bridge / Python peer, both at {} connections: {}", cli.concurrency, ratios_line(&to_peer));
    let generator: Vec<String> = summaries
        .iter()
        .filter_map(|s| Some((s, s.row.generator_cpu_us_per_request?)))
        .map(|(s, cpu)| {
            format!("{cpu:.1} against the {} at {}", s.row.name.split(" (").next().unwrap_or(""), s.row.concurrency)
        })
        .collect();
    if !generator.is_empty() {
        println!("load generator (this process, on the same cores), CPU µs per request: {}", generator.join(", "));
    }

    let limit = per_round(&lower_limit);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let limit = (!limit.is_empty()).then(|| median(limit.into_iter()));
    for line in floor_lines(&summaries, cli.concurrency, cores, limit) {
        println!("{line}");
    }

    let find = |name: &str, concurrency: usize| {
        summaries.iter().find(|s| s.row.name == name && (concurrency == 0 || s.row.concurrency == concurrency))
    };
    let bridge = find(BRIDGE, cli.concurrency).map(|s| s.row.clone()).unwrap_or_default();
    let half = find(HALF, 0).map(|s| s.row.clone()).unwrap_or_default();
    let half_each: Vec<String> = runs.iter().filter(|r| r.name == HALF).map(|r| format!("{:.2}", r.p99_ms)).collect();
    println!("\ntargets (issue 7), on the medians:");
    if !to_limit.is_empty() {
        let ratio = median(to_limit.iter().copied());
        println!("  throughput ≥ 0.8 × min(Kafka, HTTP) limit: {ratio:.2} × → {}", verdict(ratio >= 0.8));
    }
    if !to_peer.is_empty() {
        let ratio = median(to_peer.iter().copied());
        println!("  ≥ 5 × the Python peer: {ratio:.2} × → {}", verdict(ratio >= 5.0));
    }
    let cpu = bridge.cpu_us_per_request.unwrap_or(f64::MAX);
    println!("  ≤ 20 µs CPU per webhook: {cpu:.1} µs → {}", verdict(cpu <= 20.0));
    println!(
        "  p99 ≤ 10 ms at half of peak: {:.2} ms (runs: {}) → {}",
        half.p99_ms,
        half_each.join(", "),
        verdict(half.p99_ms <= 10.0)
    );
    let rss = bridge.peak_rss_mib.unwrap_or(f64::MAX);
    println!("  peak RSS ≤ 64 MiB: {rss:.1} MiB → {}", verdict(rss <= 64.0));
    println!(
        "(requests per run: {}, rounds: {}, connections: {} and {})",
        cli.requests,
        cli.rounds.max(1),
        cli.concurrency,
        cli.concurrency * 4
    );
}

/// What the two limits cost by themselves on these cores, from the run's
/// own medians at `concurrency`: the floor under the bridge's CPU per
/// webhook (an HTTP request and an `acks=all` record), and what the
/// throughput target (0.8 × `limit`, the lower limit's best rate) leaves
/// per webhook of the `cores` shared by the bridge, the load generator and
/// the broker. Nothing when the run has not measured the limits.
fn floor_lines(summaries: &[Summary], concurrency: usize, cores: usize, limit: Option<f64>) -> Vec<String> {
    let row = |name: &str| summaries.iter().find(|s| s.row.name == name && s.row.concurrency == concurrency);
    let cpu = |name: &str| row(name).and_then(|s| s.row.cpu_us_per_request);
    let (Some(http), Some(kafka), Some(bridge)) = (cpu(HTTP), cpu(KAFKA), cpu(BRIDGE)) else {
        return Vec::new();
    };
    let floor = http + kafka;
    let mut lines = vec![format!(
        "the limits' own CPU at {concurrency} connections: HTTP {http:.1} µs per request + Kafka {kafka:.1} µs per record = {floor:.1} µs per webhook; the bridge: {bridge:.1} ({:.1} above that floor)",
        bridge - floor
    )];
    let generator = row(BRIDGE).and_then(|s| s.row.generator_cpu_us_per_request);
    if let (Some(limit), Some(generator)) = (limit, generator) {
        let target = 0.8 * limit;
        let budget = cores as f64 * 1e6 / target;
        lines.push(format!(
            "0.8 × the lower limit ({limit:.0}/s) = {target:.0}/s would leave {budget:.1} µs of the {cores} cores per webhook for the bridge, the load generator and the broker together; the limits' floor and the generator ({generator:.1}) take {:.1} of it before the bridge's own work and the broker's",
            floor + generator
        ));
    }
    lines
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, concurrency: usize, cpu: f64, generator: Option<f64>) -> Summary {
        Summary {
            row: Measured {
                name: name.into(),
                concurrency,
                cpu_us_per_request: Some(cpu),
                generator_cpu_us_per_request: generator,
                ..Measured::default()
            },
            runs: 3,
            slowest: 0.0,
            fastest: 0.0,
        }
    }

    #[test]
    fn the_floor_is_the_limits_own_cpu_and_the_target_leaves_the_cores_over_its_rate() {
        let summaries = [
            summary(BRIDGE, 256, 40.0, Some(9.0)),
            summary(BRIDGE, 64, 46.0, Some(9.5)),
            summary(HTTP, 64, 7.0, Some(6.5)),
            summary(KAFKA, 64, 9.5, None),
        ];
        let lines = floor_lines(&summaries, 64, 2, Some(100_000.0));
        assert_eq!(
            lines,
            [
                "the limits' own CPU at 64 connections: HTTP 7.0 µs per request + Kafka 9.5 µs per record = 16.5 µs per webhook; the bridge: 46.0 (29.5 above that floor)",
                // 2 cores / 80 000 per second = 25 µs; 16.5 + 9.5 = 26.
                "0.8 × the lower limit (100000/s) = 80000/s would leave 25.0 µs of the 2 cores per webhook for the bridge, the load generator and the broker together; the limits' floor and the generator (9.5) take 26.0 of it before the bridge's own work and the broker's",
            ]
        );
        assert_eq!(floor_lines(&summaries, 64, 2, None).len(), 1, "no budget without the limits' rates");
        assert!(floor_lines(&summaries[..2], 64, 2, Some(1.0)).is_empty(), "a bridge-only run has no floor");
    }
}
