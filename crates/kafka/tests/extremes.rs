//! Well-formed requests carrying the extreme values of their numeric
//! fields (offsets, epochs, timeouts, sizes, counts at i64/i32/i16/i8 MIN,
//! MAX, -1 and friends) through the real listener: each gets an answer,
//! whatever its error codes. A request that panics its handler (an
//! overflow, a bad cast) or hangs shows as a connection dropped or a
//! timeout, and the test lists every one.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use std::time::Duration;
use strata_kafka::client::KafkaClient;

const I64S: [i64; 6] = [i64::MIN, -3, -2, -1, 0, i64::MAX];
const I32S: [i32; 5] = [i32::MIN, -2, -1, 0, i32::MAX];
const I16S: [i16; 4] = [i16::MIN, -1, 0, i16::MAX];

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s("t"))
}

/// Sends requests, reconnecting after one that cost the connection, and
/// keeps the list of those that did not get an answer.
struct Prober {
    addr: String,
    client: Option<KafkaClient>,
    failures: Vec<String>,
    sent: usize,
}

impl Prober {
    async fn call<R: Request>(&mut self, what: String, req: R, max_version: i16) {
        self.sent += 1;
        if self.client.is_none() {
            self.client = Some(KafkaClient::connect(&self.addr, "extremes").await.unwrap());
        }
        let c = self.client.as_mut().unwrap();
        match tokio::time::timeout(Duration::from_secs(10), c.call(req, max_version)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.failures.push(format!("{what}: {e}"));
                self.client = None;
            }
            Err(_) => {
                self.failures.push(format!("{what}: no answer in 10 s"));
                self.client = None;
            }
        }
    }
}

fn one_record() -> Bytes {
    let b = strata_record::build_batch(0, 1_000, &[(None, Some(b"v"))]);
    b.freeze()
}

