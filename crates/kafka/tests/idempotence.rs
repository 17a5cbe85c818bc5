//! Idempotent produce through the real listener: InitProducerId, retries
//! deduplicated to their original offsets, gaps and stale epochs refused,
//! and deduplication still working after a restart.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
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
use std::path::Path;
use std::sync::Arc;
use strata_broker::BrokerBuilder;
use strata_kafka::client::KafkaClient;
use strata_kafka::{Ctx, ServerLimits};
use strata_meta::{EmbeddedStore, MetadataStore};
use tokio_util::sync::CancellationToken;

struct Running {
    addr: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    broker: Arc<strata_broker::Broker>,
}

async fn start(dir: &Path) -> Running {
    let meta: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(&dir.join("meta")).unwrap());
    let broker = BrokerBuilder::new(dir.join("logs"))
        .metadata_store(meta)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = Arc::new(Ctx {
        broker: broker.clone(),
        advertised_host: "127.0.0.1".into(),
        advertised_port: i32::from(addr.port()),
        cluster_id: broker.cluster_id().to_string(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(strata_kafka::serve(
        listener,
        ctx,
        ServerLimits::default(),
        stop.clone(),
    ));
    Running {
        addr: addr.to_string(),
        stop,
        task,
        broker,
    }
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.broker.shutdown().await;
    }
}

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

/// Produces one batch to `t`-0 with acks=all; returns (error code, base offset).
async fn produce(c: &mut KafkaClient, records: Bytes) -> (i16, i64) {
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("t"));
    td.partition_data = vec![PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records))];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    let resp = c.call(req, 9).await.unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_deduplicated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "test").await.unwrap();
    let mut ct = CreateTopicsRequest::default();
    ct.topics = vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(1)];
    assert_eq!(c.call(ct, 7).await.unwrap().topics[0].error_code, 0);

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
