//! Transaction APIs (KIP-98): AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn, and the admin views DescribeTransactions,
//! ListTransactions and DescribeProducers. InitProducerId is in `produce`.

use super::{str, Ctx};
use crate::errors::{refused, returned_error_code, NONE};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use strata_broker::groups::CommittedOffset;
use strata_broker::txn::TxnListing;

fn logged(ctx: &Ctx, api: &str, id: &str, e: &strata_broker::BrokerError) -> i16 {
    tracing::debug!(api, transactional_id = id, error = %e, "transaction request refused");
    returned_error_code(&ctx.broker.metrics, e)
}

pub async fn add_partitions(
    ctx: &Ctx,
    r: AddPartitionsToTxnRequest,
    _v: i16,
) -> AddPartitionsToTxnResponse {
    let id = r.v3_and_below_transactional_id.to_string();
    let partitions: Vec<(String, i32)> = r
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    // Kafka answers an unknown partition on that partition and
    // OPERATION_NOT_ATTEMPTED on the others.
    let unknown: Vec<(String, i32)> = partitions
        .iter()
        .filter(|(t, p)| !ctx.broker.has_partition(t, *p))
        .cloned()
        .collect();
    let code = if !unknown.is_empty() {
        refused(&ctx.broker.metrics, ResponseError::OperationNotAttempted)
    } else {
        match ctx
            .broker
            .txn_add_partitions(
                &id,
                r.v3_and_below_producer_id.0,
                r.v3_and_below_producer_epoch,
                &partitions,
            )
            .await
        {
            Ok(()) => NONE,
            Err(e) => logged(ctx, "AddPartitionsToTxn", &id, &e),
        }
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    for t in r.v3_and_below_topics {
        let name = t.name.to_string();
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = t.name;
        tr.results_by_partition = t
            .partitions
            .iter()
            .map(|p| {
                let mut pr = AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = *p;
                pr.partition_error_code = if unknown.contains(&(name.clone(), *p)) {
                    refused(&ctx.broker.metrics, ResponseError::UnknownTopicOrPartition)
                } else {
                    code
                };
                pr
            })
            .collect();
        resp.results_by_topic_v3_and_below.push(tr);
    }
    resp
}

pub async fn add_offsets(ctx: &Ctx, r: AddOffsetsToTxnRequest, _v: i16) -> AddOffsetsToTxnResponse {
    let id = r.transactional_id.to_string();
    let mut resp = AddOffsetsToTxnResponse::default();
    if let Err(e) = ctx
        .broker
        .txn_add_offsets(&id, r.producer_id.0, r.producer_epoch, &r.group_id)
        .await
    {
        resp.error_code = logged(ctx, "AddOffsetsToTxn", &id, &e);
    }
    resp
}

pub async fn txn_offset_commit(
    ctx: &Ctx,
    r: TxnOffsetCommitRequest,
    v: i16,
) -> TxnOffsetCommitResponse {
    let id = r.transactional_id.to_string();
    let now = ctx.broker.now_ms();
    let mut offsets = Vec::new();
    // Partitions refused alone (metadata past the bound), as Kafka does.
    let mut too_large = std::collections::HashSet::new();
    for t in &r.topics {
        for p in &t.partitions {
            let offset = CommittedOffset {
                offset: p.committed_offset,
                leader_epoch: if v >= 2 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                commit_timestamp: now,
                topic_id: ctx.broker.topic_id(&t.name),
            };
            if offset.metadata_fits() {
                offsets.push((t.name.to_string(), p.partition_index, offset));
            } else {
                too_large.insert((t.name.to_string(), p.partition_index));
            }
        }
    }
    // KIP-447 (v3): the consumer's generation fences a stale member.
    let member = (v >= 3 && r.generation_id >= 0).then(|| (r.member_id.as_str(), r.generation_id));
    let code = match ctx
        .broker
        .txn_offset_commit(
            &id,
            &r.group_id,
            r.producer_id.0,
            r.producer_epoch,
            member,
            offsets,
        )
        .await
    {
        Ok(()) => NONE,
        Err(e) => logged(ctx, "TxnOffsetCommit", &id, &e),
    };
    let mut resp = TxnOffsetCommitResponse::default();
    for t in r.topics {
        let topic = t.name.to_string();
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name;
        tr.partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut pr = TxnOffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = if too_large.contains(&(topic.clone(), p.partition_index)) {
                    refused(&ctx.broker.metrics, ResponseError::OffsetMetadataTooLarge)
                } else {
                    code
                };
                pr
            })
            .collect();
        resp.topics.push(tr);
    }
    resp
}

