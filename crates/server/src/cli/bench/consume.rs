//! `strata bench consume` (read every partition from its start, one fetch in
//! flight per partition) and `strata bench e2e` (send-to-fetch latency at a
//! fixed rate).

use super::{
    ensure_topic, histogram, leader_addrs, merge, now_us, progress, Common, Length, Report,
};
use crate::cli::{connect, encode_batch, error_name, now_ms, record, send_produce};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use kafka_protocol::records::Compression;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_kafka::client::KafkaClient;
use strata_record::BatchIter;

/// Consumers give up after this long whatever the budget: a bench never hangs.
const HARD_LIMIT: Duration = Duration::from_secs(600);

#[derive(Args)]
pub(super) struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    length: Length,
    /// Bytes asked for per partition per fetch (Kafka's
    /// `max.partition.fetch.bytes`).
    #[arg(long, default_value_t = 1 << 20)]
    fetch_max_bytes: i32,
    /// With `--records`: stop once no record has arrived for this many
    /// seconds (the topic holds fewer than asked for), report what was
    /// read, and fail. 0 waits up to the 600 s limit.
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
}

#[derive(Args)]
pub(super) struct E2eArgs {
    #[command(flatten)]
    common: Common,
    /// Records per second, each sent alone (acks=1, no batching).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to run (`--duration` too, as for produce and consume).
    #[arg(long, alias = "duration", default_value_t = 10)]
    seconds: u64,
}

/// Fetches from `offset`; returns (next offset, records, bytes, values).
/// Values are decoded only when `want_values` (the e2e probe reads its
/// timestamps from them).
async fn fetch_once(
    c: &mut KafkaClient,
    topic: &str,
    p: i32,
    offset: i64,
    wait_ms: i32,
    max_bytes: i32,
    want_values: bool,
) -> anyhow::Result<(i64, u64, u64, Vec<Bytes>)> {
    let req = crate::cli::fetch_request(topic, [(p, offset)], max_bytes, wait_ms);
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
                if want_values {
                    let b = data.slice(at..at + h.total_size());
                    if let Ok(d) = strata_record::decode_batch(&b) {
                        values.extend(d.records.into_iter().filter_map(|r| r.value));
                    }
                }
            }
        }
    }
    Ok((next, n, bytes, values))
}

