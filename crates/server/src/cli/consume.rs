//! `strata consume`: records of a topic to stdout, one per line.

use super::route::Routes;
use super::{error_name, fetch_request};
use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::time::{Duration, Instant};
use strata_record::{decode_batch, BatchIter};

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (with --partition).
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<usize>,
    /// Stop after this long without new records.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print `partition:offset:key:value` instead of the value alone.
    #[arg(long)]
    verbose: bool,
}

pub async fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    let mut r = Routes::connect(&a.bootstrap).await?;
    let n = r.refresh(&a.topic).await?;
    let parts: Vec<i32> = match a.partition {
        Some(p) if p >= 0 && p < n => vec![p],
        Some(p) => bail!("topic {} has no partition {p}", a.topic),
        None => (0..n).collect(),
    };
    let offsets = super::topic::offsets(&mut r, &a.topic, n).await?;
    let mut pos: Vec<(i32, i64)> = parts
        .iter()
        .map(|p| {
            let (_, start, end) = offsets
                .iter()
                .find(|(q, _, _)| q == p)
                .copied()
                .unwrap_or((*p, 0, 0));
            let o = match a.offset {
                Some(o) => o,
                None if a.from_beginning => start,
                None => end,
            };
            (*p, o)
        })
        .collect();
    let mut seen = 0usize;
    let mut last_data = Instant::now();
    let stdout = std::io::stdout();
    loop {
        let leaders = r.by_leader(&a.topic, pos.iter().map(|(p, _)| *p))?;
        // Several leaders are asked in turn; split the wait between them.
        let max_wait_ms = 500 / leaders.len().max(1) as i32;
        let mut responses = Vec::new();
        for (leader, parts) in leaders {
            let req = fetch_request(
                &a.topic,
                pos.iter().filter(|(p, _)| parts.contains(p)).copied(),
                1 << 20,
                max_wait_ms,
            );
            let resp = r.broker(leader).await?.call(req, 11).await?;
            if resp.error_code != 0 {
                bail!("fetch failed: {}", error_name(resp.error_code));
            }
            responses.extend(resp.responses);
        }
        let mut out = stdout.lock();
        for tr in responses {
            for pd in tr.partitions {
                if pd.error_code != 0 {
                    bail!(
                        "fetch {}-{}: {}",
                        a.topic,
                        pd.partition_index,
                        error_name(pd.error_code)
                    );
                }
                let Some(data) = pd.records else { continue };
                for (at, h) in BatchIter::new(&data) {
                    let records = if h.is_control() {
                        Vec::new()
                    } else {
                        decode_batch(&data.slice(at..at + h.total_size()))
                            .context("cannot decode record batch")?
                            .records
                    };
                    for r in records {
                        let Some(entry) = pos.iter_mut().find(|(p, _)| *p == pd.partition_index)
                        else {
                            continue;
                        };
                        if r.offset < entry.1 {
                            continue;
                        }
                        entry.1 = r.offset + 1;
                        let value = r
                            .value
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        if a.verbose {
                            let key = r
                                .key
                                .as_deref()
                                .map(String::from_utf8_lossy)
                                .unwrap_or_default();
                            writeln!(out, "{}:{}:{key}:{value}", pd.partition_index, r.offset)?;
                        } else {
                            writeln!(out, "{value}")?;
                        }
                        seen += 1;
                        last_data = Instant::now();
                        if a.count.is_some_and(|c| seen >= c) {
                            return Ok(());
                        }
                    }
                    // Skip past the whole batch (e.g. batches with only control records).
                    if let Some(entry) = pos.iter_mut().find(|(p, _)| *p == pd.partition_index) {
                        entry.1 = entry.1.max(h.next_offset());
                    }
                }
            }
        }
        drop(out);
        if a.timeout_ms
            .is_some_and(|t| last_data.elapsed() >= Duration::from_millis(t))
        {
            return Ok(());
        }
    }
}
