//! `strata bench produce`: a pipelined producer. Each partition leader gets
//! one connection with up to `--in-flight` Produce requests outstanding
//! (responses come back in order, so a reader task pairs them with what was
//! sent). Records are "created" on a schedule (`--rate`, or as fast as the
//! pipeline takes them) and grouped into batches of up to `--batch` records,
//! a batch closing when full or `--linger-ms` after its first record.
//! Latency is per record: from its creation to its batch's acknowledgement,
//! so it includes time spent waiting for a free in-flight slot (as with a
//! real producer's accumulator).
//!
//! Full batches are encoded once and re-issued with fresh timestamps and
//! sequence numbers (`strata_record::restamp_batch`), so the tool spends its
//! CPU on the wire, not on building records; with `--idempotence` every batch
//! carries the producer id, epoch and the partition's next sequence number.

use super::{ensure_topic, histogram, leader_addrs, merge, progress, Budget, Common, Length};
use crate::cli::{check_produce, compression, connect, encode_batch, now_ms, record, s};
use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::records::Compression;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
// tokio's clock, so tests can run the schedule on paused time.
use tokio::time::Instant;

#[derive(Args)]
pub(super) struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    length: Length,
    /// Most records per batch (one batch per partition per request).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Most value bytes per batch: fewer records per batch when they are
    /// large (one at least, however large). Kafka's default
    /// `max.message.bytes`, so default batches fit a default topic.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// How long a batch waits for more records after its first (matters
    /// only with `--rate`; unthrottled, batches fill at once).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Target records per second across all partitions (default: as fast as
    /// the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Idempotent producer: a producer id from InitProducerId and sequence
    /// numbers on every batch (needs acks=all and at most 5 in flight).
    #[arg(long)]
    idempotence: bool,
    /// Produce requests outstanding per connection.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
}

/// Everything a partition's producer needs, fixed for the run.
struct Plan {
    topic: String,
    acks: i16,
    codec: Compression,
    batch: usize,
    linger: Duration,
    /// Time between two records of one partition; `None` when unthrottled.
    interval: Option<Duration>,
    in_flight: usize,
    /// Producer id and epoch (`-1, -1` when not idempotent).
    producer: (i64, i16),
    /// One value per record slot of a batch (random letters, so compression
    /// sees realistic data rather than one repeated byte).
    values: Vec<Bytes>,
    /// A full batch, encoded once.
    full: Bytes,
}

fn parse_acks(s: &str) -> anyhow::Result<i16> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        other => bail!("--acks must be 0, 1 or all, got {other:?}"),
    }
}

/// Records per batch: at most `batch`, and at most `batch_bytes` of values
/// (one record at least), and no more than the partition given the most
/// records takes (the batch's values are made up front: a batch of
/// thousands of large records would take their size many times over).
fn batch_records(batch: usize, batch_bytes: usize, size: usize, records: u64, parts: u64) -> usize {
    let by_bytes = batch_bytes / size.max(1);
    let most_per_partition = records.div_ceil(parts.max(1));
    batch
        .min(by_bytes)
        .min(usize::try_from(most_per_partition).unwrap_or(usize::MAX))
        .max(1)
}

/// `n` values of `size` random upper-case letters (xorshift; no seed needed:
/// the content only has to look like text to a compressor).
fn random_values(n: usize, size: usize) -> Vec<Bytes> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            let v: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'A' + (x % 26) as u8
                })
                .collect();
            Bytes::from(v)
        })
        .collect()
}

fn encode(values: &[Bytes], codec: Compression) -> anyhow::Result<Bytes> {
    let ts = now_ms();
    let recs: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(None, v.clone(), ts, i as i64))
        .collect();
    encode_batch(&recs, codec)
}

/// A Produce request carrying one batch for `topic`-`p`.
pub(super) fn request(topic: &str, p: i32, records: Bytes, acks: i16) -> ProduceRequest {
    let mut td = TopicProduceData::default();
    td.name = TopicName(s(topic.to_string()));
    td.partition_data = vec![PartitionProduceData::default()
        .with_index(p)
        .with_records(Some(records))];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    req
}

