//! `bridge-replay --config <file>`: replay the dead-letter topic through the
//! bridge (after a new schema version or a config fix), with a progress bar.
//! Repaired records go to their topics; the rest stay on the dead-letter topic.

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "bridge-replay", version, about = "Replay the bridge's dead-letter topic")]
struct Cli {
    /// The bridge's TOML config (same sources, catalog and topics).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let mut config = bridge::config::Config::load(&cli.config)?;
    config.server.listen = "127.0.0.1:0".parse()?;
    let app = bridge::app::App::build(config, bridge::app::Clock::System).await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} dead letters ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = bridge::replay::replay(&app, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish();
    app.flush(std::time::Duration::from_secs(10));
    println!(
        "read {}, repaired {}, already repaired {}, still unusable {} (left on the dead-letter topic), skipped {}",
        report.read, report.repaired, report.already_repaired, report.still_unusable, report.skipped
    );
    Ok(())
}
