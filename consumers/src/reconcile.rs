//! **reconcile**: polls providers' event APIs on a schedule and pushes what
//! the webhooks missed through the bridge's internal path
//! ([`bridge::app::App::ingest_internal`]): same typing, schemas, topics
//! and deduplication as webhooks, with `origin = reconciliation` in the
//! envelope. An event already delivered is recognised as a duplicate, and
//! so is its late webhook after a reconciliation.
//!
//! Pollers:
//! - **stripe**: `GET /v1/events?created[gte]=<cursor>&limit=100`, paging
//!   with `starting_after`; the cursor is the newest `created` seen.
//! - **github**: the hook's deliveries API (`GET <hook>/deliveries`, paging
//!   by the `Link: rel="next"` header); each failed delivery's payload is
//!   fetched (`GET <hook>/deliveries/<id>`) and pushed with its original
//!   headers; the cursor is the newest delivery id seen.
//! - **generic**: a cursor-paginated JSON list: `GET <url>?<cursor_param>=<cursor>`,
//!   items at `list_pointer`, ids at `id_pointer`, the next cursor at
//!   `next_cursor_pointer` (else the last item's id).
//!
//! Every request honours `429` with `Retry-After` and backs off
//! exponentially on other failures. Cursors live in PostgreSQL
//! (`reconcile_cursors`), so a restart resumes where the last run ended.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bridge::app::{App, Ingested};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// Reconciliation settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// The bridge config whose sources, catalog and topics events are pushed into.
    pub bridge_config: std::path::PathBuf,
    /// Seconds between polling rounds.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Stripe pollers.
    #[serde(default)]
    pub stripe: Vec<StripePoller>,
    /// GitHub pollers.
    #[serde(default)]
    pub github: Vec<GithubPoller>,
    /// Generic cursor-paginated pollers.
    #[serde(default)]
    pub generic: Vec<GenericPoller>,
}

fn default_interval() -> u64 {
    300
}

/// Stripe's events API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripePoller {
    /// The bridge source the events belong to.
    pub source: String,
    /// API base URL.
    #[serde(default = "stripe_api")]
    pub api_base: String,
    /// Environment variable with the secret API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File with the secret API key (instead of `api_key_env`).
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// How far back the first run looks, seconds.
    #[serde(default = "default_lookback")]
    pub lookback_secs: i64,
}

fn stripe_api() -> String {
    "https://api.stripe.com".into()
}
fn default_lookback() -> i64 {
    3 * 24 * 3600
}

/// A GitHub hook's deliveries API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubPoller {
    /// The bridge source the events belong to.
    pub source: String,
    /// API base URL.
    #[serde(default = "github_api")]
    pub api_base: String,
    /// The hook's path, e.g. `/repos/octo/repo/hooks/1` or `/app/hook`.
    pub hook_path: String,
    /// Environment variable with the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File with the token (instead of `token_env`).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

fn github_api() -> String {
    "https://api.github.com".into()
}

/// A cursor-paginated JSON list of events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericPoller {
    /// The bridge source the events belong to.
    pub source: String,
    /// The list URL.
    pub url: String,
    /// JSON pointer of the list in the answer.
    pub list_pointer: String,
    /// JSON pointer of an item's id.
    pub id_pointer: String,
    /// Query parameter carrying the cursor.
    pub cursor_param: String,
    /// JSON pointer of the next cursor in the answer (else: the last item's id).
    #[serde(default)]
    pub next_cursor_pointer: Option<String>,
    /// Environment variable with a bearer token, if the API needs one.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// What one polling round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Events fetched from the APIs.
    pub fetched: usize,
    /// Pushed and produced (the webhooks had missed them).
    pub recovered: usize,
    /// Already delivered.
    pub duplicates: usize,
    /// Pushed but refused or dead-lettered.
    pub failed: usize,
}

/// The poller: an HTTP client, the bridge's internal path, the cursor store.
#[derive(Debug)]
pub struct Reconciler {
    config: ReconcileConfig,
    app: Arc<App>,
    pool: PgPool,
    http: reqwest::Client,
    totals: std::sync::Mutex<(RoundReport, u64, u64)>,
}

const MAX_ATTEMPTS: u32 = 6;

