//! `strata bench produce|consume|e2e`: a load tool over the Kafka protocol
//! (Strata's own client), so it runs against any Kafka-compatible broker and
//! users can compare brokers side by side. Reports records/s, MB/s and
//! latency percentiles (HdrHistogram), as text or `--json`, with a progress
//! bar on stderr while running.
//!
//! Invariant: every load is bounded — by a record count, a duration, or both
//! (whichever ends first) — and consumers also by a hard time limit and,
//! counting records, by `--idle-timeout` without one; what a load makes up
//! front is bounded too (a produce batch by `--batch-bytes`), and e2e's
//! producer stops a second after its schedule's end.

mod consume;
mod produce;

use super::{error_name, s};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_kafka::client::KafkaClient;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Args, Clone)]
struct Common {
    /// A broker of the cluster to measure (HOST:PORT), Strata or any other
    /// Kafka-compatible one.
    #[arg(long)]
    bootstrap: String,
    /// The topic written or read.
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    /// Partitions (the topic is created with this many if missing).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// How long a load runs: `--records`, `--duration`, or both (whichever ends
/// first); 1,000,000 records when neither is given.
#[derive(Args, Clone, Copy)]
struct Length {
    /// Records in total (across partitions).
    #[arg(long)]
    records: Option<u64>,
    /// Seconds to run.
    #[arg(long)]
    duration: Option<f64>,
}

impl Length {
    fn budget(self) -> anyhow::Result<Budget> {
        let duration = match self.duration {
            Some(d) if !(d.is_finite() && d > 0.0) => {
                bail!("--duration must be a positive number of seconds, got {d}")
            }
            Some(d) => Some(Duration::from_secs_f64(d)),
            None => None,
        };
        let records = match (self.records, duration) {
            (Some(0), _) => bail!("--records must be at least 1"),
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => 1_000_000,
        };
        Ok(Budget { records, duration })
    }
}

/// The resolved [`Length`]: `records` is `u64::MAX` when only a duration bounds the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    records: u64,
    duration: Option<Duration>,
}

impl Budget {
    /// How far along the run is, from 0 to 1.
    fn fraction(&self, done: u64, elapsed: Duration) -> f64 {
        let by_count = if self.records == u64::MAX {
            0.0
        } else {
            done as f64 / self.records.max(1) as f64
        };
        let by_time = self
            .duration
            .map_or(0.0, |d| elapsed.as_secs_f64() / d.as_secs_f64().max(1e-9));
        by_count.max(by_time).min(1.0)
    }

    /// The instant after which no more records are sent.
    fn end(&self, start: Instant) -> Option<Instant> {
        self.duration.map(|d| start + d)
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Produce records in batches, pipelined, one connection per partition
    /// leader. Latency is per record, from its creation to its acknowledgement.
    Produce(produce::ProduceArgs),
    /// Read records from the start of every partition, one connection each.
    Consume(consume::ConsumeArgs),
    /// One record per request at `--rate` for `--seconds`, to partition 0;
    /// latency from send to fetch (10 ms fetch wait).
    E2e(consume::E2eArgs),
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

async fn ensure_topic(c: &mut KafkaClient, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(topic.to_string()));
    t.num_partitions = partitions;
    t.replication_factor = -1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let resp = c.call(req, 7).await?;
    match resp.topics.first().map(|t| t.error_code) {
        Some(0) | Some(36) => Ok(()), // created, or already there
        Some(code) => bail!("cannot create topic {topic}: {}", error_name(code)),
        None => bail!("no answer for topic {topic}"),
    }
}

struct Report {
    kind: &'static str,
    records: u64,
    bytes: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
    /// The options the run used, echoed in the JSON report.
    config: serde_json::Value,
}

impl Report {
    fn print(&self, json: bool) {
        let rps = self.records as f64 / self.seconds.max(1e-9);
        let mbps = self.bytes as f64 / 1e6 / self.seconds.max(1e-9);
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        if json {
            let v = serde_json::json!({
                "test": self.kind, "records": self.records, "bytes": self.bytes,
                "seconds": self.seconds, "records_per_sec": rps, "mb_per_sec": mbps,
                "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "p999": q(0.999),
                               "max": self.latency_us.max() as f64 / 1000.0,
                               "samples": self.latency_us.len()},
                "config": self.config,
            });
            println!("{v}");
        } else {
            println!(
                "{}: {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s",
                self.kind,
                self.records,
                self.bytes as f64 / 1e6,
                self.seconds,
                rps,
                mbps
            );
            println!(
                "latency ms: p50 {:.3} p95 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ({} samples)",
                q(0.5),
                q(0.95),
                q(0.99),
                q(0.999),
                self.latency_us.max() as f64 / 1000.0,
                self.latency_us.len()
            );
        }
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("cannot build a histogram")
}

/// The leader address of each of `partitions` partitions (benchmarks talk to
/// leaders directly, so they work against a cluster, not only one broker).
async fn leader_addrs(common: &Common, partitions: i32) -> anyhow::Result<Vec<String>> {
    let mut routes = super::route::Routes::connect(&common.bootstrap).await?;
    // An existing topic may have fewer partitions than asked for: use those.
    let existing = routes.refresh(&common.topic).await?;
    if existing < 1 || partitions < 1 {
        bail!("topic {} has no partitions to benchmark", common.topic);
    }
    (0..partitions.min(existing))
        .map(|p| routes.leader_addr(&common.topic, p))
        .collect()
}

/// Waits for every task and merges their latency histograms.
async fn merge(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>>,
    what: &str,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = histogram()?;
    for t in tasks {
        h.add(t.await.with_context(|| format!("{what} task failed"))??)
            .context("histogram")?;
    }
    Ok(h)
}

/// Prints a progress bar on stderr every second until the budget is spent.
fn progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    budget: Budget,
) -> tokio::task::JoinHandle<()> {
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let d = done.load(Ordering::Relaxed);
            let f = budget.fraction(d, start.elapsed());
            let filled = (f * 30.0) as usize;
            eprintln!(
                "{label} [{}{}] {d} records, {:.0} s",
                "#".repeat(filled),
                ".".repeat(30 - filled.min(30)),
                start.elapsed().as_secs_f64()
            );
            if f >= 1.0 {
                return;
            }
        }
    })
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.cmd {
        BenchCmd::Produce(args) => produce::run(args).await,
        BenchCmd::Consume(args) => consume::run(args).await,
        BenchCmd::E2e(args) => consume::run_e2e(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_defaults_and_bounds() {
        let b = Length {
            records: None,
            duration: None,
        }
        .budget()
        .unwrap();
        assert_eq!((b.records, b.duration), (1_000_000, None));
        let b = Length {
            records: None,
            duration: Some(2.0),
        }
        .budget()
        .unwrap();
        assert_eq!(b.records, u64::MAX);
        assert!((b.fraction(5, Duration::from_secs(1)) - 0.5).abs() < 1e-9);
        for bad in [Some(0.0), Some(-1.0), Some(f64::NAN)] {
            assert!(Length {
                records: None,
                duration: bad
            }
            .budget()
            .is_err());
        }
        assert!(Length {
            records: Some(0),
            duration: None
        }
        .budget()
        .is_err());
        let b = Length {
            records: Some(10),
            duration: Some(100.0),
        }
        .budget()
        .unwrap();
        assert_eq!(b.fraction(5, Duration::from_secs(1)), 0.5);
        assert_eq!(b.fraction(50, Duration::from_secs(1)), 1.0);
    }
}
