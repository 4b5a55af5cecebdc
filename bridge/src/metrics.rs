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
    /// Too many deliveries in flight: answered 503 at once.
    Overloaded,
    /// Over the source's rate limit: answered 429.
    RateLimited,
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
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One labelled series: cumulative bucket counts, sum, count.
#[derive(Debug, Default)]
struct Series {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A Prometheus histogram per label value.
#[derive(Debug, Default)]
pub struct Histogram {
    series: Mutex<BTreeMap<String, Series>>,
}

impl Histogram {
    /// Records one observation (seconds) under `label`.
    pub fn observe(&self, label: &str, seconds: f64) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if !series.contains_key(label) {
            series.insert(label.to_owned(), Series { buckets: vec![0; LATENCY_BUCKETS.len()], ..Series::default() });
        }
        let Some(entry) = series.get_mut(label) else { return };
        for (bucket, bound) in entry.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        entry.sum += seconds;
        entry.count += 1;
    }

    /// Appends the exposition of `name`, with `label_name` for the series.
    pub fn render(&self, out: &mut String, name: &str, help: &str, label_name: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (label, Series { buckets, sum, count }) in self.series.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (bucket, bound) in buckets.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{{label_name}=\"{label}\",le=\"{bound}\"}} {bucket}");
            }
            let _ = writeln!(out, "{name}_bucket{{{label_name}=\"{label}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{label_name}=\"{label}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{{label_name}=\"{label}\"}} {count}");
        }
    }
}

/// The bridge's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<String, BTreeMap<Outcome, u64>>>,
    forged: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Receipt to answer, per source.
    pub ack_latency: Histogram,
    /// Produce to broker acknowledgement, per topic.
    pub produce_latency: Histogram,
}

impl Metrics {
    /// Counts one delivery of `source` with `outcome`.
    pub fn delivery(&self, source: &str, outcome: Outcome) {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        match deliveries.get_mut(source) {
            Some(outcomes) => *outcomes.entry(outcome).or_default() += 1,
            None => {
                deliveries.insert(source.to_owned(), BTreeMap::from([(outcome, 1)]));
            }
        }
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
            .get(source)
            .and_then(|outcomes| outcomes.get(&outcome).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP bridge_deliveries_total Webhook deliveries by source and outcome.\n# TYPE bridge_deliveries_total counter\n");
        for (source, outcomes) in self.deliveries.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (outcome, n) in outcomes {
                let _ =
                    writeln!(out, "bridge_deliveries_total{{source=\"{source}\",outcome=\"{}\"}} {n}", outcome.label());
            }
        }
        out.push_str(
            "# HELP bridge_forged_total Refused deliveries by source and reason.\n# TYPE bridge_forged_total counter\n",
        );
        for ((source, reason), n) in self.forged.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "bridge_forged_total{{source=\"{source}\",reason=\"{reason}\"}} {n}");
        }
        self.ack_latency.render(
            &mut out,
            "bridge_ack_latency_seconds",
            "From receipt of a webhook to the answer.",
            "source",
        );
        self.produce_latency.render(
            &mut out,
            "bridge_produce_latency_seconds",
            "From produce to the broker's acknowledgement.",
            "topic",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::default();
        h.observe("stripe", 0.003);
        h.observe("stripe", 0.2);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help", "source");
        assert!(out.contains("x_seconds_bucket{source=\"stripe\",le=\"0.002\"} 0"), "{out}");
        assert!(out.contains("x_seconds_bucket{source=\"stripe\",le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("x_seconds_bucket{source=\"stripe\",le=\"0.25\"} 2"), "{out}");
        assert!(out.contains("x_seconds_count{source=\"stripe\"} 2"), "{out}");
    }
}
