//! A Confluent-compatible Schema Registry whose state lives in a compacted
//! Kafka topic (`_schemas`), written in Confluent's own record format.
//!
//! ## Guarantees
//! - After a restart every id and version is the same: state is rebuilt by
//!   reading the topic from the beginning before the server answers.
//! - Registering a schema whose canonical form is already registered returns
//!   the existing id; the same schema under two subjects shares one id.
//! - Two instances on the same topic never give one id to two schemas. There is
//!   no leader: each write is a claim appended to the single-partition log, and
//!   the log's order decides. Every instance applies records in log order with
//!   the same rules ([`state`]), so the first claim of an id, a schema or a
//!   subject version wins everywhere and later conflicting claims are rejected
//!   by every reader alike. A writer reads the log back up to its own record
//!   and, if its claim lost, catches up and tries again with the next free id
//!   and version. Within one instance writes are serialised by a lock, so
//!   conflicts only arise between instances.
//! - No instance starves another: a writer that sees a claim it did not
//!   write rejected gives way, once, for about two of its own claim round
//!   trips, so the loser's retry is decided first.
//! - Compaction keeps only the last value of a key, so a rejected claim must
//!   never be the last record of its key: a loser whose key had no accepted
//!   value tombstones it before retrying, and any reader that ends up with a
//!   rejected record as the latest of a key re-appends the accepted value.

pub mod api;
pub mod error;
pub mod log;
pub mod state;
pub mod store;

use crate::compat::{self, CompatibilityLevel};
use apache_avro::Schema;
pub use error::RegistryError;
use log::{ConfigValue, DeleteSubjectValue, LogKey, SchemaValue};
use std::sync::Arc;
use std::time::Duration;
use store::LogStore;

/// How many times a write retries after losing a race with another instance.
const WRITE_ATTEMPTS: usize = 12;

/// The longest random pause of a writer that lost a race.
const JITTER_MAX: Duration = Duration::from_millis(30);

/// The longest a writer gives way to another instance's retry.
const GIVE_WAY_MAX: Duration = Duration::from_secs(1);

/// A random pause of up to [`JITTER_MAX`].
fn jitter() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_micros(random % JITTER_MAX.as_micros() as u64)
}

/// What an instance's writes carry from one to the next (under the write lock).
#[derive(Debug)]
struct Writer {
    /// The latest rejected record of the log this writer has answered: its
    /// own lost claim, or another instance's that it gave way to.
    answered_rejection: i64,
    /// How long its last claim took, from deciding it to knowing whether it won.
    last_claim: Duration,
}

impl Writer {
    /// A writer that has answered every rejection up to `answered_rejection`.
    fn new(answered_rejection: i64) -> Self {
        Self { answered_rejection, last_claim: Duration::from_millis(50) }
    }

    /// How long to give way, if `rejected` (the log's latest rejected
    /// record) is one this writer has not answered: another instance's lost
    /// claim. Each rejection is given way to once.
    fn give_way_for(&mut self, rejected: i64) -> Option<Duration> {
        if rejected <= self.answered_rejection {
            return None;
        }
        self.answered_rejection = rejected;
        Some((self.last_claim * 2 + JITTER_MAX).min(GIVE_WAY_MAX))
    }

    /// This writer's own claim at `offset` lost: its rejection needs no giving way.
    fn lost(&mut self, offset: i64) {
        self.answered_rejection = self.answered_rejection.max(offset);
    }
}

/// A version in a request path: a number, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The highest version.
    Latest,
    /// One version.
    Number(u32),
}

impl VersionSpec {
    /// Parses a path segment, as Confluent does: `latest`, `-1`, or 1..=2^31-1.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(Self::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_owned())),
        }
    }
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
    /// Its schema id.
    pub id: u32,
    /// The schema text.
    pub schema: Arc<str>,
}

/// The registry: reads from memory, writes through the Kafka log.
#[derive(Debug)]
pub struct Registry {
    store: LogStore,
    write_lock: tokio::sync::Mutex<Writer>,
    registrations: std::sync::atomic::AtomicU64,
    races_lost: std::sync::atomic::AtomicU64,
    gave_way: std::sync::atomic::AtomicU64,
    claim_delay: Option<std::time::Duration>,
}

