//! `bridge --config <file>`: the webhook ingress.

use clap::Parser;
use std::path::PathBuf;

// Every webhook allocates its JSON, Avro and Kafka buffers; glibc's malloc
// spent a fifth of the bridge's CPU on them under load (perf, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
