//! Fetch (long-poll), ListOffsets and OffsetForLeaderEpoch.

use super::Ctx;
use crate::errors::{refused, returned_error_code};
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use std::time::Duration;
use strata_broker::partition::Isolation;
use strata_broker::{BrokerError, FetchSpec, OffsetSpec};

/// Kafka's isolation_level: 1 is read_committed, anything else reads
/// uncommitted.
fn isolation(level: i8) -> Isolation {
    if level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

/// Upper bound on a fetch's wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

pub async fn fetch(ctx: &Ctx, r: FetchRequest, v: i16) -> FetchResponse {
    let mut resp = FetchResponse::default();
    if v >= 7 && r.session_id != 0 {
        // We never create fetch sessions (we answer session id 0), so an
        // incremental fetch names a session we do not have.
        resp.error_code = refused(&ctx.broker.metrics, ResponseError::FetchSessionIdNotFound);
        return resp;
    }
    let mut specs = Vec::new();
    let mut shape = Vec::new();
    for t in &r.topics {
        let name = t.topic.to_string();
        for p in &t.partitions {
            specs.push(FetchSpec {
                topic: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                // -1 (or a version without the field): the client does not say.
                current_leader_epoch: (v >= 9 && p.current_leader_epoch >= 0)
                    .then_some(p.current_leader_epoch),
                isolation: isolation(r.isolation_level),
            });
        }
        shape.push((t.topic.clone(), t.partitions.len()));
    }
    let max_bytes = if v >= 3 {
        r.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let results = ctx
        .broker
        .fetch(&specs, wait, r.min_bytes.max(0) as usize, max_bytes)
        .await;
    let mut it = specs.iter().zip(results);
    for (topic, n) in shape {
        let mut tr = FetchableTopicResponse::default();
        tr.topic = topic;
        for (spec, res) in it.by_ref().take(n) {
            let mut pd = PartitionData::default();
            pd.partition_index = spec.partition;
            match res {
                Ok(read) => {
                    pd.high_watermark = read.high_watermark;
                    pd.last_stable_offset = read.last_stable_offset;
                    pd.log_start_offset = read.log_start_offset;
                    pd.records = Some(read.data);
                    if spec.isolation == Isolation::ReadCommitted {
                        pd.aborted_transactions = Some(
                            read.aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect(),
                        );
                    }
                }
                Err(e) => {
                    if !matches!(e, BrokerError::OffsetOutOfRange { .. }) {
                        tracing::debug!(topic = %spec.topic, partition = spec.partition, error = %e, "fetch error");
                    }
                    pd.error_code = returned_error_code(&ctx.broker.metrics, &e);
                    pd.high_watermark = -1;
                    pd.last_stable_offset = -1;
                    pd.log_start_offset = -1;
                    if let Ok(p) = ctx.broker.partition(&spec.topic, spec.partition) {
                        pd.high_watermark = p.high_watermark();
                        pd.last_stable_offset = p.last_stable_offset();
                        pd.log_start_offset = p.log_start_offset();
                    }
                    pd.records = Some(Bytes::new());
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    resp
}

pub async fn list_offsets(ctx: &Ctx, r: ListOffsetsRequest, v: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in r.topics {
        let name = t.name.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name;
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            let spec = match p.timestamp {
                -2 => Some(OffsetSpec::Earliest),
                -1 if r.isolation_level == 1 => Some(OffsetSpec::LastStable),
                -1 => Some(OffsetSpec::Latest),
                ts if ts >= 0 => Some(OffsetSpec::Timestamp(ts)),
                _ => None,
            };
            let outcome = match spec {
                Some(s) => Some(ctx.broker.list_offset(&name, p.partition_index, s).await),
                None => None,
            };
            match outcome {
                None => {
                    pr.error_code = refused(&ctx.broker.metrics, ResponseError::UnsupportedVersion)
                }
                Some(Ok((offset, ts))) => {
                    pr.offset = offset;
                    pr.timestamp = ts;
                    if v >= 4 {
                        pr.leader_epoch = if offset >= 0 {
                            ctx.broker.epoch_of_offset(&name, p.partition_index, offset)
                        } else {
                            -1
                        };
                    }
                }
                Some(Err(e)) => {
                    pr.error_code = returned_error_code(&ctx.broker.metrics, &e);
                    pr.offset = -1;
                    pr.timestamp = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// OffsetForLeaderEpoch (KIP-101/KIP-320): where each asked-for leader epoch
/// ends in the leader's log, so a client (or follower) can detect a
/// truncated or divergent position after a leader change.
pub fn offset_for_leader_epoch(
    ctx: &Ctx,
    r: OffsetForLeaderEpochRequest,
    v: i16,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in r.topics {
        let name = t.topic.to_string();
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic;
        for p in t.partitions {
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            let current = if v >= 2 { p.current_leader_epoch } else { -1 };
            match ctx
                .broker
                .end_offset_for_epoch(&name, p.partition, current, p.leader_epoch)
            {
                Ok(Some((epoch, end))) => {
                    if v >= 1 {
                        pr.leader_epoch = epoch;
                    }
                    pr.end_offset = end;
                }
                Ok(None) => {
                    pr.leader_epoch = -1;
                    pr.end_offset = -1;
                }
                Err(e) => {
                    pr.error_code = returned_error_code(&ctx.broker.metrics, &e);
                    pr.leader_epoch = -1;
                    pr.end_offset = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
