//! # testbed
//!
//! Starts a real Kafka-API broker for tests: `tansu` 0.6.0 on a free
//! loopback port, with memory storage by default or PostgreSQL storage where
//! durability is under test. The broker process is killed when the
//! [`Broker`] is dropped.
//!
//! [`Database`] gives a test a PostgreSQL database of its own on
//! 127.0.0.1:5432 (trust auth), dropped afterwards. [`DurableStorage`] is
//! the PostgreSQL a broker on durable storage keeps its topics in.
//!
//! [`Broker::start_delayed`] puts a proxy that holds every byte (the
//! [`delay`] module) between the broker and its clients: a round trip like
//! a production cluster's instead of the loopback's.
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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod delay;

/// A running tansu broker.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    port: u16,
    /// Where clients reach it: its own port, or its proxy's.
    advertised: u16,
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

    /// Starts a broker with the given tansu storage URL (`memory://tansu/`,
    /// or a [`DurableStorage::url`] for durable storage).
    pub fn start_with_storage(storage: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        Self::start_on(port, storage)
    }

    /// Starts a broker on a given port (to restart one where clients expect it).
    pub fn start_on(port: u16, storage: &str) -> anyhow::Result<Self> {
        Self::launch(port, port, storage)
    }

    /// Starts a broker with memory storage behind a proxy on the loopback
    /// that holds every byte `delay` each way, served on the caller's tokio
    /// runtime: tansu acknowledges within a millisecond or two, a cluster
    /// replicating `acks=all` across zones takes several, and librdkafka's
    /// producer behaves differently then. The broker tells its clients to
    /// reach it at the proxy, and [`Broker::bootstrap`] is the proxy's
    /// address, so every request crosses it.
    pub async fn start_delayed(delay: Duration) -> anyhow::Result<Self> {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let (advertised, port) = (proxy.local_addr()?.port(), free_port()?);
        tokio::spawn(delay::serve(proxy, ([127, 0, 0, 1], port).into(), delay));
        // The readiness check crosses the proxy, which this runtime serves.
        tokio::task::spawn_blocking(move || Self::launch(port, advertised, "memory://tansu/")).await?
    }

    fn launch(port: u16, advertised: u16, storage: &str) -> anyhow::Result<Self> {
        let (url, advertised_url) = (format!("tcp://127.0.0.1:{port}"), format!("tcp://127.0.0.1:{advertised}"));
        let child = Command::new(tansu_binary()?)
            .args(["--listener-url", &url, "--advertised-listener-url", &advertised_url])
            .args(["--storage-engine", storage, "--cluster-id", "testbed"])
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            // tansu logs to stdout: shown when TANSU_LOG asks for it.
            .stdout(if std::env::var_os("TANSU_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .context("starting tansu")?;
        let mut broker = Self { child, port, advertised, storage: storage.to_owned() };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`: where clients reach it.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
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

/// A PostgreSQL database of its own on 127.0.0.1:5432 (trust auth, user
/// postgres), created through `psql` and dropped (with its connections) when
/// this value is dropped.
#[derive(Debug)]
pub struct Database {
    /// The database's name.
    pub name: String,
    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub url: String,
}

impl Database {
    /// Creates an empty database named `<prefix>_<random>`.
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{:016x}", rand_u64());
        psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(Self { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn psql(database: &str, sql: &str) -> anyhow::Result<()> {
    psql_at(Path::new("psql"), 5432, database, sql)
}

fn psql_at(psql: &Path, port: u16, database: &str, sql: &str) -> anyhow::Result<()> {
    let output = Command::new(psql)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (the PostgreSQL client must be installed and PostgreSQL answer on 127.0.0.1:5432)")?;
    if !output.status.success() {
        bail!("psql failed on database {database}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// tansu 0.6.0's PostgreSQL storage schema (see the file's header).
const TANSU_POSTGRES_SCHEMA: &str = include_str!("../tansu-postgres.sql");

/// Durable storage for a broker: a private PostgreSQL 16 cluster on a free
/// loopback port holding tansu's storage schema, so topics and records
/// survive a broker restart. Stopped and deleted when dropped.
///
/// Why not the machine's PostgreSQL: tansu 0.6.0's PostgreSQL engine sends
/// sub-selects without an alias (`list_latest_offset_committed.sql`), which
/// PostgreSQL accepts only from version 16 on; machines of this kind run 15.
/// `scripts/install-tansu` installs PostgreSQL 16's server binaries from
/// PyPI's `pgserver` wheel; they are looked up in `$TANSU_POSTGRES_BIN`, then
/// in `~/.cache/webhook-bridge/pg16/bin` (`/opt/webhook-bridge/pg16/bin` for
/// root, whose home the postgres user the server then runs as cannot read).
#[derive(Debug)]
pub struct DurableStorage {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

impl DurableStorage {
    /// Initialises and starts the cluster and loads tansu's schema.
    pub fn start() -> anyhow::Result<Self> {
        let as_postgres_user = is_root()?;
        let bin = match std::env::var_os("TANSU_POSTGRES_BIN") {
            Some(bin) => PathBuf::from(bin),
            None if as_postgres_user => PathBuf::from("/opt/webhook-bridge/pg16/bin"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/webhook-bridge/pg16/bin"),
        };
        if !bin.join("postgres").is_file() {
            bail!(
                "PostgreSQL 16 server binaries are not in {}; run scripts/install-tansu (or set TANSU_POSTGRES_BIN)",
                bin.display()
            );
        }
        let data = std::env::temp_dir().join(format!("tansu-pg-{:016x}", rand_u64()));
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        // PostgreSQL refuses to run as root: hand the cluster to the postgres user.
        if as_postgres_user {
            let uid = user_id("postgres").context("running as root, the cluster needs the postgres user")?;
            std::os::unix::fs::chown(&data, Some(uid), None)
                .with_context(|| format!("handing {} to the postgres user", data.display()))?;
        }
        let port = free_port()?;
        let storage = Self { bin, data, port, as_postgres_user };
        let data = storage.data.display().to_string();
        storage.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])?;
        let options = format!("-p {port} -k {data} -c listen_addresses=127.0.0.1");
        storage.run("pg_ctl", &["-D", &data, "-o", &options, "-l", &format!("{data}/server.log"), "-w", "start"])?;
        psql_at(&storage.bin.join("psql"), port, "postgres", TANSU_POSTGRES_SCHEMA)?;
        Ok(storage)
    }

    /// The broker's `--storage-engine` URL.
    pub fn url(&self) -> String {
        // tansu's client speaks TLS when the server offers it; this one does not.
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output =
            command.args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program:?}"))?;
        if !output.status.success() {
            bail!(
                "{} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for DurableStorage {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn is_root() -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    Ok(std::fs::metadata("/proc/self").context("reading /proc/self")?.uid() == 0)
}

fn user_id(name: &str) -> anyhow::Result<u32> {
    let output = Command::new("id").args(["-u", name]).output().context("running id")?;
    if !output.status.success() {
        bail!("there is no user {name}");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