/// Parses a schema as submitted, naming what is wrong.
pub fn parse_schema(text: &str) -> Result<Schema, RegistryError> {
    if text.trim().is_empty() {
        return Err(RegistryError::InvalidSchema("the schema is empty".into()));
    }
    Schema::parse_str(text).map_err(|error| RegistryError::InvalidSchema(error.to_string()))
}

impl Registry {
    /// Opens the log on `topic` at `brokers` and replays it.
    pub async fn open(brokers: &str, topic: &str) -> Result<Self, RegistryError> {
        let store = LogStore::open(brokers, topic).await?;
        // Races lost before this instance started are history.
        let writer = Writer::new(store.last_rejected());
        Ok(Self {
            store,
            write_lock: tokio::sync::Mutex::new(writer),
            registrations: Default::default(),
            races_lost: Default::default(),
            gave_way: Default::default(),
            claim_delay: None,
        })
    }

    /// Waits this long between deciding a claim and appending it: fault
    /// injection for tests that must make two instances race.
    pub fn with_claim_delay(mut self, delay: std::time::Duration) -> Self {
        self.claim_delay = Some(delay);
        self
    }

    /// Whether the backing log is readable now (for readiness).
    pub async fn ready(&self) -> bool {
        self.store.catch_up().await.is_ok()
    }

    /// Waits until this instance has read everything in the log (tests use
    /// it before comparing two instances).
    pub async fn catch_up_for_tests(&self) {
        let _ = self.store.catch_up().await;
    }

