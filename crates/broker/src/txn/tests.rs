//! The transaction path end to end inside one broker (embedded store):
//! coordinator transitions, partition-side verification, markers, the last
//! stable offset, aborted transactions in read_committed fetches, fencing,
//! and all of it rebuilt after a restart.

use crate::clock::ManualClock;
use crate::durability::Acks;
use crate::partition::Isolation;
use crate::tests::broker;
use crate::topics::CreateTopic;
use crate::{Broker, BrokerError, FetchSpec};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use strata_record::{build_batch_with, BatchIter, BatchProducer, TRANSACTIONAL_BIT};

fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| vec![b'v'; 4 + i]).collect();
    let recs: Vec<_> = vals.iter().map(|v| (None, Some(v.as_slice()))).collect();
    build_batch_with(
        0,
        1_000,
        BatchProducer {
            attributes: TRANSACTIONAL_BIT,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        },
        &recs,
    )
    .freeze()
}

async fn produce(b: &Broker, p: i32, data: &Bytes) -> Result<i64, BrokerError> {
    b.produce_with_timeout("t", p, data, Acks::All, Duration::from_secs(5), Some("tx"))
        .await
        .map(|o| o.base_offset)
}

/// (data batches' record count, last stable offset, aborted producer ids)
async fn read(b: &Broker, p: i32, from: i64, isolation: Isolation) -> (usize, i64, Vec<i64>) {
    let spec = FetchSpec {
        topic: "t".into(),
        partition: p,
        offset: from,
        max_bytes: 1 << 20,
        current_leader_epoch: None,
        isolation,
    };
    let r = b
        .fetch(&[spec], Duration::ZERO, 0, 1 << 20)
        .await
        .remove(0)
        .unwrap();
    let records = BatchIter::new(&r.data)
        .filter(|(_, h)| !h.is_control())
        .map(|(_, h)| h.records_count as usize)
        .sum();
    let aborted = r.aborted.iter().map(|a| a.producer_id).collect();
    (records, r.last_stable_offset, aborted)
}

#[tokio::test]
async fn commit_abort_fence_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let pid;
    {
        let b = broker(d.path(), clock.clone()).await;
        let t = CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: -1,
            configs: Default::default(),
        };
        b.create_topic(t, false).await.unwrap();
        let (id, epoch) = b.txn_init_producer_id("tx", 60_000, None).await.unwrap();
        pid = id;
        assert_eq!(epoch, 0);
        assert!(matches!(
            b.txn_init_producer_id("tx", 0, None).await,
            Err(BrokerError::InvalidTransactionTimeout(_))
        ));

        // Not added to the transaction yet: refused, nothing written.
        assert!(matches!(
            produce(&b, 0, &txn_batch(pid, 0, 0, 3)).await,
            Err(BrokerError::InvalidTxnState(_))
        ));
        let both = [("t".to_string(), 0), ("t".to_string(), 1)];
        assert!(matches!(
            b.txn_add_partitions("tx", pid, 0, &[("t".into(), 0), ("t".into(), 2)])
                .await,
            Err(BrokerError::UnknownTopicOrPartition(_))
        ));
        b.txn_add_partitions("tx", pid, 0, &both).await.unwrap();
        assert_eq!(produce(&b, 0, &txn_batch(pid, 0, 0, 3)).await.unwrap(), 0);
        assert_eq!(produce(&b, 1, &txn_batch(pid, 0, 0, 1)).await.unwrap(), 0);
        // Open: read_committed sees nothing, read_uncommitted everything.
        assert_eq!(
            read(&b, 0, 0, Isolation::ReadCommitted).await,
            (0, 0, vec![])
        );
        assert_eq!(read(&b, 0, 0, Isolation::ReadUncommitted).await.0, 3);

        b.txn_end("tx", pid, 0, true).await.unwrap();
        // Data at 0..3, commit marker at 3.
        assert_eq!(
            read(&b, 0, 0, Isolation::ReadCommitted).await,
            (3, 4, vec![])
        );
        // A retried EndTxn is answered from the stored state.
        b.txn_end("tx", pid, 0, true).await.unwrap();
        assert!(matches!(
            b.txn_end("tx", pid, 0, false).await,
            Err(BrokerError::InvalidTxnState(_))
        ));

        // Second transaction, aborted after its data reached the log.
        b.txn_add_partitions("tx", pid, 0, &both[..1])
            .await
            .unwrap();
        assert_eq!(produce(&b, 0, &txn_batch(pid, 0, 3, 2)).await.unwrap(), 4);
        b.txn_end("tx", pid, 0, false).await.unwrap();
        assert_eq!(
            read(&b, 0, 4, Isolation::ReadCommitted).await,
            (2, 7, vec![pid]),
            "aborted records come with the aborted-transaction list"
        );

        // Third transaction left open on partition 1; a new producer with
        // the same transactional id aborts it and fences the old epoch.
        b.txn_add_partitions("tx", pid, 0, &both[1..])
            .await
            .unwrap();
        produce(&b, 1, &txn_batch(pid, 0, 1, 1)).await.unwrap();
        let (same, epoch) = b.txn_init_producer_id("tx", 60_000, None).await.unwrap();
        assert_eq!(same, pid);
        assert!(epoch >= 1);
        assert_eq!(read(&b, 1, 0, Isolation::ReadCommitted).await.1, 4);
        assert!(matches!(
            b.txn_add_partitions("tx", pid, 0, &both).await,
            Err(BrokerError::ProducerFenced(_))
        ));
        assert!(matches!(
            produce(&b, 1, &txn_batch(pid, 0, 2, 1)).await,
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        b.shutdown().await;
    }
    // Restart: transactions, LSO and aborted lists are rebuilt from the log.
    let b = broker(d.path(), clock).await;
    assert_eq!(read(&b, 0, 0, Isolation::ReadCommitted).await.1, 7);
    assert_eq!(read(&b, 0, 4, Isolation::ReadCommitted).await.2, vec![pid]);
    assert_eq!(read(&b, 1, 0, Isolation::ReadCommitted).await.1, 4);
    b.shutdown().await;
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let settings = crate::config::BrokerSettings {
        transactional_id_expiration_ms: 5_000,
        ..Default::default()
    };
    let b = crate::tests::broker_with(d.path(), clock.clone(), settings).await;
    b.create_topic(crate::tests::topic("t", 1, &[]), false)
        .await
        .unwrap();
    let (pid, _) = b.txn_init_producer_id("tx", 1_000, None).await.unwrap();
    b.txn_add_partitions("tx", pid, 0, &[("t".into(), 0)])
        .await
        .unwrap();
    produce(&b, 0, &txn_batch(pid, 0, 0, 2)).await.unwrap();
    b.sync_view().await.unwrap();
    b.txn_tick().await;
    assert_eq!(
        read(&b, 0, 0, Isolation::ReadCommitted).await.1,
        0,
        "not yet"
    );
    clock.advance(1_001);
    b.sync_view().await.unwrap();
    b.txn_tick().await;
    assert_eq!(
        read(&b, 0, 0, Isolation::ReadCommitted).await,
        (2, 3, vec![pid])
    );
    assert!(matches!(
        b.txn_end("tx", pid, 0, true).await,
        Err(BrokerError::ProducerFenced(_))
    ));
    // Idle past transactional.id.expiration.ms: forgotten; the next
    // InitProducerId starts over with a new producer id.
    clock.advance(b.settings().transactional_id_expiration_ms + 1);
    b.sync_view().await.unwrap();
    b.txn_tick().await;
    assert!(matches!(
        b.describe_transaction("tx").await,
        Err(BrokerError::TransactionalIdNotFound(_))
    ));
    let (fresh, epoch) = b.txn_init_producer_id("tx", 1_000, None).await.unwrap();
    assert_ne!(fresh, pid);
    assert_eq!(epoch, 0);
    b.shutdown().await;
}

