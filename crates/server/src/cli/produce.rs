//! `strata produce`: lines from stdin become records (optionally `KEY<sep>VALUE`).

use super::route::Routes;
use super::{compression, encode_batch, now_ms, record, s, send_produce};
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::records::Record;
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Fixed partition; by default keyed records hash and unkeyed ones rotate.
    #[arg(long)]
    partition: Option<i32>,
    /// Split each line into key and value at the first occurrence.
    #[arg(long)]
    key_separator: Option<String>,
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Records per produce request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// FNV-1a: a stable key → partition mapping for this tool.
fn hash(key: &[u8]) -> u32 {
    key.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    })
}

pub async fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let codec = compression(&a.compression)?;
    let mut r = Routes::connect(&a.bootstrap).await?;
    let partitions = r.refresh(&a.topic).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut rr = 0i32;
    let mut total = 0usize;
    let mut done = false;
    while !done {
        let mut n = 0;
        while n < a.batch.max(1) {
            let Some(line) = lines.next_line().await.context("cannot read stdin")? else {
                done = true;
                break;
            };
            let (key, value) = match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                    None => (None, Bytes::from(line)),
                },
                None => (None, Bytes::from(line)),
            };
            let p = match (a.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => (hash(k) % partitions.max(1) as u32) as i32,
                (None, None) => rr % partitions.max(1),
            };
            let now = now_ms();
            let list = pending.entry(p).or_default();
            let off = list.len() as i64;
            list.push(record(key, value, now, off));
            n += 1;
        }
        rr = rr.wrapping_add(1);
        if pending.is_empty() {
            continue;
        }
        // One request per partition leader.
        let batches = std::mem::take(&mut pending);
        for (leader, parts) in r.by_leader(&a.topic, batches.keys().copied())? {
            let mut td = TopicProduceData::default();
            td.name = TopicName(s(a.topic.clone()));
            for p in parts {
                let recs = &batches[&p];
                total += recs.len();
                td.partition_data.push(
                    PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(encode_batch(recs, codec)?)),
                );
            }
            let mut req = ProduceRequest::default();
            req.acks = a.acks;
            req.timeout_ms = 30_000;
            req.topic_data = vec![td];
            send_produce(r.broker(leader).await?, req).await?;
        }
    }
    eprintln!("produced {total} record(s) to {}", a.topic);
    Ok(())
}