    /// Distinct schemas, subjects with live versions, and live versions.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let state = self.store.state();
        let live: Vec<usize> = state.subjects.values().map(|s| s.live().count()).filter(|n| *n > 0).collect();
        (state.schemas.len(), live.len(), live.iter().sum())
    }

    /// How many registrations were asked for (of new schemas and of ones
    /// already registered): each one is a write-locked read of the log.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many registrations lost a race to another instance and were retried.
    pub fn races_lost(&self) -> u64 {
        self.races_lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a write waited for another instance's retry after that
    /// instance's claim lost.
    pub fn gave_way(&self) -> u64 {
        self.gave_way.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// If another instance's claim was rejected since this writer last
    /// looked, that instance lost a race (most likely to this one) and is
    /// about to retry: wait about two of this writer's claim round trips, so
    /// that its retry is decided before this writer's next claim. Without
    /// this, the winner, which learns the outcome first, is always first to
    /// claim again, and the loser can keep losing: under a steady stream of
    /// registrations through two instances, one registration lost 12 races
    /// in a row.
    async fn give_way(&self, writer: &mut Writer) -> Result<(), RegistryError> {
        let Some(pause) = writer.give_way_for(self.store.last_rejected()) else {
            return Ok(());
        };
        self.gave_way.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(pause).await;
        self.store.catch_up().await
    }

    /// Flushes pending writes (on shutdown).
    pub fn close(&self) {
        self.store.flush();
    }

    /// Subject names, with soft-deleted ones when `deleted`.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let state = self.store.state();
        state
            .subjects
            .iter()
            .filter(|(_, s)| s.visible(deleted).next().is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A subject's versions.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let state = self.store.state();
        let versions: Vec<u32> =
            state.subjects.get(subject).map(|s| s.visible(deleted).map(|(v, _)| v).collect()).unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// One version of a subject.
    pub fn version(&self, subject: &str, spec: VersionSpec, deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let state = self.store.state();
        let not_found = || RegistryError::SubjectNotFound(subject.to_owned());
        let entry = state.subjects.get(subject).ok_or_else(not_found)?;
        if entry.visible(deleted).next().is_none() {
            return Err(not_found());
        }
        let (version, found) = match spec {
            VersionSpec::Latest => entry.visible(deleted).next_back().ok_or_else(not_found)?,
            VersionSpec::Number(n) => entry
                .versions
                .get(&n)
                .filter(|e| deleted || !e.deleted)
                .map(|e| (n, *e))
                .ok_or(RegistryError::VersionNotFound(n))?,
        };
        let schema = state.schemas.get(&found.id).ok_or_else(|| RegistryError::SchemaNotFound(found.id.to_string()))?;
        Ok(SubjectVersion { subject: subject.to_owned(), version, id: found.id, schema: schema.text.clone() })
    }

    /// The schema text with `id`.
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        self.store
            .state()
            .schemas
            .get(&id)
            .map(|s| s.text.clone())
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// The subject versions that use schema `id`.
    pub fn id_versions(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, RegistryError> {
        let state = self.store.state();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::SchemaNotFound(id.to_string()));
        }
        Ok(state.versions_of(id, deleted))
    }

    /// Finds the version of `subject` whose schema is `text` (canonically equal).
    pub fn lookup(&self, subject: &str, text: &str, deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let canonical = crate::canonical(&parse_schema(text)?);
        let state = self.store.state();
        let entry = state
            .subjects
            .get(subject)
            .filter(|s| s.visible(deleted).next().is_some())
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let id = state
            .ids_by_text
            .get(canonical.as_str())
            .copied()
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("not registered under subject '{subject}'")))?;
        let (version, _) = entry
            .visible(deleted)
            .rev()
            .find(|(_, e)| e.id == id)
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("not registered under subject '{subject}'")))?;
        Ok(SubjectVersion { subject: subject.to_owned(), version, id, schema: canonical.into() })
    }

    /// Registers `text` under `subject` and returns its id.
    pub async fn register(&self, subject: &str, text: &str) -> Result<u32, RegistryError> {
        self.registrations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parsed = parse_schema(text)?;
        let canonical = crate::canonical(&parsed);
        let mut writer = self.write_lock.lock().await;
        for attempt in 1..=WRITE_ATTEMPTS {
            self.store.catch_up().await?;
            self.give_way(&mut writer).await?;
            let decided = std::time::Instant::now();
            let claim = {
                let state = self.store.state();
                let subject_state = state.subjects.get(subject);
                if let Some(existing) = subject_state.and_then(|s| {
                    s.live().find(|(_, e)| state.schemas.get(&e.id).is_some_and(|x| *x.text == *canonical))
                }) {
                    return Ok(existing.1.id);
                }
                let earlier: Vec<(u32, Arc<Schema>)> = subject_state
                    .map(|s| {
                        s.live().filter_map(|(v, e)| state.schemas.get(&e.id).map(|x| (v, x.parsed.clone()))).collect()
                    })
                    .unwrap_or_default();
                let earlier: Vec<(u32, &Schema)> = earlier.iter().map(|(v, s)| (*v, s.as_ref())).collect();
                let clashes = compat::check(state.level_for(subject), &parsed, &earlier);
                if !clashes.is_empty() {
                    let details = clashes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    return Err(RegistryError::Incompatible { subject: subject.to_owned(), details });
                }
                let id = state.ids_by_text.get(canonical.as_str()).copied().unwrap_or(state.max_id + 1);
                let version = subject_state.and_then(|s| s.versions.keys().next_back().copied()).unwrap_or(0) + 1;
                SchemaValue {
                    subject: subject.to_owned(),
                    version,
                    id,
                    schema: canonical.clone(),
                    deleted: false,
                    schema_type: None,
                }
            };
            if let Some(delay) = self.claim_delay {
                tokio::time::sleep(delay).await;
            }
            let offset = self.store.append_schema(&claim).await?;
            self.store.wait_applied(offset).await?;
            writer.last_claim = decided.elapsed();
            let outcome = self.store.state().schema_value(subject, claim.version);
            match outcome {
                Some(won) if won.id == claim.id && won.schema == claim.schema => {
                    return Ok(claim.id);
                }
                Some(_) => {}
                None => {
                    // Our claim lost and its key has no accepted value: remove it
                    // so compaction cannot leave it as the key's last record.
                    self.store.append(&LogKey::schema(subject, claim.version), None).await?;
                }
            }
            writer.lost(offset);
            self.races_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A short random pause, so that two instances that claimed at the
            // same moment fall out of step; the winner gives way meanwhile.
            tokio::time::sleep(jitter()).await;
            tracing::info!(
                subject,
                attempt,
                id = claim.id,
                version = claim.version,
                "lost a registration race to another registry instance; retrying"
            );
        }
        Err(RegistryError::Store(format!(
            "registration of a schema under '{subject}' lost {WRITE_ATTEMPTS} races in a row with other registry instances; try again"
        )))
    }

    /// Checks `text` against one version (`Some`) or, per the subject's level,
    /// all versions (`None`). Returns the reasons it is incompatible (empty: compatible).
    pub fn test_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        text: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let parsed = parse_schema(text)?;
        let state = self.store.state();
        let level = state.level_for(subject);
        let live: Vec<(u32, Arc<Schema>)> = state
            .subjects
            .get(subject)
            .map(|s| s.live().filter_map(|(v, e)| state.schemas.get(&e.id).map(|x| (v, x.parsed.clone()))).collect())
            .unwrap_or_default();
        let against: Vec<(u32, Arc<Schema>)> = match spec {
            None => live,
            Some(VersionSpec::Latest) => live.last().cloned().into_iter().collect(),
            Some(VersionSpec::Number(n)) => {
                if live.is_empty() {
                    return Err(RegistryError::SubjectNotFound(subject.to_owned()));
                }
                vec![live.into_iter().find(|(v, _)| *v == n).ok_or(RegistryError::VersionNotFound(n))?]
            }
        };
        let against: Vec<(u32, &Schema)> = against.iter().map(|(v, s)| (*v, s.as_ref())).collect();
        Ok(compat::check(level, &parsed, &against).iter().map(ToString::to_string).collect())
    }

    /// The level for `subject` (`None`: global). A subject without its own level
    /// is 40408 unless `default_to_global`.
    pub fn config(&self, subject: Option<&str>, default_to_global: bool) -> Result<CompatibilityLevel, RegistryError> {
        let state = self.store.state();
        match subject {
            None => Ok(state.global.unwrap_or_default()),
            Some(subject) => match state.subjects.get(subject).and_then(|s| s.compatibility) {
                Some(level) => Ok(level),
                None if default_to_global => Ok(state.level_for(subject)),
                None => Err(RegistryError::SubjectLevelCompatibilityNotConfigured(subject.to_owned())),
            },
        }
    }

    /// Sets the level for `subject` (`None`: global).
    pub async fn set_config(&self, subject: Option<&str>, level: CompatibilityLevel) -> Result<(), RegistryError> {
        let value = serde_json::to_vec(&ConfigValue { compatibility_level: level })
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        let _write = self.write_lock.lock().await;
        let offset = self.store.append(&LogKey::config(subject), Some(value)).await?;
        self.store.wait_applied(offset).await
    }

    /// Removes a subject's own level and returns what it was.
    pub async fn delete_config(&self, subject: &str) -> Result<CompatibilityLevel, RegistryError> {
        let _write = self.write_lock.lock().await;
        let previous = self.config(Some(subject), false)?;
        let offset = self.store.append(&LogKey::config(Some(subject)), None).await?;
        self.store.wait_applied(offset).await?;
        Ok(previous)
    }

    /// Deletes a subject: soft (versions hidden, ids kept) or, after a soft
    /// delete, permanently. Returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let _write = self.write_lock.lock().await;
        self.store.catch_up().await?;
        let (live, all) = {
            let state = self.store.state();
            let s = state.subjects.get(subject);
            let live: Vec<u32> = s.map(|s| s.live().map(|(v, _)| v).collect()).unwrap_or_default();
            let all: Vec<u32> = s.map(|s| s.versions.keys().copied().collect()).unwrap_or_default();
            (live, all)
        };
        if all.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let mut last = 0;
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            for version in &all {
                self.store.append(&LogKey::schema(subject, *version), None).await?;
            }
            last = self.store.append(&LogKey::delete_subject(subject), None).await?;
        } else {
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
            }
            for version in &live {
                let value = self.store.state().schema_value(subject, *version);
                if let Some(mut value) = value {
                    value.deleted = true;
                    last = self.store.append_schema(&value).await?;
                }
            }
            let marker = DeleteSubjectValue { subject: subject.to_owned(), version: all[all.len() - 1] };
            let marker = serde_json::to_vec(&marker).map_err(|e| RegistryError::Store(e.to_string()))?;
            last = last.max(self.store.append(&LogKey::delete_subject(subject), Some(marker)).await?);
        }
        self.store.wait_applied(last).await?;
        Ok(if permanent { all } else { live })
    }

    /// Deletes one version: soft, or, after a soft delete, permanently.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let _write = self.write_lock.lock().await;
        self.store.catch_up().await?;
        let found = self.version(subject, spec, permanent || matches!(spec, VersionSpec::Number(_)))?;
        let deleted = self
            .store
            .state()
            .subjects
            .get(subject)
            .and_then(|s| s.versions.get(&found.version))
            .is_some_and(|e| e.deleted);
        let offset = if permanent {
            if !deleted {
                return Err(RegistryError::VersionNotSoftDeleted(subject.to_owned(), found.version));
            }
            self.store.append(&LogKey::schema(subject, found.version), None).await?
        } else {
            if deleted {
                return Err(RegistryError::VersionSoftDeleted(subject.to_owned(), found.version));
            }
            let value = SchemaValue {
                subject: subject.to_owned(),
                version: found.version,
                id: found.id,
                schema: found.schema.to_string(),
                deleted: true,
                schema_type: None,
            };
            self.store.append_schema(&value).await?
        };
        self.store.wait_applied(offset).await?;
        Ok(found.version)
    }
}

