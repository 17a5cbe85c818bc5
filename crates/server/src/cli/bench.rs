//! `strata bench produce|consume|e2e`: a load tool over the Kafka protocol
//! (Strata's own client), so it runs against any Kafka-compatible broker.
//! Reports records/s, MB/s and latency percentiles (HdrHistogram), as text or
//! `--json`, with a progress line on stderr while running. Every loop is
//! bounded by a record count or a duration.

use super::{compression, connect, encode_batch, error_name, now_ms, record, s, send_produce};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
use kafka_protocol::records::Compression;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_kafka::client::KafkaClient;
use strata_record::BatchIter;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long)]
    bootstrap: String,
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

#[derive(Subcommand)]
enum BenchCmd {
    /// Produce `--records` records in batches, one connection per partition.
    Produce {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Records per batch (client-side batching).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        acks: i16,
        /// none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: String,
    },
    /// Read `--records` records from the start of every partition.
    Consume {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// One record per request at `--rate` for `--seconds`; latency from
    /// send to fetch (10 ms fetch wait).
    E2e {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn batch(n: usize, size: usize, codec: Compression) -> anyhow::Result<Bytes> {
    let value = Bytes::from(vec![b'x'; size]);
    let ts = now_ms();
    let recs: Vec<_> = (0..n)
        .map(|i| record(None, value.clone(), ts, i as i64))
        .collect();
    encode_batch(&recs, codec)
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

async fn produce_one(
    c: &mut KafkaClient,
    topic: &str,
    p: i32,
    records: Bytes,
    acks: i16,
) -> anyhow::Result<()> {
    let mut td = TopicProduceData::default();
    td.name = TopicName(s(topic.to_string()));
    td.partition_data = vec![PartitionProduceData::default()
        .with_index(p)
        .with_records(Some(records))];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    send_produce(c, req).await
}

/// Fetches from `offset`; returns (next offset, records, bytes, values).
async fn fetch_once(
    c: &mut KafkaClient,
    topic: &str,
    p: i32,
    offset: i64,
    wait_ms: i32,
) -> anyhow::Result<(i64, u64, u64, Vec<Bytes>)> {
    let req = super::fetch_request(topic, [(p, offset)], 8 << 20, wait_ms);
    let resp = c.call(req, 11).await?;
    let mut next = offset;
    let (mut n, mut bytes, mut values) = (0u64, 0u64, Vec::new());
    for tr in resp.responses {
        for pd in tr.partitions {
            if pd.error_code != 0 {
                bail!("fetch {topic}-{p}: {}", error_name(pd.error_code));
            }
            let Some(data) = pd.records else { continue };
            bytes += data.len() as u64;
            for (at, h) in BatchIter::new(&data) {
                if h.last_offset() < offset {
                    continue;
                }
                n += (h.next_offset() - h.base_offset.max(offset)) as u64;
                next = next.max(h.next_offset());
                if wait_ms > 0 {
                    let mut b = data.slice(at..at + h.total_size());
                    if let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut b) {
                        values.extend(set.records.into_iter().filter_map(|r| r.value));
                    }
                }
            }
        }
    }
    Ok((next, n, bytes, values))
}

struct Report {
    kind: &'static str,
    records: u64,
    bytes: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
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

/// Prints a progress bar on stderr every second until `done` reaches `total`.
fn progress(label: &'static str, done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let d = done.load(Ordering::Relaxed).min(total);
            let filled = (d * 30 / total.max(1)) as usize;
            eprintln!(
                "{label} [{}{}] {d}/{total}",
                "#".repeat(filled),
                ".".repeat(30 - filled)
            );
            if d >= total {
                return;
            }
        }
    })
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.cmd {
        BenchCmd::Produce {
            common,
            records,
            batch: per_batch,
            acks,
            compression: codec,
        } => {
            let codec = compression(&codec)?;
            ensure_topic(
                &mut connect(&common.bootstrap).await?,
                &common.topic,
                common.partitions,
            )
            .await?;
            let leaders = leader_addrs(&common, common.partitions).await?;
            let parts = leaders.len() as i32;
            let per_batch = per_batch.max(1);
            let payload = batch(per_batch, common.size, codec)?;
            let batches = records.div_ceil(per_batch as u64);
            let done = Arc::new(AtomicU64::new(0));
            let bar = progress("produce", done.clone(), records);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for p in 0..parts {
                let (addr, payload, done, topic) = (
                    leaders[p as usize].clone(),
                    payload.clone(),
                    done.clone(),
                    common.topic.clone(),
                );
                let mine = batches / parts as u64 + u64::from((p as u64) < batches % parts as u64);
                tasks.push(tokio::spawn(async move {
                    let mut client = connect(&addr).await?;
                    let mut h = histogram()?;
                    for _ in 0..mine {
                        let t = Instant::now();
                        produce_one(&mut client, &topic, p, payload.clone(), acks).await?;
                        let _ = h.record(t.elapsed().as_micros() as u64);
                        done.fetch_add(per_batch as u64, Ordering::Relaxed);
                    }
                    Ok::<_, anyhow::Error>(h)
                }));
            }
            let h = merge(tasks, "producer").await?;
            bar.abort();
            let sent = batches * per_batch as u64;
            Report {
                kind: "produce",
                records: sent,
                bytes: sent * common.size as u64,
                seconds: start.elapsed().as_secs_f64(),
                latency_us: h,
            }
            .print(common.json);
        }
        BenchCmd::Consume { common, records } => {
            let done = Arc::new(AtomicU64::new(0));
            let bytes = Arc::new(AtomicU64::new(0));
            let bar = progress("consume", done.clone(), records);
            let start = Instant::now();
            let deadline = start + Duration::from_secs(600);
            let leaders = leader_addrs(&common, common.partitions).await?;
            let mut tasks = Vec::new();
            for p in 0..leaders.len() as i32 {
                let (c, done, bytes) = (common.clone(), done.clone(), bytes.clone());
                let addr = leaders[p as usize].clone();
                tasks.push(tokio::spawn(async move {
                    let mut client = connect(&addr).await?;
                    let mut h = histogram()?;
                    let mut offset = 0;
                    while done.load(Ordering::Relaxed) < records && Instant::now() < deadline {
                        let t = Instant::now();
                        let (next, n, b, _) =
                            fetch_once(&mut client, &c.topic, p, offset, 100).await?;
                        let _ = h.record(t.elapsed().as_micros() as u64);
                        offset = next;
                        done.fetch_add(n, Ordering::Relaxed);
                        bytes.fetch_add(b, Ordering::Relaxed);
                    }
                    Ok::<_, anyhow::Error>(h)
                }));
            }
            let h = merge(tasks, "consumer").await?;
            bar.abort();
            let got = done.load(Ordering::Relaxed);
            if got < records {
                bail!("consumed only {got} of {records} records before the 600 s limit");
            }
            Report {
                kind: "consume",
                records: got,
                bytes: bytes.load(Ordering::Relaxed),
                seconds: start.elapsed().as_secs_f64(),
                latency_us: h,
            }
            .print(common.json);
        }
        BenchCmd::E2e {
            common,
            rate,
            seconds,
        } => {
            ensure_topic(&mut connect(&common.bootstrap).await?, &common.topic, 1).await?;
            let total = rate.max(1) * seconds.max(1);
            // Start at the end of the partition: only this run's records count.
            let mut routes = super::route::Routes::connect(&common.bootstrap).await?;
            routes.refresh(&common.topic).await?;
            let leader = routes.leader_addr(&common.topic, 0)?;
            let mut producer = connect(&leader).await?;
            let mut consumer = connect(&leader).await?;
            let ends = super::topic::offsets(&mut routes, &common.topic, 1).await?;
            let mut offset = ends.first().map_or(0, |(_, _, end)| (*end).max(0));
            let topic = common.topic.clone();
            let size = common.size.max(16);
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let send = tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..total {
                    tokio::time::sleep_until((start + interval * i as u32).into()).await;
                    let mut v = vec![b'x'; size];
                    v[..8].copy_from_slice(&now_us().to_be_bytes());
                    let rec = record(None, Bytes::from(v), now_ms(), 0);
                    let batch = encode_batch(&[rec], Compression::None)?;
                    produce_one(&mut producer, &topic, 0, batch, 1).await?;
                }
                Ok::<_, anyhow::Error>(())
            });
            let mut h = histogram()?;
            let done = Arc::new(AtomicU64::new(0));
            let bar = progress("e2e", done.clone(), total);
            let start = Instant::now();
            let deadline = start + Duration::from_secs(seconds * 2 + 30);
            while h.len() < total && Instant::now() < deadline {
                let (next, _, _, values) =
                    fetch_once(&mut consumer, &common.topic, 0, offset, 10).await?;
                offset = next;
                let now = now_us();
                for v in values {
                    if v.len() >= 8 {
                        let sent =
                            i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
                        let _ = h.record((now - sent).max(1) as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            bar.abort();
            send.await.context("producer task failed")??;
            let n = h.len();
            Report {
                kind: "e2e",
                records: n,
                bytes: n * size as u64,
                seconds: start.elapsed().as_secs_f64(),
                latency_us: h,
            }
            .print(common.json);
        }
    }
    Ok(())
}