/// A producer id and epoch from any broker (InitProducerId without a
/// transactional id).
async fn init_producer_id(bootstrap: &str) -> anyhow::Result<(i64, i16)> {
    let mut c = connect(bootstrap).await?;
    // The default transactional id is "", not null.
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp = c.call(req, 4).await?;
    if resp.error_code != 0 {
        bail!(
            "InitProducerId failed: {}",
            crate::cli::error_name(resp.error_code)
        );
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// A sent request the reader waits for.
struct InFlight {
    correlation: i32,
    /// Index (within the partition) of the batch's first record, and count.
    first: u64,
    count: u64,
    /// When the batch was created (unthrottled runs).
    created: Instant,
    /// Holds an in-flight slot until the answer is read.
    _slot: OwnedSemaphorePermit,
}

/// Kafka sequence numbers wrap from `i32::MAX` to 0.
fn next_sequence(seq: i32, records: u64) -> i32 {
    ((i64::from(seq) + records as i64) % (i64::from(i32::MAX) + 1)) as i32
}

/// Produces partition `p`'s share (`quota` records) over one pipelined
/// connection to its leader; returns the per-record latency histogram.
async fn partition(
    plan: Arc<Plan>,
    addr: String,
    p: i32,
    quota: u64,
    start: Instant,
    end: Option<Instant>,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    let client = connect(&addr).await?;
    let version = client.version::<ProduceRequest>(9)?;
    let (mut writer, mut reader) = client.into_pipeline();
    let slots = Arc::new(Semaphore::new(plan.in_flight.max(1)));
    // Unbounded, but never longer than the in-flight slots allow.
    let (tx, mut rx) = mpsc::unbounded_channel::<InFlight>();
    let acks = plan.acks;
    let reading = {
        let (plan, done) = (plan.clone(), done.clone());
        tokio::spawn(async move {
            let mut h = histogram()?;
            while let Some(sent) = rx.recv().await {
                let resp = reader
                    .recv::<ProduceRequest>(sent.correlation, version)
                    .await
                    .with_context(|| format!("produce to {}-{p}", plan.topic))?;
                check_produce(&resp)?;
                let now = Instant::now();
                match plan.interval {
                    None => {
                        let us = now.duration_since(sent.created).as_micros().max(1) as u64;
                        let _ = h.record_n(us, sent.count);
                    }
                    Some(iv) => {
                        for k in sent.first..sent.first + sent.count {
                            let created = created_at(start, iv, k);
                            let us = now.saturating_duration_since(created).as_micros();
                            let _ = h.record(us.max(1) as u64);
                        }
                    }
                }
                done.fetch_add(sent.count, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(h)
        })
    };

    let mut next = 0u64; // index of the next record to create
    let mut sequence = 0i32;
    while next < quota {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .context("in-flight slots closed")?;
        let Some((count, created)) = next_batch(&plan, next, quota, start, end).await else {
            break;
        };
        let records = if count as usize == plan.batch {
            plan.full.clone()
        } else {
            encode(&plan.values[..count as usize], plan.codec)?
        };
        let mut batch = BytesMut::from(&records[..]);
        let (pid, epoch) = plan.producer;
        let seq = if pid >= 0 { sequence } else { -1 };
        strata_record::restamp_batch(&mut batch, now_ms(), pid, epoch, seq)
            .context("cannot restamp a batch")?;
        sequence = next_sequence(sequence, count);
        let req = request(&plan.topic, p, batch.freeze(), acks);
        let correlation = writer
            .send(req, version)
            .await
            .with_context(|| format!("produce to {}-{p}", plan.topic))?;
        if acks == 0 {
            done.fetch_add(count, Ordering::Relaxed);
        } else {
            let sent = InFlight {
                correlation,
                first: next,
                count,
                created,
                _slot: slot,
            };
            if tx.send(sent).is_err() {
                break; // the reader stopped: its error is reported below
            }
        }
        next += count;
    }
    drop(tx);
    reading.await.context("produce reader task failed")?
}

/// When record `k` of a throttled partition is created: `start + k × interval`.
fn created_at(start: Instant, interval: Duration, k: u64) -> Instant {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    let offset = Duration::from_nanos(nanos.saturating_mul(k));
    // Past any run's end: about 34 years.
    start
        .checked_add(offset)
        .unwrap_or_else(|| start + Duration::from_secs(1 << 30))
}

/// Waits until the next batch should close and returns its record count and
/// creation time, or `None` when the run is over. Records of a throttled run
/// are created at `start + k × interval`; a batch closes when it holds
/// `plan.batch` records or `plan.linger` after its first record.
async fn next_batch(
    plan: &Plan,
    next: u64,
    quota: u64,
    start: Instant,
    end: Option<Instant>,
) -> Option<(u64, Instant)> {
    let left = quota - next;
    let Some(iv) = plan.interval else {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            return None;
        }
        return Some(((plan.batch as u64).min(left), now));
    };
    let at = |k: u64| created_at(start, iv, k);
    let first = at(next);
    if end.is_some_and(|e| first >= e) {
        return None;
    }
    let full = at(next + (plan.batch as u64).min(left) - 1);
    let mut close = full.min(first + plan.linger);
    if let Some(e) = end {
        close = close.min(e);
    }
    tokio::time::sleep_until(close).await;
    // Records created by now (never fewer than the first, which has been).
    let now = Instant::now().max(first);
    let elapsed = now.duration_since(start).as_nanos();
    let created = u64::try_from(elapsed / iv.as_nanos().max(1)).unwrap_or(u64::MAX - 1) + 1;
    let mut count = created
        .saturating_sub(next)
        .clamp(1, plan.batch as u64)
        .min(left);
    if let Some(e) = end {
        // Nothing created at or after the end of the run.
        while count > 1 && at(next + count - 1) >= e {
            count -= 1;
        }
    }
    Some((count, first))
}

pub(super) async fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let ProduceArgs {
        common,
        length,
        batch,
        batch_bytes,
        linger_ms,
        rate,
        acks,
        compression: codec_name,
        idempotence,
        in_flight,
    } = a;
    let budget: Budget = length.budget()?;
    let acks = parse_acks(&acks)?;
    let codec = compression(&codec_name)?;
    if batch == 0 || in_flight == 0 || batch_bytes == 0 {
        bail!("--batch, --batch-bytes and --in-flight must be at least 1");
    }
    if idempotence && acks != -1 {
        bail!("--idempotence needs --acks all (as Kafka's enable.idempotence does)");
    }
    if idempotence && in_flight > 5 {
        bail!("--idempotence allows at most 5 requests in flight per connection");
    }
    if let Some(r) = rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of records per second, got {r}");
        }
    }
    ensure_topic(
        &mut connect(&common.bootstrap).await?,
        &common.topic,
        common.partitions,
    )
    .await?;
    let leaders = leader_addrs(&common, common.partitions).await?;
    let parts = leaders.len() as u64;
    let producer = if idempotence {
        init_producer_id(&common.bootstrap).await?
    } else {
        (-1, -1)
    };
    let interval = match rate {
        Some(r) => Some(
            Duration::try_from_secs_f64(parts as f64 / r)
                .with_context(|| format!("--rate {r} is out of range"))?,
        ),
        None => None,
    };
    let batch = batch_records(batch, batch_bytes, common.size, budget.records, parts);
    let values = random_values(batch, common.size);
    let full = encode(&values, codec)?;
    let plan = Arc::new(Plan {
        topic: common.topic.clone(),
        acks,
        codec,
        batch,
        linger: Duration::from_millis(linger_ms),
        interval,
        in_flight,
        producer,
        values,
        full,
    });
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress("produce", done.clone(), budget);
    let start = Instant::now();
    let end = budget.duration.map(|d| start + d);
    let mut tasks = Vec::new();
    for (p, addr) in leaders.into_iter().enumerate() {
        let quota = if budget.records == u64::MAX {
            u64::MAX
        } else {
            budget.records / parts + u64::from((p as u64) < budget.records % parts)
        };
        tasks.push(tokio::spawn(partition(
            plan.clone(),
            addr,
            p as i32,
            quota,
            start,
            end,
            done.clone(),
        )));
    }
    let h = merge(tasks, "producer").await?;
    bar.abort();
    let sent = done.load(Ordering::Relaxed);
    super::Report {
        kind: "produce",
        records: sent,
        bytes: sent * common.size as u64,
        seconds: start.elapsed().as_secs_f64(),
        latency_us: h,
        config: serde_json::json!({
            "partitions": parts, "size": common.size, "batch": batch, "linger_ms": linger_ms,
            "rate": rate, "acks": acks, "compression": codec_name, "idempotence": idempotence,
            "in_flight": in_flight, "latency": "per record, creation to acknowledgement",
        }),
    }
    .print(common.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_names() {
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert_eq!(parse_acks("-1").unwrap(), -1);
        assert_eq!(parse_acks("0").unwrap(), 0);
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn batches_are_bounded_by_records_bytes_and_the_largest_quota() {
        // 100-byte records: the record bound.
        assert_eq!(batch_records(1000, 1 << 20, 100, u64::MAX, 4), 1000);
        // 1 KiB records: 1 MiB of values holds 1024, the record bound 1000.
        assert_eq!(batch_records(1000, 1 << 20, 1024, u64::MAX, 4), 1000);
        assert_eq!(batch_records(1000, 1 << 20, 4096, u64::MAX, 4), 256);
        // Records over the byte bound go one per batch.
        assert_eq!(batch_records(1000, 1 << 20, 20 << 20, u64::MAX, 4), 1);
        // 10 records over 4 partitions: at most 3 per partition.
        assert_eq!(batch_records(1000, 1 << 20, 100, 10, 4), 3);
        assert_eq!(batch_records(1000, 1 << 20, 0, 1, 1), 1);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(next_sequence(0, 10), 10);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn random_values_are_letters_of_the_size_asked() {
        let v = random_values(3, 50);
        assert_eq!(v.len(), 3);
        assert!(v
            .iter()
            .all(|b| b.len() == 50 && b.iter().all(u8::is_ascii_uppercase)));
        assert_ne!(v[0], v[1]);
    }

    fn plan(batch: usize, interval: Option<Duration>, linger_ms: u64) -> Plan {
        Plan {
            topic: "t".into(),
            acks: 1,
            codec: Compression::None,
            batch,
            linger: Duration::from_millis(linger_ms),
            interval,
            in_flight: 1,
            producer: (-1, -1),
            values: Vec::new(),
            full: Bytes::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_batches_close_on_linger_or_when_full() {
        let start = Instant::now();
        // 1 record per ms, batches of 10, linger 3 ms: the first batch
        // closes at its linger with the 4 records created by then.
        let p = plan(10, Some(Duration::from_millis(1)), 3);
        let (n, first) = next_batch(&p, 0, 100, start, None).await.unwrap();
        assert_eq!((n, first), (4, start));
        // Linger longer than a full batch takes: it closes full.
        let p = plan(10, Some(Duration::from_millis(1)), 50);
        let (n, _) = next_batch(&p, 4, 100, start, None).await.unwrap();
        assert_eq!(n, 10);
        // The quota caps the batch, and nothing is created at or past the end.
        let (n, _) = next_batch(&p, 97, 100, start, None).await.unwrap();
        assert_eq!(n, 3);
        let end = start + Duration::from_millis(120);
        let (n, _) = next_batch(&p, 115, 1000, start, Some(end)).await.unwrap();
        assert_eq!(n, 5);
        assert!(next_batch(&p, 120, 1000, start, Some(end)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unthrottled_batches_are_full_until_the_quota() {
        let start = Instant::now();
        let p = plan(10, None, 5);
        assert_eq!(next_batch(&p, 0, 25, start, None).await.unwrap().0, 10);
        assert_eq!(next_batch(&p, 20, 25, start, None).await.unwrap().0, 5);
    }

    #[test]
    fn a_template_is_one_batch_that_restamps_validly() {
        let values = random_values(10, 100);
        let full = encode(&values, Compression::None).unwrap();
        let batches: Vec<_> = strata_record::BatchIter::new(&full).collect();
        assert_eq!(batches.len(), 1, "records must share one batch");
        let h = batches[0].1;
        assert_eq!(
            (h.records_count, h.base_sequence, h.total_size()),
            (10, -1, full.len())
        );
        let mut b = BytesMut::from(&full[..]);
        strata_record::restamp_batch(&mut b, now_ms(), 5, 1, 7).unwrap();
        let limits = strata_record::ValidationLimits {
            max_batch_bytes: 1 << 20,
        };
        let v = strata_record::validate_batches(&b, limits).unwrap();
        assert_eq!(v[0].header.producer_id, 5);
        assert_eq!(v[0].header.base_sequence, 7);
    }
}