/// A registry serving on a local socket inside this process: what
/// `schemas serve` runs, and what tests and the dev stack embed.
#[derive(Debug)]
pub struct RunningRegistry {
    /// `http://ADDR`, for clients.
    pub url: String,
    /// The address bound.
    pub addr: std::net::SocketAddr,
    /// The registry itself.
    pub registry: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRegistry {
    /// Opens the log and serves the API on `listen` (port 0: any free port).
    pub async fn start(brokers: &str, topic: &str, listen: std::net::SocketAddr) -> anyhow::Result<Self> {
        Self::serve(Registry::open(brokers, topic).await?, listen).await
    }

    /// Serves an opened registry on `listen`.
    pub async fn serve(registry: Registry, listen: std::net::SocketAddr) -> anyhow::Result<Self> {
        let registry = Arc::new(registry);
        let listener = crate::net::listen(listen)?;
        let addr = listener.local_addr()?;
        let app = api::router(registry.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(crate::net::no_delay(listener), app).await {
                tracing::error!(%error, "schema registry server stopped");
            }
        });
        Ok(Self { url: format!("http://{addr}"), addr, registry, task })
    }

    /// Stops serving (the socket closes; the log stays in Kafka).
    pub fn stop(self) {
        self.task.abort();
        self.registry.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_gives_way_once_to_each_claim_it_did_not_lose_itself() {
        // Rejections up to offset 5 were in the log before the instance started.
        let mut writer = Writer::new(5);
        assert_eq!(writer.give_way_for(5), None);
        writer.last_claim = Duration::from_millis(40);
        // Its own claim at 9 lost: nothing to give way to.
        writer.lost(9);
        assert_eq!(writer.give_way_for(9), None);
        // Another instance's claim at 12 lost: two claim round trips and the loser's longest pause.
        assert_eq!(writer.give_way_for(12), Some(Duration::from_millis(80) + JITTER_MAX));
        assert_eq!(writer.give_way_for(12), None, "once per rejection");
        // A slow claim does not hold the writer back for more than GIVE_WAY_MAX.
        writer.last_claim = Duration::from_secs(3);
        assert_eq!(writer.give_way_for(20), Some(GIVE_WAY_MAX));
    }

    #[test]
    fn the_losers_pause_is_short_and_bounded() {
        assert!((0..200).map(|_| jitter()).all(|pause| pause < JITTER_MAX));
    }
}
