//! Valid requests of every API the broker serves, at every version it
//! advertises, mutated at random and sent through the real listener.
//!
//! A mutant flips bytes, sets them to the values that end or extend
//! varints and counts (0x00, 0x7f, 0x80, 0xff), writes an extreme INT32
//! over four of them, cuts the frame short, or inserts and deletes bytes;
//! its length prefix is always its own length, so each reaches the
//! decoder and, if it decodes, a handler. Each must get an answer or cost
//! its connection (or wait, as a fetch may); none may panic a handler (a
//! panic hook counts them: a panic holding a lock would poison it for
//! every later request); and the broker must still serve a produce and a
//! fetch afterwards.
//!
//! Seeded, so a failure repeats: `STRATA_MUTATION_SEED` picks another
//! seed and `STRATA_MUTATIONS` the mutants per request (default 60).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use strata_kafka::client::{encode_frame, KafkaClient};
use strata_kafka::versions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s("t"))
}

fn one_record() -> Bytes {
    strata_record::build_batch(0, 1_000, &[(Some(b"k"), Some(b"v"))]).freeze()
}

/// A produce of one record to partition 0 of `t`, acks=1.
fn produce() -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(one_record()))])])
}

/// A request frame at every version of `R` the broker advertises that
/// `req` encodes at (a field a version lacks fails its encoding).
fn add<R: Request + Clone>(out: &mut Vec<(String, BytesMut)>, name: &str, req: R) {
    for (key, lo, hi) in versions::supported() {
        if key as i16 != R::KEY {
            continue;
        }
        for v in lo..=hi {
            if let Ok(f) = encode_frame("mutations", 7, req.clone(), v) {
                out.push((format!("{name} v{v}"), f));
            }
        }
    }
}

/// One well-formed request of each API, at each version.
fn corpus() -> Vec<(String, BytesMut)> {
    let mut out = Vec::new();
    let o = &mut out;
    add(o, "produce", produce());
    add(
        o,
        "fetch",
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(10)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![FetchPartition::default()
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)
                    .with_current_leader_epoch(-1)])]),
    );
    add(
        o,
        "list_offsets",
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]),
    );
    add(
        o,
        "metadata",
        MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic()))
        ])),
    );
    add(
        o,
        "offset_commit",
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])]),
    );
    add(
        o,
        "offset_fetch",
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0])])),
    );
    add(
        o,
        "offset_fetch (groups)",
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic())
                .with_partition_indexes(vec![0])]))]),
    );
    add(
        o,
        "find_coordinator",
        FindCoordinatorRequest::default()
            .with_key(s("g"))
            .with_coordinator_keys(vec![s("g")]),
    );
    add(
        o,
        "find_coordinator (one key)",
        FindCoordinatorRequest::default().with_key(s("g")),
    );
    add(
        o,
        "join_group",
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(100)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t\0\0\0\0"))]),
    );
    add(
        o,
        "heartbeat",
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(1)
            .with_member_id(s("m")),
    );
    add(
        o,
        "leave_group",
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"))
            .with_members(vec![MemberIdentity::default().with_member_id(s("m"))]),
    );
    add(
        o,
        "leave_group (one member)",
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m")),
    );
    add(
        o,
        "sync_group",
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(1)
            .with_member_id(s("m"))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s("m"))
                .with_assignment(Bytes::from_static(
                    b"\0\0\0\0\0\x01\0\x01t\0\0\0\x01\0\0\0\0",
                ))]),
    );
    add(
        o,
        "describe_groups",
        DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    add(o, "list_groups", ListGroupsRequest::default());
    add(
        o,
        "api_versions",
        ApiVersionsRequest::default()
            .with_client_software_name(s("mutations"))
            .with_client_software_version(s("1")),
    );
    add(
        o,
        "create_topics (validate only)",
        CreateTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_validate_only(true)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(s("new")))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    add(
        o,
        "delete_topics",
        DeleteTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_topic_names(vec![TopicName(s("absent"))]),
    );
    add(
        o,
        "init_producer_id",
        InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    add(
        o,
        "delete_records",
        DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic())
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(0)])]),
    );
    add(
        o,
        "offset_for_leader_epoch",
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic())
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(0)])]),
    );
    add(
        o,
        "alter_partition_reassignments",
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(topic())
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(None)])]),
    );
    add(
        o,
        "list_partition_reassignments",
        ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(topic())
                .with_partition_indexes(vec![0])])),
    );
    add(
        o,
        "describe_configs",
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configuration_keys(Some(vec![s("retention.ms")]))]),
    );
    add(
        o,
        "create_partitions (validate only)",
        CreatePartitionsRequest::default()
            .with_timeout_ms(1000)
            .with_validate_only(true)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic())
                .with_count(2)]),
    );
    add(
        o,
        "delete_groups",
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("absent"))]),
    );
    add(
        o,
        "incremental_alter_configs (validate only)",
        IncrementalAlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(s("60000")))])]),
    );
    add(
        o,
        "offset_delete",
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    add(o, "describe_cluster", DescribeClusterRequest::default());
    add(
        o,
        "add_partitions_to_txn",
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(ProducerId(1))
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic())
                .with_partitions(vec![0])]),
    );
    add(
        o,
        "add_partitions_to_txn (batched)",
        AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(1))
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0])]),
        ]),
    );
    add(
        o,
        "add_offsets_to_txn",
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(1))
            .with_group_id(GroupId(s("g"))),
    );
    add(
        o,
        "end_txn",
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(1))
            .with_committed(true),
    );
    add(
        o,
        "txn_offset_commit",
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("g")))
            .with_producer_id(ProducerId(1))
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])]),
    );
    add(
        o,
        "describe_transactions",
        DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("tx"))]),
    );
    add(o, "list_transactions", ListTransactionsRequest::default());
    add(
        o,
        "describe_producers",
        DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(topic())
            .with_partition_indexes(vec![0])]),
    );
    out
}

