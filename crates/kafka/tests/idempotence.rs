//! Idempotent produce through the real listener: InitProducerId, retries
//! deduplicated to their original offsets, gaps and stale epochs refused,
//! deduplication still working after a restart, and pipelined batches kept
//! in order through the listener's in-flight window.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{start, start_with};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use strata_kafka::client::KafkaClient;
use strata_kafka::ServerLimits;

fn batch(pid: i64, epoch: i16, first_seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1000,
            key: None,
            value: Some(Bytes::from(format!("v{}", first_seq as usize + i))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// InitProducerId without a transactional id (the codec's default is "").
fn idempotent() -> InitProducerIdRequest {
    InitProducerIdRequest::default().with_transactional_id(None)
}

/// A Produce of one batch to `t`-0 with acks=all.
fn produce_request(records: Bytes) -> ProduceRequest {
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("t"));
    td.partition_data = vec![PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records))];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    req
}

/// Produces one batch to `t`-0 with acks=all; returns (error code, base offset).
async fn produce(c: &mut KafkaClient, records: Bytes) -> (i16, i64) {
    let resp = c.call(produce_request(records), 9).await.unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn create_topic(c: &mut KafkaClient) {
    let mut ct = CreateTopicsRequest::default();
    ct.topics = vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(1)];
    assert_eq!(c.call(ct, 7).await.unwrap().topics[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_idempotent_batches_keep_their_order_through_a_small_window() {
    // A window of 64 KiB of requests in flight per connection: the listener
    // stops reading while it is full, yet every pipelined request is
    // answered, in order, and the sequences stay gapless.
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        max_in_flight_bytes: 64 << 10,
        ..ServerLimits::default()
    };
    let b = start_with(dir.path(), limits).await;
    let mut c = KafkaClient::connect(&b.addr, "test").await.unwrap();
    create_topic(&mut c).await;
    let init = c.call(idempotent(), 4).await.unwrap();
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let v = c.version::<ProduceRequest>(9).unwrap();
    let (mut w, mut r) = c.into_pipeline();
    const N: usize = 40;
    const PER: usize = 500; // ~4 KB of records per batch, 40 batches
                            // Answers are read while requests are still being written.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let req = produce_request(batch(pid, epoch, (i * PER) as i32, PER));
            tx.send(w.send(req, v).await.unwrap()).unwrap();
        }
        w
    });
    let mut i = 0;
    while let Some(id) = rx.recv().await {
        let resp = r.recv::<ProduceRequest>(id, v).await.unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, (i * PER) as i64),
            "request {i}"
        );
        i += 1;
    }
    assert_eq!(i, N);
    drop(writer.await.unwrap());
    assert_eq!(
        b.broker.partition("t", 0).unwrap().high_watermark(),
        (N * PER) as i64
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_deduplicated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "test").await.unwrap();
    create_topic(&mut c).await;

    let init = c.call(idempotent(), 4).await.unwrap();
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);
    let second = c.call(idempotent(), 4).await.unwrap();
    assert_eq!(second.error_code, 0);
    assert_ne!(second.producer_id.0, pid, "each producer gets its own id");

    assert_eq!(produce(&mut c, batch(pid, epoch, 0, 3)).await, (0, 0));
    assert_eq!(produce(&mut c, batch(pid, epoch, 3, 2)).await, (0, 3));
    // A retry of the first batch: same offsets, nothing stored.
    assert_eq!(produce(&mut c, batch(pid, epoch, 0, 3)).await, (0, 0));
    // A gap in the sequence.
    let gap = produce(&mut c, batch(pid, epoch, 9, 1)).await;
    assert_eq!(gap.0, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(b.broker.partition("t", 0).unwrap().high_watermark(), 5);

    // Epoch bump (KIP-360): same id, epoch + 1, sequences restart at 0.
    let bumped = c
        .call(
            idempotent()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            4,
        )
        .await
        .unwrap();
    assert_eq!(
        (bumped.producer_id.0, bumped.producer_epoch),
        (pid, epoch + 1)
    );
    assert_eq!(produce(&mut c, batch(pid, epoch + 1, 0, 1)).await, (0, 5));
    let stale = produce(&mut c, batch(pid, epoch, 5, 1)).await;
    assert_eq!(stale.0, ResponseError::InvalidProducerEpoch.code());
    drop(c);
    b.shutdown().await;

    // After a restart the producer state is rebuilt from the log.
    let b = start(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "test").await.unwrap();
    assert_eq!(
        produce(&mut c, batch(pid, epoch + 1, 0, 1)).await,
        (0, 5),
        "retry after restart"
    );
    assert_eq!(produce(&mut c, batch(pid, epoch + 1, 1, 1)).await, (0, 6));
    let fresh = c.call(idempotent(), 4).await.unwrap();
    assert_eq!(fresh.error_code, 0);
    assert!(
        fresh.producer_id.0 > second.producer_id.0,
        "ids never repeat across restarts"
    );
    drop(c);
    b.shutdown().await;
}
