//! `consumers`: sync, analytics, report, reconcile.

use clap::{Parser, Subcommand};
use consumers::config::Config;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "consumers", version, about = "Services on the webhook topics")]
struct Cli {
    /// The TOML config file (keys overridable as CONSUMERS_<SECTION>__<KEY>).
    #[arg(long, global = true, default_value = "consumers/consumers.example.toml")]
    config: PathBuf,
    /// Serve Prometheus metrics at GET /metrics on this address (sync, analytics, reconcile).
    #[arg(long, global = true, env = "CONSUMERS_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep PostgreSQL in step with the webhook topics.
    Sync,
    /// Maintain per-minute rollups.
    Analytics,
    /// Print the rollups of the last N minutes as a table.
    Report {
        /// How many minutes back.
        #[arg(long, default_value_t = 60)]
        minutes: i64,
    },
    /// Show one delivery: receipt, outcome, schema, topic, offset, trace id, and which consumers processed it.
    Lookup {
        /// The bridge source name.
        #[arg(long)]
        source: String,
        /// The delivery id (the provider's event id for Stripe, the X-GitHub-Delivery for GitHub, …).
        #[arg(long)]
        delivery_id: String,
        /// The bridge's delivery-log topic.
        #[arg(long, default_value = "_bridge_deliveries")]
        deliveries_topic: String,
    },
    /// Poll providers' event APIs and push what the webhooks missed.
    Reconcile {
        /// Run one round and exit.
        #[arg(long)]
        once: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let service = match cli.command {
        Command::Sync => "webhook-sync",
        Command::Analytics => "webhook-analytics",
        Command::Report { .. } => "webhook-report",
        Command::Lookup { .. } => "webhook-lookup",
        Command::Reconcile { .. } => "webhook-reconcile",
    };
    let _telemetry = bridge::telemetry::init(service)?;
    let config = Config::load(&cli.config)?;
    let pool = consumers::runner::connect(&config.postgres.url).await?;
    match cli.command {
        Command::Sync => run_consumer(&config, &pool, &consumers::sync::Sync, cli.metrics_listen).await,
        Command::Analytics => run_consumer(&config, &pool, &consumers::analytics::Analytics, cli.metrics_listen).await,
        Command::Report { minutes } => {
            print!("{}", consumers::analytics::render(&consumers::analytics::report(&pool, minutes).await?));
            Ok(())
        }
        Command::Lookup { source, delivery_id, deliveries_topic } => {
            match consumers::lookup::lookup(&config.kafka.brokers, &deliveries_topic, &pool, &source, &delivery_id)
                .await?
            {
                Some(found) => {
                    println!("{}", serde_json::to_string_pretty(&found)?);
                    Ok(())
                }
                None => anyhow::bail!("no delivery {delivery_id} of source {source} in {deliveries_topic}"),
            }
        }
        Command::Reconcile { once } => {
            let settings =
                config.reconcile.clone().ok_or_else(|| anyhow::anyhow!("the config has no [reconcile] section"))?;
            let mut bridge_config = bridge::config::Config::load(&settings.bridge_config)?;
            bridge_config.server.listen = "127.0.0.1:0".parse()?;
            let app = bridge::app::App::build(bridge_config, bridge::app::Clock::System).await?;
            let reconciler = std::sync::Arc::new(consumers::reconcile::Reconciler::new(settings, app.clone(), pool));
            if let Some(listen) = cli.metrics_listen {
                let reconciler = reconciler.clone();
                let router = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let reconciler = reconciler.clone();
                        async move { reconciler.render_metrics() }
                    }),
                );
                let listener = schemas::net::listen(listen)?;
                tokio::spawn(async move {
                    let _ = axum::serve(schemas::net::no_delay(listener), router).await;
                });
            }
            if once {
                let report = reconciler.round().await?;
                println!("{report:?}");
            } else {
                reconciler.run(bridge::shutdown_signal()).await?;
            }
            app.flush(std::time::Duration::from_secs(10));
            Ok(())
        }
    }
}

async fn run_consumer<E: consumers::runner::Effect>(
    config: &Config,
    pool: &sqlx::PgPool,
    effect: &E,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(consumers::runner::ConsumerMetrics::default());
    if let Some(listen) = metrics_listen {
        consumers::runner::serve_metrics(listen, effect.name(), metrics.clone()).await?;
    }
    consumers::runner::run_observed(config, pool, effect, &metrics, bridge::shutdown_signal()).await
}
