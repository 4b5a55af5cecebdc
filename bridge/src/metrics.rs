//! Counters served at `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Produced to its topic and acknowledged.
    Accepted,
    /// Seen before within the dedup window; not produced again.
    Duplicate,
    /// Refused: signature, timestamp or header check failed.
    Forged,
    /// Verified but unparseable or untypeable: written to the dead-letter topic.
    DeadLettered,
    /// The broker did not acknowledge in time: answered 503.
    BrokerUnavailable,
    /// The schema registry could not be reached: answered 503.
    RegistryUnavailable,
    /// A provider handshake, answered and not produced.
    Handshake,
    /// The same delivery was already in flight: answered 409.
    InFlight,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Forged => "forged",
            Self::DeadLettered => "dead_lettered",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::Handshake => "handshake",
            Self::InFlight => "in_flight",
        }
    }
}

/// The bridge's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<(String, Outcome), u64>>,
    forged: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    /// Counts one delivery of `source` with `outcome`.
    pub fn delivery(&self, source: &str, outcome: Outcome) {
        *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()).entry((source.to_owned(), outcome)).or_default() +=
            1;
    }

    /// Counts one refused delivery with its reason.
    pub fn forged(&self, source: &str, reason: &'static str) {
        self.delivery(source, Outcome::Forged);
        *self.forged.lock().unwrap_or_else(|e| e.into_inner()).entry((source.to_owned(), reason)).or_default() += 1;
    }

    /// The count for `source` and `outcome`.
    pub fn count(&self, source: &str, outcome: Outcome) -> u64 {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(source.to_owned(), outcome))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP bridge_deliveries_total Webhook deliveries by source and outcome.\n# TYPE bridge_deliveries_total counter\n");
        for ((source, outcome), n) in self.deliveries.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "bridge_deliveries_total{{source=\"{source}\",outcome=\"{}\"}} {n}", outcome.label());
        }
        out.push_str(
            "# HELP bridge_forged_total Refused deliveries by source and reason.\n# TYPE bridge_forged_total counter\n",
        );
        for ((source, reason), n) in self.forged.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "bridge_forged_total{{source=\"{source}\",reason=\"{reason}\"}} {n}");
        }
        out
    }
}