impl Reconciler {
    /// A reconciler pushing into `app`, keeping cursors in `pool`.
    pub fn new(config: ReconcileConfig, app: Arc<App>, pool: PgPool) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Self { config, app, pool, http, totals: std::sync::Mutex::default() }
    }

    /// Prometheus text: events fetched, recovered, duplicates and failures
    /// over all rounds, and rounds run and failed.
    pub fn render_metrics(&self) -> String {
        let (totals, rounds, failed) = self.totals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        format!(
            "# HELP reconcile_events_total Events fetched from providers' APIs, by result.\n# TYPE reconcile_events_total counter\n\
             reconcile_events_total{{result=\"recovered\"}} {}\nreconcile_events_total{{result=\"duplicate\"}} {}\n\
             reconcile_events_total{{result=\"failed\"}} {}\n\
             # HELP reconcile_rounds_total Polling rounds, by result.\n# TYPE reconcile_rounds_total counter\n\
             reconcile_rounds_total{{result=\"ok\"}} {}\nreconcile_rounds_total{{result=\"failed\"}} {failed}\n",
            totals.recovered,
            totals.duplicates,
            totals.failed,
            rounds - failed
        )
    }

    /// Polls until `stop`, every `interval_secs`.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            match self.round().await {
                Ok(report) => tracing::info!(?report, "reconciliation round done"),
                Err(error) => tracing::warn!(%error, "reconciliation round failed; next round retries"),
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(self.config.interval_secs)) => {}
            }
        }
    }

    /// One round over every poller.
    pub async fn round(&self) -> anyhow::Result<RoundReport> {
        let outcome = self.round_inner().await;
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.1 += 1;
        match &outcome {
            Ok(report) => {
                totals.0.fetched += report.fetched;
                totals.0.recovered += report.recovered;
                totals.0.duplicates += report.duplicates;
                totals.0.failed += report.failed;
            }
            Err(_) => totals.2 += 1,
        }
        outcome
    }

    async fn round_inner(&self) -> anyhow::Result<RoundReport> {
        let mut report = RoundReport::default();
        for poller in &self.config.stripe {
            self.stripe(poller, &mut report).await?;
        }
        for poller in &self.config.github {
            self.github(poller, &mut report).await?;
        }
        for poller in &self.config.generic {
            self.generic(poller, &mut report).await?;
        }
        Ok(report)
    }

    async fn cursor(&self, poller: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT cursor FROM reconcile_cursors WHERE poller = $1")
            .bind(poller)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(c,)| c))
    }

    async fn save_cursor(&self, poller: &str, cursor: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO reconcile_cursors (poller, cursor) VALUES ($1, $2)
             ON CONFLICT (poller) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
        )
        .bind(poller)
        .bind(cursor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// GET with 429/Retry-After and exponential backoff.
    async fn get(&self, url: &str, auth: Option<&str>) -> anyhow::Result<(Value, HeaderMap)> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=MAX_ATTEMPTS {
            let mut request = self
                .http
                .get(url)
                .header("accept", "application/json")
                .header("user-agent", "webhook-bridge-reconcile");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            match request.send().await {
                Ok(response) if response.status().as_u16() == 429 => {
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(backoff)
                        .min(Duration::from_secs(60));
                    tracing::info!(url, attempt, ?wait, "rate limited by the provider; waiting as told");
                    tokio::time::sleep(wait).await;
                }
                Ok(response) if response.status().is_success() => {
                    let headers = response.headers().clone();
                    return Ok((response.json().await?, headers));
                }
                Ok(response) if response.status().is_client_error() => {
                    anyhow::bail!(
                        "{url} answered {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
                Ok(response) => {
                    tracing::warn!(url, attempt, status = %response.status(), "provider error; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(error) => {
                    tracing::warn!(url, attempt, %error, "provider unreachable; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        anyhow::bail!("{url} did not answer successfully after {MAX_ATTEMPTS} attempts")
    }

    async fn push(&self, source: &str, headers: HeaderMap, body: Vec<u8>, report: &mut RoundReport) {
        report.fetched += 1;
        match self.app.ingest_internal_outcome(source, &headers, Bytes::from(body), "reconciliation").await {
            Ok(Ingested::Produced) => report.recovered += 1,
            Ok(Ingested::Duplicate) => report.duplicates += 1,
            Ok(Ingested::NotProduced { status, answer }) => {
                report.failed += 1;
                tracing::warn!(source, %status, %answer, "a reconciled event was not produced");
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(source, %error, "a reconciled event was refused");
            }
        }
    }

    async fn stripe(&self, poller: &StripePoller, report: &mut RoundReport) -> anyhow::Result<()> {
        let name = format!("stripe:{}", poller.source);
        let auth = format!("Bearer {}", credential(&poller.api_key_env, &poller.api_key_file, "Stripe API key")?);
        let since: i64 = match self.cursor(&name).await? {
            Some(cursor) => cursor.parse()?,
            None => chrono::Utc::now().timestamp() - poller.lookback_secs,
        };
        let mut events: Vec<Value> = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let mut url =
                format!("{}/v1/events?limit=100&created%5Bgte%5D={since}", poller.api_base.trim_end_matches('/'));
            if let Some(after) = &starting_after {
                url.push_str(&format!("&starting_after={after}"));
            }
            let (page, _) = self.get(&url, Some(&auth)).await?;
            let data = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
            starting_after = data.last().and_then(|e| e.get("id")).and_then(Value::as_str).map(str::to_owned);
            events.extend(data);
            if !page.get("has_more").and_then(Value::as_bool).unwrap_or(false) || starting_after.is_none() {
                break;
            }
        }
        // Stripe lists newest first; push oldest first so entities evolve in order.
        events.sort_by_key(|e| e.get("created").and_then(Value::as_i64).unwrap_or_default());
        let mut newest = since;
        for event in events {
            newest = newest.max(event.get("created").and_then(Value::as_i64).unwrap_or(since));
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            self.push(&poller.source, headers, serde_json::to_vec(&event)?, report).await;
        }
        self.save_cursor(&name, &newest.to_string()).await
    }

    async fn github(&self, poller: &GithubPoller, report: &mut RoundReport) -> anyhow::Result<()> {
        let name = format!("github:{}:{}", poller.source, poller.hook_path);
        let auth = format!("Bearer {}", credential(&poller.token_env, &poller.token_file, "GitHub token")?);
        let seen_up_to: i64 = self.cursor(&name).await?.and_then(|c| c.parse().ok()).unwrap_or(0);
        let base = format!("{}{}", poller.api_base.trim_end_matches('/'), poller.hook_path);
        let mut url = Some(format!("{base}/deliveries?per_page=100"));
        let mut failed: Vec<Value> = Vec::new();
        let mut newest = seen_up_to;
        'pages: while let Some(page_url) = url.take() {
            let (page, headers) = self.get(&page_url, Some(&auth)).await?;
            for delivery in page.as_array().cloned().unwrap_or_default() {
                let id = delivery.get("id").and_then(Value::as_i64).unwrap_or_default();
                if id <= seen_up_to {
                    break 'pages; // deliveries come newest first
                }
                newest = newest.max(id);
                let ok = delivery.get("status_code").and_then(Value::as_i64).is_some_and(|c| (200..300).contains(&c));
                if !ok && !delivery.get("redelivery").and_then(Value::as_bool).unwrap_or(false) {
                    failed.push(delivery);
                }
            }
            url = next_link(&headers);
        }
        failed.reverse();
        for delivery in failed {
            let id = delivery.get("id").and_then(Value::as_i64).unwrap_or_default();
            let (full, _) = self.get(&format!("{base}/deliveries/{id}"), Some(&auth)).await?;
            let mut headers = HeaderMap::new();
            if let Some(sent) = full.pointer("/request/headers").and_then(Value::as_object) {
                for (name, value) in sent {
                    if let (Ok(name), Some(Ok(value))) = (
                        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                        value.as_str().map(HeaderValue::from_str),
                    ) {
                        headers.insert(name, value);
                    }
                }
            }
            if let Some(guid) = delivery.get("guid").and_then(Value::as_str).and_then(|g| HeaderValue::from_str(g).ok())
            {
                headers.insert("x-github-delivery", guid);
            }
            let payload = full.pointer("/request/payload").cloned().unwrap_or(Value::Null);
            self.push(&poller.source, headers, serde_json::to_vec(&payload)?, report).await;
        }
        self.save_cursor(&name, &newest.to_string()).await
    }

    async fn generic(&self, poller: &GenericPoller, report: &mut RoundReport) -> anyhow::Result<()> {
        let name = format!("generic:{}:{}", poller.source, poller.url);
        let auth = match &poller.token_env {
            Some(var) => {
                Some(format!("Bearer {}", std::env::var(var).map_err(|_| anyhow::anyhow!("{var} is not set"))?))
            }
            None => None,
        };
        let delivery_header = self.app.sources.get(&poller.source).and_then(|s| s.config.delivery_id_header.clone());
        let mut cursor = self.cursor(&name).await?;
        loop {
            let separator = if poller.url.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{}{separator}{}={}", poller.url, poller.cursor_param, c),
                None => poller.url.clone(),
            };
            let (page, _) = self.get(&url, auth.as_deref()).await?;
            let items = page.pointer(&poller.list_pointer).and_then(Value::as_array).cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for item in &items {
                let mut headers = HeaderMap::new();
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                if let (Some(header), Some(id)) = (&delivery_header, item.pointer(&poller.id_pointer).map(id_text))
                    && let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(header.as_bytes()), HeaderValue::from_str(&id))
                {
                    headers.insert(name, value);
                }
                self.push(&poller.source, headers, serde_json::to_vec(item)?, report).await;
            }
            let next = match &poller.next_cursor_pointer {
                Some(pointer) => page.pointer(pointer).filter(|v| !v.is_null()).map(id_text),
                None => items.last().and_then(|i| i.pointer(&poller.id_pointer)).map(id_text),
            };
            match next {
                Some(next) if Some(&next) != cursor.as_ref() => {
                    self.save_cursor(&name, &next).await?;
                    cursor = Some(next);
                }
                _ => break,
            }
        }
        Ok(())
    }
}

/// A credential from an environment variable or a file.
fn credential(env: &Option<String>, file: &Option<std::path::PathBuf>, what: &str) -> anyhow::Result<String> {
    bridge::config::Secret::from_env_or_file(env.as_deref(), file.as_deref(), what)
        .map_err(|message| anyhow::anyhow!(message))?
        .map(|secret| secret.expose().to_owned())
        .ok_or_else(|| anyhow::anyhow!("set api_key_env/token_env or api_key_file/token_file for the {what}"))
}

fn id_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_is_found() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static(
                r#"<https://api.github.com/x?cursor=a>; rel="prev", <https://api.github.com/x?cursor=b>; rel="next""#,
            ),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("https://api.github.com/x?cursor=b"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
