//! `schemas`: the registry server and the catalog tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use schemas::registry::{Registry, api};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "schemas",
    version,
    about = "Avro schema catalog and a Confluent-compatible Schema Registry on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Schema Registry REST API, storing state in a Kafka topic.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "SCHEMAS_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Kafka bootstrap servers (comma-separated).
        #[arg(long, env = "SCHEMAS_BROKERS")]
        brokers: String,
        /// The compacted topic holding the registry's state.
        #[arg(long, env = "SCHEMAS_TOPIC", default_value = "_schemas")]
        topic: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            brokers,
            topic,
        } => serve(listen, &brokers, &topic).await,
    }
}

async fn serve(listen: SocketAddr, brokers: &str, topic: &str) -> anyhow::Result<()> {
    let registry = Arc::new(
        Registry::open(brokers, topic)
            .await
            .with_context(|| format!("opening the registry log '{topic}' on {brokers}"))?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}; is another process using the port?"))?;
    tracing::info!(%listen, brokers, topic, "schema registry serving");
    axum::serve(listener, api::router(registry.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    registry.close();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
