//! # testbed
//!
//! Starts a real Kafka-API broker for tests: `tansu` 0.6.0 on a free
//! loopback port, with memory storage by default or PostgreSQL storage where
//! durability is under test. The broker process is killed when the
//! [`Broker`] is dropped.
//!
//! The `tansu` binary is looked up in `$TANSU_BIN`, then on `PATH`, then in
//! `~/.cargo/bin`; `scripts/install-tansu` installs it when it is missing.

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    port: u16,
    storage: String,
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Where the tansu binary is.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("tansu")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .context("the tansu broker is not installed; run scripts/install-tansu (or set TANSU_BIN to its path)")
}

impl Broker {
    /// Starts a broker with memory storage.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_storage("memory://tansu/")
    }

    /// Starts a broker with the given tansu storage URL
    /// (`memory://tansu/`, `postgres://postgres@127.0.0.1/db`).
    pub fn start_with_storage(storage: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        Self::start_on(port, storage)
    }

    /// Starts a broker on a given port (to restart one where clients expect it).
    pub fn start_on(port: u16, storage: &str) -> anyhow::Result<Self> {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary()?)
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage, "--cluster-id", "testbed"])
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting tansu")?;
        let mut broker = Self { child, port, storage: storage.to_owned() };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage URL it was started with.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// Kills the broker process (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).set("log_level", "0").create()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited with {status} before accepting connections on port {}", self.port);
            }
            if consumer.fetch_metadata(None, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tansu did not answer metadata requests on port {} within 30 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a topic (tansu 0.6 does not create topics on first use).
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every record of `topic` (all partitions, from the beginning): waits up to
/// `timeout` for the topic to exist and for `count` records, then returns
/// those and any others already there.
pub fn read_records(brokers: &str, topic: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "testbed-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let n = metadata.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()).unwrap_or(0);
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if partitions == 0 {
        bail!("topic {topic} does not exist");
    }
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            out.push(message.detach());
        }
    }
    // Anything beyond `count` that is already there is returned too.
    while let Some(Ok(message)) = consumer.poll(Duration::from_millis(300)) {
        out.push(message.detach());
    }
    Ok(out)
}