/// The mutants' only randomness, seeded, so a seed repeats a run.
fn rng(seed: u64) -> TestRng {
    TestRng::from_seed(RngAlgorithm::ChaCha, &seed.to_le_bytes().repeat(4))
}

/// A number below `n` (0 for 0).
fn below(rng: &mut TestRng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// `frame` (length prefix, then header and body) with one to three edits
/// to what follows the prefix, the prefix then set to the new length.
fn mutate(frame: &[u8], rng: &mut TestRng) -> Vec<u8> {
    let mut body = frame[4..].to_vec();
    for _ in 0..1 + below(rng, 3) {
        // Mostly past the API key and version, so the mutant reaches the
        // same handler; sometimes anywhere.
        let from = if below(rng, 8) == 0 {
            0
        } else {
            4.min(body.len())
        };
        let at = from + below(rng, body.len().saturating_sub(from));
        match below(rng, 7) {
            0 if at < body.len() => body[at] ^= 1 << below(rng, 8),
            1 if at < body.len() => body[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][below(rng, 5)],
            2 if at < body.len() => body[at] ^= (rng.next_u64() as u8) | 1,
            3 if at + 4 <= body.len() => {
                let v = [i32::MAX, i32::MIN, -1, 0x0001_0000, 0x7fff][below(rng, 5)];
                body[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            4 => body.truncate(at),
            5 => body.insert(at.min(body.len()), rng.next_u64() as u8),
            _ if at < body.len() => {
                body.remove(at);
            }
            _ => {}
        }
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    Closed,
    Waiting,
}

/// Sends one frame on a connection of its own and waits briefly for an
/// answer, or for the broker to close the connection.
async fn send(addr: &str, frame: &[u8]) -> Outcome {
    let Ok(mut c) = TcpStream::connect(addr).await else {
        return Outcome::Closed;
    };
    if c.write_all(frame).await.is_err() {
        return Outcome::Closed;
    }
    let read = async {
        let len = c.read_u32().await? as usize;
        let mut body = vec![0; len.min(64 << 20)];
        c.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_millis(500), read).await {
        Ok(Ok(())) => Outcome::Answered,
        Ok(Err(_)) => Outcome::Closed,
        Err(_) => Outcome::Waiting,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_panic_the_broker() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if PANICS.fetch_add(1, Ordering::SeqCst) == 0 {
            *FIRST_PANIC.lock().unwrap() = Some(info.to_string());
        }
        default_hook(info);
    }));
    let seed = std::env::var("STRATA_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_u64);
    let per_request: usize = std::env::var("STRATA_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);

    let dir = tempfile::tempdir().unwrap();
    let b = common::start_groups_at_once(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "mutations").await.unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic())
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r = c.call(create, 7).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0);

    // Unmutated, every request decodes and reaches its handler, which
    // answers it or (a join while the group waits for members that joined
    // before) holds it: the corpus reaches the handlers, so its mutants do
    // too.
    let corpus = corpus();
    let apis: std::collections::BTreeSet<_> = corpus
        .iter()
        .map(|(_, f)| i16::from_be_bytes([f[4], f[5]]))
        .collect();
    assert_eq!(
        apis.len(),
        versions::supported().len(),
        "every advertised API has a request in the corpus"
    );
    for (name, frame) in &corpus {
        assert_ne!(
            send(&b.addr, frame).await,
            Outcome::Closed,
            "{name} unmutated"
        );
    }

    let mut rng = rng(seed);
    let mutants: Vec<Vec<u8>> = corpus
        .iter()
        .flat_map(|(_, f)| {
            (0..per_request)
                .map(|_| mutate(f, &mut rng))
                .collect::<Vec<_>>()
        })
        .collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(mutants.iter())
        .map(|m| send(&b.addr, m))
        .buffer_unordered(16)
        .collect()
        .await;
    let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
    eprintln!(
        "seed {seed:#x}: {} mutants of {} requests: {} answered, {} closed, {} still waiting after 500 ms",
        mutants.len(),
        corpus.len(),
        count(Outcome::Answered),
        count(Outcome::Closed),
        count(Outcome::Waiting),
    );
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a mutant panicked the broker (seed {seed:#x}): {:?}",
        FIRST_PANIC.lock().unwrap()
    );

    // The broker still serves: a produce and the fetch of what it wrote.
    let mut c = KafkaClient::connect(&b.addr, "after").await.unwrap();
    let r = c.call(produce(), 9).await.unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "produce after the mutants");
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(p.base_offset)
                .with_partition_max_bytes(1 << 20)])]);
    let r = c.call(fetch, 12).await.unwrap();
    let part = &r.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let records = part.records.clone().unwrap_or_default();
    let got: Vec<_> = strata_record::BatchIter::verifying(&records)
        .flat_map(|(at, h)| {
            let batch = records.slice(at..at + h.total_size());
            strata_record::decode_batch(&batch).unwrap().records
        })
        .filter(|r| r.offset == p.base_offset)
        .collect();
    assert_eq!(got.len(), 1, "the record produced after the mutants");
    assert_eq!(got[0].value.as_deref(), Some(&b"v"[..]));
    b.shutdown().await;
}

/// Found by the mutants above: a consumer's JoinGroup metadata (its
/// subscription) declaring 2^31-1 topics was decoded, when an
/// OffsetDelete asked which topics the group subscribes to, by a decoder
/// that reserved room for them all first: 60 GB, and the failed
/// allocation aborted the broker. It must cost nothing but the member's
/// subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_declaring_huge_counts_does_not_size_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let b = common::start_groups_at_once(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "huge-subscription")
        .await
        .unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic())
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    c.call(create, 7).await.unwrap();
    // Subscription v0: its version, then a topic count of i32::MAX and
    // nothing after it.
    let metadata = Bytes::from_static(b"\x00\x00\x7f\xff\xff\xff");
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("huge")))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(100)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(metadata)]);
    // v3: joined at once, with no second round for a member id.
    let joined = c.send(join, 3).await.unwrap();
    assert_eq!(joined.error_code, 0);
    let delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("huge")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let r = c.call(delete, 0).await.unwrap();
    // The member's subscription does not decode, so the group subscribes
    // to nothing, and the (absent) offset is deleted.
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    b.shutdown().await;
}