pub async fn end_txn(ctx: &Ctx, r: EndTxnRequest, _v: i16) -> EndTxnResponse {
    let id = r.transactional_id.to_string();
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if let Err(e) = ctx
        .broker
        .txn_end(&id, r.producer_id.0, r.producer_epoch, r.committed)
        .await
    {
        resp.error_code = logged(ctx, "EndTxn", &id, &e);
    }
    resp
}

fn described(t: &TxnListing) -> DescribedTxn {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in &t.record.partitions {
        by_topic.entry(topic).or_default().push(*p);
    }
    let mut d = DescribedTxn::default();
    d.transactional_id = TransactionalId(str(t.transactional_id.clone()));
    d.transaction_state = str(t.record.state.kafka_name());
    d.transaction_timeout_ms = t.record.timeout_ms;
    d.transaction_start_time_ms = if t.record.state == strata_broker::txn::TxnState::Ongoing {
        t.record.start_ms
    } else {
        -1
    };
    d.producer_id = ProducerId(t.record.producer_id);
    d.producer_epoch = t.record.producer_epoch;
    d.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut td = TopicData::default();
            td.topic = TopicName(str(name));
            td.partitions = partitions;
            td
        })
        .collect();
    d
}

pub async fn describe_transactions(
    ctx: &Ctx,
    r: DescribeTransactionsRequest,
    _v: i16,
) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for id in r.transactional_ids {
        let d = match ctx.broker.describe_transaction(&id).await {
            Ok(t) => described(&t),
            Err(e) => {
                let mut d = DescribedTxn::default();
                d.transactional_id = id.clone();
                d.producer_id = ProducerId(-1);
                d.producer_epoch = -1;
                d.transaction_state = str("");
                d.error_code = logged(ctx, "DescribeTransactions", &id, &e);
                d
            }
        };
        resp.transaction_states.push(d);
    }
    resp
}

pub fn list_transactions(
    ctx: &Ctx,
    r: ListTransactionsRequest,
    _v: i16,
) -> ListTransactionsResponse {
    const KNOWN: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let states: Vec<String> = r.state_filters.iter().map(|s| s.to_string()).collect();
    let pids: Vec<i64> = r.producer_id_filters.iter().map(|p| p.0).collect();
    let mut resp = ListTransactionsResponse::default();
    resp.unknown_state_filters = states
        .iter()
        .filter(|s| !KNOWN.contains(&s.as_str()))
        .map(|s| str(s.clone()))
        .collect();
    let now = ctx.broker.now_ms();
    resp.transaction_states = ctx
        .broker
        .list_transactions(&states, &pids)
        .into_iter()
        // v1: only transactions running longer than duration_filter ms.
        .filter(|t| {
            r.duration_filter < 0
                || (t.record.state == strata_broker::txn::TxnState::Ongoing
                    && now - t.record.start_ms >= r.duration_filter)
        })
        .map(|t| {
            let mut l = ListedTxn::default();
            l.transactional_id = TransactionalId(str(t.transactional_id));
            l.producer_id = ProducerId(t.record.producer_id);
            l.transaction_state = str(t.record.state.kafka_name());
            l
        })
        .collect();
    resp
}

pub fn describe_producers(
    ctx: &Ctx,
    r: DescribeProducersRequest,
    _v: i16,
) -> DescribeProducersResponse {
    let mut resp = DescribeProducersResponse::default();
    for t in r.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            match ctx.broker.partition(&t.name, p) {
                Ok(part) => {
                    let open: BTreeMap<i64, i64> = part
                        .open_transactions()
                        .into_iter()
                        .map(|o| (o.producer_id, o.first_offset))
                        .collect();
                    pr.active_producers = part
                        .producers()
                        .into_iter()
                        .map(|(id, epoch, seq)| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(id);
                            s.producer_epoch = i32::from(epoch);
                            s.last_sequence = seq;
                            s.last_timestamp = -1;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = open.get(&id).copied().unwrap_or(-1);
                            s
                        })
                        .collect();
                }
                Err(e) => {
                    pr.error_code = returned_error_code(&ctx.broker.metrics, &e);
                    pr.error_message = Some(str(e.to_string()));
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
