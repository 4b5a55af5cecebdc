//! `bench --instructions`: what the bridge executes per webhook, counted by
//! callgrind (valgrind) rather than timed. A count is the same whatever
//! else the machine is doing, so two builds can be compared on a machine
//! whose speed swings from one minute to the next, where CPU seconds
//! cannot tell them apart (BENCHMARKS.md, 2026-11-25, ninth session).
//!
//! The bridge runs under valgrind, is warmed up, has its counters zeroed,
//! takes the measured webhooks, and dumps its counts; `callgrind_annotate`
//! then gives each listed function's inclusive count.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The steps reported, by symbol (as `callgrind_annotate` names them), with
/// what each is. Indented names are part of the one above.
const STEPS: &[(&str, &str)] = &[
    ("bridge::app::Source::verify_request", "the signature check (portable SHA-256 under valgrind)"),
    ("bridge::app::App::handle_verified::{{closure}}", "everything after the check:"),
    ("bridge::events::body_json", "  the body read into a Doc"),
    ("schemas::transcode::Transcoder::write", "  the payload's Avro encoding"),
    ("bridge::app::record_headers", "  the record's headers"),
    ("bridge::deliveries::DeliveryLog::admit", "  the dedup check"),
    ("bridge::deliveries::DeliveryLog::record", "  the delivery recorded"),
    ("rd_kafka_producev", "  the record handed to librdkafka"),
    ("rd_kafka_broker_thread_main", "librdkafka's broker threads (batches, LZ4, requests)"),
];

/// The command prefix that runs the bridge under callgrind, its counts
/// written to `dir` and valgrind's own messages to a log there.
pub(crate) fn launcher(dir: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", dir.join("callgrind.out.%p").display()),
        format!("--log-file={}", dir.join("valgrind.%p.log").display()),
    ]
}

/// Whether valgrind's `callgrind_control` and `callgrind_annotate` are here.
pub(crate) fn check_tools() -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control", "callgrind_annotate"] {
        Command::new(tool)
            .arg("--version")
            .output()
            .with_context(|| format!("{tool} not found: --instructions needs valgrind (apt-get install valgrind)"))?;
    }
    Ok(())
}

/// Zeroes the counts of the callgrind-run process `pid`.
pub(crate) fn zero(pid: u32) -> anyhow::Result<()> {
    control(pid, "-z")
}

/// Dumps the counts since they were zeroed and returns the file written.
pub(crate) fn dump(pid: u32, dir: &Path) -> anyhow::Result<PathBuf> {
    control(pid, "-d")?;
    let prefix = format!("callgrind.out.{pid}.");
    std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .with_context(|| format!("callgrind wrote no dump of {pid} in {}", dir.display()))
}

fn control(pid: u32, option: &str) -> anyhow::Result<()> {
    let done = Command::new("callgrind_control").arg(option).arg(pid.to_string()).output()?;
    anyhow::ensure!(
        done.status.success(),
        "callgrind_control {option} {pid} failed: {}",
        String::from_utf8_lossy(&done.stdout).trim()
    );
    Ok(())
}

/// The report of a dump taken over `webhooks` webhooks: instructions per
/// webhook in all, and in each of [`STEPS`].
pub(crate) fn report(dump: &Path, webhooks: usize) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dump)?;
    let total: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals in {}", dump.display()))?;
    let annotated =
        Command::new("callgrind_annotate").args(["--inclusive=yes", "--threshold=100"]).arg(dump).output()?;
    let inclusive = inclusive_counts(&String::from_utf8_lossy(&annotated.stdout));
    let per = |count: u64| count as f64 / webhooks as f64;
    let mut out = format!(
        "instructions per webhook (callgrind, {webhooks} webhooks; librdkafka's vary with its batches, the rest repeats):\n\
         {:>10.0}  the whole bridge, every thread\n",
        per(total)
    );
    for (symbol, what) in STEPS {
        match inclusive.iter().find(|(name, _)| name == symbol) {
            Some((_, count)) => out += &format!("{:>10.0}  {what}\n", per(*count)),
            None => out += &format!("{:>10}  {what} ({symbol} not in the profile: inlined or renamed?)\n", "-"),
        }
    }
    Ok(out)
}

/// `(function, inclusive count)` from `callgrind_annotate --inclusive=yes`
/// lines such as ` 148,290,561 (30.80%)  ???:bridge::app::f [/path/bridge]`.
fn inclusive_counts(annotated: &str) -> Vec<(String, u64)> {
    annotated
        .lines()
        .filter_map(|line| {
            let (count, rest) = line.trim_start().split_once(' ')?;
            let count = count.replace(',', "").parse().ok()?;
            let rest = rest.trim_start();
            let rest = if rest.starts_with('(') { rest.split_once(')')?.1.trim_start() } else { rest };
            let function = rest.split_once(':')?.1;
            let function = function.rsplit_once(" [").map_or(function, |(name, _)| name);
            Some((function.to_owned(), count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inclusive_counts_of_callgrind_annotate() {
        let annotated = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
481,434,763 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
148,290,561 (30.80%)  ???:bridge::app::App::handle_verified::{{closure}} [/work/main/target/release/bridge]
145,949,030 (30.32%)  ???:<schemas::doc::Doc as serde_core::de::Deserialize>::deserialize'2 [/w/bridge]
 56,428,398 (11.72%)  ???:bridge::events::body_json [/work/main/target/release/bridge]
 12,796,000 ( 2.66%)  ./string/../memset-vec-unaligned-erms.S:__memset_avx2_unaligned_erms [/usr/lib/libc.so.6]
";
        let counts = inclusive_counts(annotated);
        let count = |name: &str| counts.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        assert_eq!(count("bridge::app::App::handle_verified::{{closure}}"), Some(148_290_561));
        assert_eq!(count("bridge::events::body_json"), Some(56_428_398));
        assert_eq!(count("<schemas::doc::Doc as serde_core::de::Deserialize>::deserialize'2"), Some(145_949_030));
        assert_eq!(count("__memset_avx2_unaligned_erms"), Some(12_796_000));
        assert_eq!(count("PROGRAM TOTALS"), None);
    }
}
