//! Command-line tools: thin clients over the Kafka protocol, so they work
//! against any Kafka-compatible broker.

pub mod bench;
pub mod consume;
pub mod group;
pub mod produce;
pub mod reassign;
pub mod route;
pub mod segments;
pub mod topic;
pub mod txn;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use strata_kafka::client::KafkaClient;

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Connects to the first reachable of the comma-separated `bootstrap`
/// servers (`host:port[,host:port...]`), as Kafka clients do.
pub async fn connect(bootstrap: &str) -> anyhow::Result<KafkaClient> {
    let mut last = None;
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match KafkaClient::connect(addr, "strata-cli").await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("cannot reach {addr}"))),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("empty bootstrap server list"))
        .context(format!("cannot reach any broker in {bootstrap}")))
}

/// A consumer's Fetch of `partitions` (`(partition, offset)`) of `topic`,
/// waiting up to `max_wait_ms` for at least one byte.
pub fn fetch_request(
    topic: &str,
    partitions: impl IntoIterator<Item = (i32, i64)>,
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = TopicName(s(topic.to_string()));
    t.partitions = partitions
        .into_iter()
        .map(|(p, o)| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(o)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 16 << 20;
    req.session_epoch = -1;
    req.topics = vec![t];
    req
}

pub fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error {code}"),
    }
}

/// A Kafka error code with the broker's message, if it sent one:
/// `NotEnoughReplicas (19): ...`.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{}: {m}", error_name(code)),
        None => error_name(code),
    }
}

/// Metadata for `topics` (all topics when `None`), without auto-creating.
pub async fn metadata(
    c: &mut KafkaClient,
    topics: Option<&[String]>,
) -> anyhow::Result<MetadataResponse> {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = false;
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t.clone())))))
            .collect()
    });
    Ok(c.call(req, 12).await?)
}

/// Partition count of one topic.
/// `--compression` names.
pub fn compression(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other:?}"),
    })
}

/// A plain record (no producer id, no headers) for the tools to send.
/// Records numbered 0, 1, 2, … by `offset` encode as one batch.
pub fn record(key: Option<Bytes>, value: Bytes, timestamp_ms: i64, offset: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // kafka-protocol's encoder starts a new batch whenever
        // `offset - sequence` changes, so the sequence follows the offset;
        // the batch's base sequence is then -1 (no producer) for offset 0.
        sequence: (offset as i32).wrapping_sub(1),
        timestamp: timestamp_ms,
        key,
        value: Some(value),
        headers: IndexMap::new(),
    }
}

/// Encodes records as one v2 batch.
pub fn encode_batch(records: &[Record], codec: Compression) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .context("cannot encode a record batch")?;
    Ok(buf.freeze())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends a Produce request; fails on any partition error. With acks=0 the
/// broker answers nothing, so the request is only written.
pub async fn send_produce(c: &mut KafkaClient, req: ProduceRequest) -> anyhow::Result<()> {
    if req.acks == 0 {
        let v = c.version::<ProduceRequest>(9)?;
        c.send_no_response(req, v).await?;
        return Ok(());
    }
    check_produce(&c.call(req, 9).await?)
}

/// Fails on the first partition error of a Produce response.
pub fn check_produce(resp: &ProduceResponse) -> anyhow::Result<()> {
    for t in &resp.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                bail!(
                    "produce to {}-{} failed: {}",
                    t.name.as_str(),
                    p.index,
                    error_text(p.error_code, p.error_message.as_ref())
                );
            }
        }
    }
    Ok(())
}
