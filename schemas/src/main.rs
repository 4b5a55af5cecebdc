//! `schemas`: the registry server and the catalog tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use schemas::catalog::{self, Catalog};
use schemas::client::RegistryClient;
use schemas::registry::{Registry, api};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "schemas", version, about = "Avro schema catalog and a Confluent-compatible Schema Registry on Kafka")]
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
    /// Validate every .avsc in the catalog and check each version against its
    /// predecessors under the subject's compatibility level.
    Check {
        /// The catalog directory.
        #[arg(long, env = "SCHEMAS_CATALOG", default_value = DEFAULT_CATALOG)]
        catalog: PathBuf,
    },
    /// Register the catalog (every version, in order) with a
    /// Confluent-compatible registry. Safe to run again.
    Register {
        /// The registry's base URL.
        #[arg(long, env = "SCHEMAS_REGISTRY")]
        registry: String,
        /// The catalog directory.
        #[arg(long, env = "SCHEMAS_CATALOG", default_value = DEFAULT_CATALOG)]
        catalog: PathBuf,
        /// Topic name template, as configured in the bridge.
        #[arg(long, env = "SCHEMAS_TOPIC_TEMPLATE", default_value = catalog::DEFAULT_TOPIC_TEMPLATE)]
        topic_template: String,
    },
}

/// The catalog shipped in this repository, relative to its root.
const DEFAULT_CATALOG: &str = "schemas/catalog";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { listen, brokers, topic } => serve(listen, &brokers, &topic).await,
        Command::Check { catalog } => check(&catalog),
        Command::Register { registry, catalog, topic_template } => register(&registry, &catalog, &topic_template).await,
    }
}

async fn serve(listen: SocketAddr, brokers: &str, topic: &str) -> anyhow::Result<()> {
    let registry = Arc::new(
        Registry::open(brokers, topic)
            .await
            .with_context(|| format!("opening the registry log '{topic}' on {brokers}"))?,
    );
    let listener = schemas::net::listen(listen)
        .with_context(|| format!("binding {listen}; is another process using the port?"))?;
    tracing::info!(%listen, brokers, topic, "schema registry serving");
    axum::serve(schemas::net::no_delay(listener), api::router(registry.clone()))
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
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn check(dir: &Path) -> anyhow::Result<()> {
    let catalog = Catalog::load(dir)?;
    let problems = catalog.check();
    let versions: usize = catalog.events().map(|e| e.versions.len()).sum();
    if problems.is_empty() {
        println!("{} event types, {versions} schema versions: all valid and compatible", catalog.events().count());
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    anyhow::bail!("{} compatibility problem(s) in {}", problems.len(), dir.display())
}

async fn register(url: &str, dir: &Path, template: &str) -> anyhow::Result<()> {
    let catalog = Catalog::load(dir)?;
    let client = RegistryClient::new(url);
    for event in catalog.events() {
        let subject = catalog::value_subject(&catalog::topic_name(template, &event.source, &event.event));
        client
            .set_compatibility(&subject, event.compatibility)
            .await
            .with_context(|| format!("setting the compatibility of {subject}"))?;
        for version in &event.versions {
            let id = client
                .register(&subject, &version.envelope_text)
                .await
                .with_context(|| format!("registering {} as {subject}", version.path.display()))?;
            println!("{subject} v{} ({}) → id {id}", version.version, version.path.display());
        }
    }
    Ok(())
}