fn fetch(offset: i64, part_max: i32, max: i32, min: i32, wait: i32, epoch: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait)
        .with_min_bytes(min)
        .with_max_bytes(max)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(part_max)
                .with_current_leader_epoch(epoch)
                .with_log_start_offset(offset)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_extreme_value_gets_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let b = common::start_groups_at_once(dir.path()).await;
    let mut p = Prober {
        addr: b.addr.clone(),
        client: None,
        failures: Vec::new(),
        sent: 0,
    };
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic())
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    p.call("create t".into(), create, 7).await;
    let produce = |acks: i16, timeout: i32| {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(one_record()))])])
    };
    for acks in [i16::MIN, -1, 0, 1, 2, i16::MAX] {
        for t in I32S {
            if acks == 0 {
                continue; // acks=0 is never answered
            }
            p.call(
                format!("produce acks={acks} timeout={t}"),
                produce(acks, t),
                9,
            )
            .await;
        }
    }
    // The topic exists and the well-formed produces landed: the probes
    // below reach the partition, not an unknown-topic error.
    let end = b
        .broker
        .list_offset("t", 0, strata_broker::OffsetSpec::Latest)
        .await;
    assert!(end.unwrap().0 > 0);
    for v in [4, 12] {
        for o in I64S {
            for x in I32S {
                // A long wait only where nothing is waited for (min_bytes
                // ≤ 0): a client asking to wait days for data gets that.
                let f = fetch(o, x, x, x.min(0), if x > 0 { 100 } else { x }, x);
                p.call(format!("fetch v{v} offset={o} sizes/epoch={x}"), f, v)
                    .await;
            }
            let f = fetch(o, 1 << 20, 1 << 20, 0, i32::MAX, -1);
            p.call(format!("fetch v{v} offset={o} wait=MAX min=0"), f, v)
                .await;
        }
        for x in I32S {
            let mut f = fetch(0, 1 << 20, 1 << 20, 0, 0, -1);
            f.session_id = x;
            f.session_epoch = x;
            p.call(format!("fetch v{v} session={x}"), f, v).await;
        }
    }
    for v in [1, 6] {
        for ts in I64S {
            for x in I32S {
                let r = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(if x == i32::MAX { x } else { 0 })
                            .with_current_leader_epoch(x)
                            .with_timestamp(ts)])]);
                p.call(format!("list_offsets v{v} ts={ts} x={x}"), r, v)
                    .await;
            }
        }
    }
    for v in [2, 8] {
        for o in I64S {
            for x in I32S {
                let r = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g-commit")))
                    .with_generation_id_or_member_epoch(x)
                    .with_retention_time_ms(o)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(x)])]);
                p.call(format!("offset_commit v{v} offset={o} x={x}"), r, v)
                    .await;
            }
        }
    }
    for o in I64S {
        for t in I32S {
            let r = DeleteRecordsRequest::default()
                .with_timeout_ms(t)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(o)])]);
            p.call(format!("delete_records offset={o} timeout={t}"), r, 2)
                .await;
        }
    }
    for e in I32S {
        for c in I32S {
            let r = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_leader_epoch(e)
                        .with_current_leader_epoch(c)])]);
            p.call(
                format!("offset_for_leader_epoch epoch={e} current={c}"),
                r,
                4,
            )
            .await;
        }
    }
    for count in I32S {
        for validate_only in [true, false] {
            let r = CreatePartitionsRequest::default()
                .with_timeout_ms(count)
                .with_validate_only(validate_only)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic())
                    .with_count(count)]);
            p.call(
                format!("create_partitions count={count} validate={validate_only}"),
                r,
                3,
            )
            .await;
        }
    }
    for n in I32S {
        for rf in I16S {
            let r = CreateTopicsRequest::default()
                .with_timeout_ms(n)
                .with_validate_only(true)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s("x")))
                    .with_num_partitions(n)
                    .with_replication_factor(rf)]);
            p.call(format!("create_topics partitions={n} rf={rf}"), r, 7)
                .await;
        }
    }
    for v in [0, 9] {
        for x in I32S {
            let r = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g-join")))
                .with_session_timeout_ms(x)
                .with_rebalance_timeout_ms(if v == 0 { 0 } else { x })
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]);
            p.call(format!("join_group v{v} timeouts={x}"), r, v).await;
        }
    }
    for g in I32S {
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g-join")))
            .with_generation_id(g)
            .with_member_id(s("nobody"));
        p.call(format!("heartbeat generation={g}"), hb, 4).await;
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g-join")))
            .with_generation_id(g)
            .with_member_id(s("nobody"));
        p.call(format!("sync_group generation={g}"), sync, 5).await;
    }
    for t in I32S {
        for e in I16S {
            let r = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("tx"))))
                .with_transaction_timeout_ms(t)
                .with_producer_id(ProducerId(if e == -1 { -1 } else { i64::from(e) }))
                .with_producer_epoch(e);
            p.call(format!("init_producer_id timeout={t} epoch={e}"), r, 4)
                .await;
        }
    }
    for pid in I64S {
        for e in I16S {
            let topics = || {
                vec![AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0])]
            };
            let add = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(e)
                .with_v3_and_below_topics(topics());
            p.call(
                format!("add_partitions_to_txn v3 pid={pid} epoch={e}"),
                add,
                3,
            )
            .await;
            let end = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(e)
                .with_committed(e > 0);
            p.call(format!("end_txn pid={pid} epoch={e}"), end, 3).await;
            let commit = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g-commit")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(e)
                .with_generation_id(i32::from(e))
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(pid)])]);
            p.call(format!("txn_offset_commit pid={pid} epoch={e}"), commit, 3)
                .await;
        }
    }
    for t in [i8::MIN, -1, 0, 1, 2, 4, 8, i8::MAX] {
        let r = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(t)
                .with_resource_name(s("t")),
        ]);
        p.call(format!("describe_configs type={t}"), r, 4).await;
    }
    assert!(p.sent > 400, "only {} requests", p.sent);
    assert!(
        p.failures.is_empty(),
        "{} of {} requests got no answer:\n{}",
        p.failures.len(),
        p.sent,
        p.failures.join("\n")
    );
    b.shutdown().await;
}
