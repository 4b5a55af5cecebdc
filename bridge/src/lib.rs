//! # bridge
//!
//! The webhook ingress. Providers POST to `/webhooks/{source}`; the bridge
//! verifies the signature over the raw body (constant-time, rotating
//! secrets, timestamp window), works out the event type and the schema
//! version, transcodes the JSON into an Avro record (Confluent wire format,
//! id from the schema registry) wrapped in the common envelope, and produces
//! it to the event type's topic with an idempotent `acks=all` producer.
//!
//! **Guarantee:** a 2xx answer means Kafka has acknowledged the record
//! (typed on its topic, or raw on the dead-letter topic with the reason).
//! If the broker does not acknowledge within `server.ack_timeout_ms`, the
//! answer is 503 with `Retry-After`, and the provider's retry is safe: the
//! delivery id is deduplicated. Forged or stale requests are refused with 401,
//! counted, and never produced.
//!
//! Run: `bridge --config bridge/bridge.example.toml`.

pub mod app;
pub mod config;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod metrics;
pub mod replay;
pub mod schema_ids;
pub mod sink;
pub mod telemetry;
pub mod verify;

use anyhow::Context;
use app::{App, Clock};
use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A bridge bound to its socket, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
}

impl Application {
    /// Builds everything from `config` with the system clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::System).await
    }

    /// Builds the shared state ([`App::build`]) and binds the socket.
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let app = App::build(config, clock).await?;
        let listener = schemas::net::listen(listen)
            .with_context(|| format!("binding {listen}; is another process using the port?"))?;
        Ok(Self { listener, app })
    }

    /// The address bound (port 0 in config: the one chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The shared state (tests read metrics through it).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests
    /// and flushes the producer.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.app.clone();
        let prune = {
            let app = app.clone();
            tokio::spawn(async move {
                let mut evicted = app.deliveries.evicted();
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let now_ms = app.clock.now_ms();
                    app.deliveries.prune(now_ms);
                    let total = app.deliveries.evicted();
                    if total > evicted {
                        tracing::warn!(
                            forgotten = total - evicted,
                            max_deliveries = app.deliveries.max_deliveries(),
                            reach_secs = app.deliveries.reach_ms(now_ms) / 1000,
                            window_secs = app.config.dedup.window_secs,
                            "the dedup view is full: deliveries were forgotten before their window ended, and a \
                             provider's retry of one of them would be produced twice; raise dedup.max_deliveries \
                             (about 100 bytes each) or shorten dedup.window_secs"
                        );
                    }
                    evicted = total;
                }
            })
        };
        tracing::info!(listen = %self.local_addr(), sources = app.sources.len(), tls = app.config.server.tls.is_some(), "bridge serving");
        let router = app::router(app.clone());
        match &app.config.server.tls {
            None => axum::serve(schemas::net::no_delay(self.listener), router).with_graceful_shutdown(shutdown).await?,
            Some(tls) => {
                let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file)
                    .await
                    .with_context(|| {
                        format!(
                            "loading the TLS certificate {} and key {}",
                            tls.cert_file.display(),
                            tls.key_file.display()
                        )
                    })?;
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    stopper.graceful_shutdown(Some(Duration::from_secs(30)));
                });
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                    .acceptor(axum_server::accept::NoDelayAcceptor::new());
                axum_server::from_tcp(self.listener.into_std()?)?
                    .acceptor(acceptor)
                    .handle(handle)
                    .serve(router.into_make_service())
                    .await?;
            }
        }
        prune.abort();
        app.flush(Duration::from_secs(10));
        tracing::info!("bridge stopped; producer flushed");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C: what every service of the project stops on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: finishing in-flight work");
}