pub(super) async fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    let ConsumeArgs {
        common,
        length,
        fetch_max_bytes,
        idle_timeout,
    } = a;
    if fetch_max_bytes < 1 {
        bail!("--fetch-max-bytes must be positive");
    }
    if !(idle_timeout.is_finite() && idle_timeout >= 0.0) {
        bail!("--idle-timeout must be a number of seconds (0 for none), got {idle_timeout}");
    }
    let budget = length.budget()?;
    // A time budget ends the run by itself; a record budget the topic
    // cannot fill ends it after `idle_timeout` without a record.
    let idle = (budget.duration.is_none() && idle_timeout > 0.0)
        .then(|| Duration::from_secs_f64(idle_timeout));
    // When the last record arrived, in µs since `start`.
    let last = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let bar = progress("consume", done.clone(), budget);
    let start = Instant::now();
    let stop = budget
        .end(start)
        .unwrap_or(start + HARD_LIMIT)
        .min(start + HARD_LIMIT);
    let leaders = leader_addrs(&common, common.partitions).await?;
    let mut tasks = Vec::new();
    for p in 0..leaders.len() as i32 {
        let (c, done, bytes) = (common.clone(), done.clone(), bytes.clone());
        let last = last.clone();
        let addr = leaders[p as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&addr).await?;
            let mut h = histogram()?;
            let mut offset = 0;
            let idle_now = || {
                idle.is_some_and(|idle| {
                    let since = Duration::from_micros(last.load(Ordering::Relaxed));
                    start.elapsed().saturating_sub(since) > idle
                })
            };
            while done.load(Ordering::Relaxed) < budget.records
                && Instant::now() < stop
                && !idle_now()
            {
                let t = Instant::now();
                let (next, n, b, _) = fetch_once(
                    &mut client,
                    &c.topic,
                    p,
                    offset,
                    100,
                    fetch_max_bytes,
                    false,
                )
                .await?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                offset = next;
                if n > 0 {
                    last.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                done.fetch_add(n, Ordering::Relaxed);
                bytes.fetch_add(b, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let h = merge(tasks, "consumer").await?;
    bar.abort();
    let got = done.load(Ordering::Relaxed);
    let short = budget.duration.is_none() && got < budget.records;
    // A run that waited in vain is timed to its last record.
    let seconds = if short {
        Duration::from_micros(last.load(Ordering::Relaxed)).as_secs_f64()
    } else {
        start.elapsed().as_secs_f64()
    };
    Report {
        kind: "consume",
        records: got,
        bytes: bytes.load(Ordering::Relaxed),
        seconds,
        latency_us: h,
        config: serde_json::json!({
            "partitions": leaders.len(), "fetch_max_bytes": fetch_max_bytes,
            "latency": "per fetch request",
        }),
    }
    .print(common.json);
    if short {
        let why = match idle {
            Some(idle) if start.elapsed() < HARD_LIMIT => {
                format!(
                    "no record arrived for {} s (--idle-timeout)",
                    idle.as_secs_f64()
                )
            }
            _ => format!("the {} s limit", HARD_LIMIT.as_secs()),
        };
        bail!(
            "consumed only {got} of {} records from {}: {why}",
            budget.records,
            common.topic
        );
    }
    Ok(())
}

pub(super) async fn run_e2e(a: E2eArgs) -> anyhow::Result<()> {
    let E2eArgs {
        common,
        rate,
        seconds,
    } = a;
    // The topic is created as `--partitions` says, like produce's; the
    // probe uses its partition 0.
    let partitions = common.partitions.max(1);
    ensure_topic(
        &mut connect(&common.bootstrap).await?,
        &common.topic,
        partitions,
    )
    .await?;
    let (rate, seconds) = (rate.max(1), seconds.max(1));
    let total = rate.saturating_mul(seconds);
    // Start at the end of the partition: only this run's records count.
    let mut routes = crate::cli::route::Routes::connect(&common.bootstrap).await?;
    routes.refresh(&common.topic).await?;
    let leader = routes.leader_addr(&common.topic, 0)?;
    let mut producer = connect(&leader).await?;
    let mut consumer = connect(&leader).await?;
    let ends = crate::cli::topic::offsets(&mut routes, &common.topic, 1).await?;
    let mut offset = ends.first().map_or(0, |(_, _, end)| (*end).max(0));
    let topic = common.topic.clone();
    let size = common.size.max(16);
    // Records sent so far. Each record is sent alone and acknowledged
    // before the next, so a rate above what one connection's round trips
    // allow cannot be kept: the producer stops a second after the
    // schedule's end, not `total` round trips later.
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_producer = sent.clone();
    let send_for = seconds.saturating_add(1);
    let send = tokio::spawn(async move {
        let start = Instant::now();
        let give_up = start + Duration::from_secs(send_for);
        for i in 0..total {
            let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(at.into()).await;
            if Instant::now() > give_up {
                break;
            }
            let mut v = vec![b'x'; size];
            v[..8].copy_from_slice(&now_us().to_be_bytes());
            let rec = record(None, Bytes::from(v), now_ms(), 0);
            let batch = encode_batch(&[rec], Compression::None)?;
            send_produce(&mut producer, super::produce::request(&topic, 0, batch, 1)).await?;
            sent_by_producer.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut h: Histogram<u64> = histogram()?;
    let done = Arc::new(AtomicU64::new(0));
    let budget = Length {
        records: Some(total),
        duration: None,
    }
    .budget()?;
    let bar = progress("e2e", done.clone(), budget);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds.saturating_mul(2).saturating_add(30));
    while Instant::now() < deadline {
        // (Finished first: then `sent` is final, and seen, the task's
        // completion being read with acquire ordering.)
        if send.is_finished() && h.len() >= sent.load(Ordering::Relaxed) {
            break;
        }
        let (next, _, _, values) =
            fetch_once(&mut consumer, &common.topic, 0, offset, 10, 1 << 20, true).await?;
        offset = next;
        let now = now_us();
        for v in values {
            if v.len() >= 8 {
                let sent = i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
                let _ = h.record((now - sent).max(1) as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    bar.abort();
    send.await.context("producer task failed")??;
    let n = h.len();
    let sent = sent.load(Ordering::Relaxed);
    if sent < total {
        eprintln!(
            "note: sent {sent} of {total} records, stopping {} s after the start: one \
             connection sending each record alone and waiting for its acknowledgement could \
             not keep {rate}/s",
            send_for
        );
    }
    Report {
        kind: "e2e",
        records: n,
        bytes: n * size as u64,
        seconds: start.elapsed().as_secs_f64(),
        latency_us: h,
        config: serde_json::json!({
            "rate": rate, "seconds": seconds, "size": size, "fetch_wait_ms": 10, "sent": sent,
            "latency": "per record, send to fetch",
        }),
    }
    .print(common.json);
    Ok(())
}