/// A partition reopened after a snapshot replays only what follows it, and
/// keeps what only the snapshot knows: here, a producer epoch whose batches
/// were deleted with their segment still fences older epochs.
#[test]
fn reopen_uses_the_newest_snapshot() {
    use crate::config::TopicConfig;
    use crate::partition::Partition;
    use strata_log::PartitionLog;
    let d = tempfile::tempdir().unwrap();
    let mut configs = std::collections::BTreeMap::new();
    configs.insert("segment.bytes".to_string(), "1024".to_string());
    let cfg = Arc::new(TopicConfig::new(configs, Default::default()).unwrap());
    let open = || {
        let log = PartitionLog::open(d.path(), cfg.log_config(), 0).unwrap();
        Partition::open("t".into(), 0, log, cfg.clone(), 0).unwrap()
    };
    let p = open();
    p.promote(1, 0, crate::replication::replica_set::ReplicaSet::solo(0));
    // Producer 7 at epoch 3 (an open transaction), then enough other data
    // to roll several segments.
    p.append(&txn_batch(7, 3, 0, 2), 0).unwrap();
    for i in 0..40 {
        let b = build_batch_with(0, 0, BatchProducer::NONE, &[(None, Some(&[b'x'; 100][..]))]);
        p.append(&b.freeze(), i).unwrap();
    }
    p.housekeeping(0, |_| false).unwrap();
    let snap_at = p.snapshots.newest();
    assert!(snap_at >= 0, "a snapshot");
    assert_eq!(snap_at, p.log_end_offset());
    // Drop the segment holding producer 7's batches.
    let first_other = p.segments()[1].base_offset;
    p.delete_below(first_other, 0).unwrap();
    drop(p);

    let p = open();
    p.promote(2, 0, crate::replication::replica_set::ReplicaSet::solo(0));
    assert!(
        p.has_open_transaction(7),
        "open transaction known from the snapshot"
    );
    assert!(matches!(
        p.append(&txn_batch(7, 2, 0, 1), 100),
        Err(BrokerError::InvalidProducerEpoch(_))
    ));
}
