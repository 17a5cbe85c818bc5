//! Metadata writes larger than one store transaction holds
//! (`strata_meta::MAX_TXN_OPS` and `MAX_TXN_BYTES`, within etcd's default
//! limits, which the in-process store enforces alike): the wide writes
//! failed before they were split; ids and states past the byte bound are
//! refused with a request error.

use super::{batch, broker, topic};
use crate::clock::ManualClock;
use crate::durability::Acks;
use crate::groups::CommittedOffset;
use crate::{Broker, BrokerBuilder, OffsetSpec};
use std::sync::Arc;
use strata_meta::MAX_TXN_OPS;

/// Every partition of `name` has replicas and a leader.
fn all_led(b: &Broker, name: &str, n: i32) {
    let t = b.topic(name).unwrap();
    assert_eq!(t.partitions.len(), n as usize);
    for p in &t.partitions {
        assert!(!p.replicas.is_empty(), "{name}-{} has replicas", p.index);
        assert!(p.leader.is_some(), "{name}-{} has a leader", p.index);
    }
}

#[tokio::test]
async fn topics_and_offset_commits_of_more_partitions_than_a_transaction_holds() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    let n = 2 * MAX_TXN_OPS as i32 + 44;
    b.create_topic(topic("wide", n, &[]), false).await.unwrap();
    all_led(&b, "wide", n);
    b.create_partitions("wide", 2 * n, false).await.unwrap();
    all_led(&b, "wide", 2 * n);

    let off = |o: i64| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp: 0,
        topic_id: None,
    };
    let all: Vec<(String, i32, CommittedOffset)> = (0..2 * n)
        .map(|p| ("wide".into(), p, off(i64::from(p))))
        .collect();
    b.groups.commit_offsets("g", "", -1, all).await.unwrap();
    let got = b.groups.fetch_offsets("g", None);
    assert_eq!(got.len(), 2 * n as usize);
    let parts: Vec<(String, i32)> = (0..2 * n).map(|p| ("wide".into(), p)).collect();
    let results = b.groups.delete_offsets("g", &parts, &[]).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(b.groups.fetch_offsets("g", None).is_empty());
    b.shutdown().await;
}

/// DeleteRecords below more cold segments than a transaction deletes.
#[tokio::test]
async fn delete_records_below_more_cold_segments_than_a_transaction_holds() {
    use object_store::memory::InMemory;
    use strata_meta::MemStore;
    let d = tempfile::tempdir().unwrap();
    let b = BrokerBuilder::new(d.path().join("data"))
        .metadata_store(Arc::new(MemStore::new()))
        .cold_tier(Arc::new(InMemory::new()), "lake", 1 << 20)
        .build()
        .await
        .unwrap();
    let configs = [("segment.bytes", "1024"), ("local.retention.bytes", "1")];
    b.create_topic(topic("t", 1, &configs), false)
        .await
        .unwrap();
    // A batch of ~1.2 KB per segment.
    let files = MAX_TXN_OPS + 40;
    for i in 0..files as i64 {
        b.produce("t", 0, &batch(20, b.now_ms() + i), Acks::All)
            .await
            .unwrap();
    }
    for _ in 0..2 * files {
        if b.offload_once().await == 0 {
            break;
        }
    }
    let cold = b
        .view()
        .segments
        .get(&("t".to_string(), 0))
        .map_or(0, |m| m.len());
    assert!(cold > MAX_TXN_OPS, "{cold} cold segments");
    let hw = b.partition("t", 0).unwrap().high_watermark();
    assert_eq!(b.delete_records("t", 0, hw).await.unwrap(), hw);
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Earliest).await.unwrap().0,
        hw
    );
    let left = b
        .view()
        .segments
        .get(&("t".to_string(), 0))
        .map_or(0, |m| m.len());
    assert_eq!(left, 0, "every cold segment below the new start is gone");
    b.shutdown().await;
}

/// A broker that stops between a topic's transactions leaves partitions
/// without state, hence never led; once the record is
/// `STATE_REPAIR_AFTER_MS` old, any broker writes them.
#[tokio::test]
async fn partition_states_a_stopped_writer_left_unwritten_are_repaired() {
    use crate::topics::STATE_REPAIR_AFTER_MS;
    use strata_meta::{Op, Txn};
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = broker(d.path(), clock.clone()).await;
    let n = 300;
    b.create_topic(topic("half", n, &[]), false).await.unwrap();
    // As if its writer had stopped after the first transaction.
    for p in MAX_TXN_OPS as i32 - 1..n {
        let key = b.keys.partition_state("half", p);
        b.meta.txn(Txn::new().then(Op::delete(key))).await.unwrap();
    }
    b.sync_view().await.unwrap();
    let stateless = |b: &Broker| {
        let v = b.view();
        (0..n)
            .filter(|p| !v.states.contains_key(&("half".to_string(), *p)))
            .count()
    };
    assert_eq!(stateless(&b), n as usize - (MAX_TXN_OPS - 1));
    // Too soon: its writer may still be at it.
    b.repair_partition_states().await;
    b.sync_view().await.unwrap();
    assert_eq!(stateless(&b), n as usize - (MAX_TXN_OPS - 1));
    clock.advance(STATE_REPAIR_AFTER_MS);
    b.repair_partition_states().await;
    b.sync_view().await.unwrap();
    assert_eq!(stateless(&b), 0);
    b.reconcile().await;
    b.await_leaders("half", std::time::Duration::from_secs(10))
        .await;
    all_led(&b, "half", n);
    b.shutdown().await;
}

/// Ids longer than a Kafka string are refused before they name a key,
/// and a transaction whose state outgrows a store transaction
/// (`strata_meta::MAX_TXN_BYTES`) is refused the addition with a request
/// error, stays as it was, and still aborts.
#[tokio::test]
async fn ids_and_transaction_states_past_the_stores_bounds_are_refused() {
    use crate::groups::GroupError;
    use crate::keys::MAX_ID_BYTES;
    use crate::BrokerError;
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(1_000)).await;
    let long = "g".repeat(MAX_ID_BYTES + 1);
    assert_eq!(
        b.ensure_coordinator(&long).await,
        Err(GroupError::InvalidGroupId)
    );
    assert!(matches!(
        b.txn_init_producer_id(&long, 60_000, None).await,
        Err(BrokerError::InvalidRequest(m)) if m.contains("32768 bytes")
    ));
    assert!(b.view().coordinators.is_empty());
    assert!(b.view().txn_coordinators.is_empty());

    // Groups of the longest id: the state holds about 32 of them.
    let (pid, epoch) = b.txn_init_producer_id("tx", 60_000, None).await.unwrap();
    let group = |i: usize| format!("{i:05}{}", "x".repeat(MAX_ID_BYTES - 5));
    let mut added = 0;
    let refused = loop {
        assert!(added < 64, "a state of {added} long groups was stored");
        match b.txn_add_offsets("tx", pid, epoch, &group(added)).await {
            Ok(()) => added += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&refused, BrokerError::InvalidRequest(m) if m.contains("bytes")),
        "{refused:?}"
    );
    assert!(added >= 16, "{added} groups of {MAX_ID_BYTES} bytes fit");
    let described = b.describe_transaction("tx").await.unwrap();
    assert_eq!(described.record.groups.len(), added);
    b.txn_end("tx", pid, epoch, false).await.unwrap();
    b.shutdown().await;
}
