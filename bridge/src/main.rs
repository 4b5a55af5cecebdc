//! `bridge --config <file>`: the webhook ingress.

use clap::Parser;
use std::path::PathBuf;

// Every webhook allocates its JSON, Avro and Kafka buffers; glibc's malloc
// spent a fifth of the bridge's CPU on them under load. jemalloc and mimalloc
// both cut that; jemalloc kept RSS lower (45 vs 51 MiB at load, 118 vs 132
// MiB with 1 024 connections open), see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "bridge", version, about = "Verify webhooks and produce them to Kafka as Avro records")]
struct Cli {
    /// The TOML config file (keys overridable as BRIDGE_<SECTION>__<KEY>).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = bridge::telemetry::init("webhook-bridge")?;
    let cli = Cli::parse();
    let config = bridge::config::Config::load(&cli.config)?;
    let application = bridge::Application::build(config).await?;
    application.run_until_stopped(bridge::shutdown_signal()).await
}
