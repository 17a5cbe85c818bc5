use crate::clock::ManualClock;
use crate::config::BrokerSettings;
use crate::durability::Acks;
use crate::groups::CommittedOffset;
use crate::topics::{AlterOp, CreateTopic};
use crate::{Broker, BrokerBuilder, BrokerError, FetchSpec, OffsetSpec};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strata_meta::{EmbeddedStore, MetadataStore};
use strata_record::{build_batch, KeyValue};

mod expiry;
mod fsync;
mod large;
mod recreated;

pub(crate) async fn broker(dir: &Path, clock: ManualClock) -> Arc<Broker> {
    broker_with(dir, clock, BrokerSettings::default()).await
}

/// [`broker`] with `settings`.
pub(crate) async fn broker_with(
    dir: &Path,
    clock: ManualClock,
    settings: BrokerSettings,
) -> Arc<Broker> {
    let meta: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(&dir.join("meta")).unwrap());
    BrokerBuilder::new(dir.join("data"))
        .settings(settings)
        .metadata_store(meta)
        .clock(Arc::new(clock))
        .build()
        .await
        .unwrap()
}

pub(crate) fn topic(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopic {
    CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: -1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn batch(n: usize, ts: i64) -> Bytes {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| vec![b'x'; 10 + i]).collect();
    let recs: Vec<KeyValue<'_>> = vals.iter().map(|v| (None, Some(v.as_slice()))).collect();
    build_batch(0, ts, &recs).freeze()
}

#[tokio::test]
async fn create_produce_fetch_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    {
        let b = broker(d.path(), clock.clone()).await;
        b.create_topic(topic("t", 2, &[]), false).await.unwrap();
        assert_eq!(
            b.create_topic(topic("t", 2, &[]), false).await.err(),
            Some(BrokerError::TopicAlreadyExists("t".into()))
        );
        let o = b.produce("t", 1, &batch(3, 1000), Acks::All).await.unwrap();
        assert_eq!(o.base_offset, 0);
        let o = b
            .produce("t", 1, &batch(2, 1001), Acks::Leader)
            .await
            .unwrap();
        assert_eq!(o.base_offset, 3);
        assert!(matches!(
            b.produce("t", 7, &batch(1, 0), Acks::All).await,
            Err(BrokerError::UnknownTopicOrPartition(_))
        ));
        let r = b
            .fetch(
                &[FetchSpec {
                    topic: "t".into(),
                    partition: 1,
                    offset: 0,
                    max_bytes: 1 << 20,
                    current_leader_epoch: None,
                    isolation: Default::default(),
                }],
                Duration::from_millis(0),
                1,
                1 << 20,
            )
            .await;
        let read = r[0].as_ref().unwrap();
        assert_eq!(read.high_watermark, 5);
        assert!(!read.data.is_empty());
        b.shutdown().await;
    }
    let b = broker(d.path(), clock).await;
    assert_eq!(
        b.list_offset("t", 1, OffsetSpec::Latest).await.unwrap().0,
        5
    );
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Latest).await.unwrap().0,
        0
    );
    assert_eq!(b.topic("t").unwrap().partitions.len(), 2);
}

#[tokio::test]
async fn fetch_long_poll_wakes_on_append_and_times_out() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    b.create_topic(topic("t", 1, &[]), false).await.unwrap();
    let spec = vec![FetchSpec {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        current_leader_epoch: None,
        isolation: Default::default(),
    }];
    // Times out with nothing.
    let start = std::time::Instant::now();
    let r = b.fetch(&spec, Duration::from_millis(100), 1, 1 << 20).await;
    assert!(r[0].as_ref().unwrap().data.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(90));
    // Woken by an append long before the 10 s max wait.
    let b2 = b.clone();
    let spec2 = spec.clone();
    let waiter =
        tokio::spawn(async move { b2.fetch(&spec2, Duration::from_secs(10), 1, 1 << 20).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = std::time::Instant::now();
    b.produce("t", 0, &batch(1, 0), Acks::Leader).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(!r[0].as_ref().unwrap().data.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn oversized_and_corrupt_batches_are_refused_and_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    b.create_topic(topic("t", 1, &[("max.message.bytes", "200")]), false)
        .await
        .unwrap();
    assert!(matches!(
        b.produce("t", 0, &batch(20, 0), Acks::All).await,
        Err(BrokerError::MessageTooLarge { .. })
    ));
    let mut bad = batch(1, 0).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(
        b.produce("t", 0, &Bytes::from(bad), Acks::All).await,
        Err(BrokerError::CorruptMessage(_))
    ));
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Latest).await.unwrap().0,
        0
    );
}

#[tokio::test]
async fn list_offsets_by_timestamp_and_retention() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let b = broker(d.path(), clock.clone()).await;
    b.create_topic(
        topic(
            "t",
            1,
            &[("segment.bytes", "1024"), ("retention.ms", "5000")],
        ),
        false,
    )
    .await
    .unwrap();
    for i in 0..30 {
        b.produce("t", 0, &batch(1, 10_000 + i * 100), Acks::Leader)
            .await
            .unwrap();
    }
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Timestamp(10_450))
            .await
            .unwrap(),
        (5, 10_500)
    );
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Timestamp(99_999))
            .await
            .unwrap(),
        (-1, -1)
    );
    clock.advance(10_000);
    b.housekeeping(true).await;
    let start = b.list_offset("t", 0, OffsetSpec::Earliest).await.unwrap().0;
    assert!(start > 0, "retention must have removed old segments");
}

/// Rolls, retention deletions and producer-state snapshots wait on the
/// disk: the broker runs a partition's housekeeping on the blocking pool,
/// never on the async worker (here the test's own thread).
#[tokio::test(flavor = "current_thread")]
async fn housekeeping_runs_off_the_async_worker() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let b = broker(d.path(), clock.clone()).await;
    b.create_topic(topic("t", 1, &[("segment.bytes", "1024")]), false)
        .await
        .unwrap();
    for i in 0..5 {
        b.produce("t", 0, &batch(20, 10_000 + i), Acks::Leader)
            .await
            .unwrap();
    }
    b.housekeeping(true).await;
    let p = b.hosted_partitions().pop().unwrap();
    let ran_on = *p.housekeeping_thread.lock().unwrap();
    assert!(ran_on.is_some(), "housekeeping ran");
    assert_ne!(ran_on, Some(std::thread::current().id()));
}

#[tokio::test]
async fn alter_configs_persist_and_apply() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let b = broker(d.path(), clock.clone()).await;
        b.create_topic(topic("t", 1, &[]), false).await.unwrap();
        b.alter_topic_configs(
            "t",
            vec![AlterOp::Set("max.message.bytes".into(), "100".into())],
            false,
        )
        .await
        .unwrap();
        assert!(b
            .alter_topic_configs("t", vec![AlterOp::Set("bogus".into(), "1".into())], false)
            .await
            .is_err());
        b.create_partitions("t", 3, false).await.unwrap();
        assert!(b.create_partitions("t", 2, false).await.is_err());
    }
    let b = broker(d.path(), clock).await;
    let t = b.topic("t").unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(t.config.max_message_bytes(), 100);
    assert!(matches!(
        b.produce("t", 2, &batch(5, 0), Acks::All).await,
        Err(BrokerError::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn delete_topic_removes_files_and_metadata() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    b.create_topic(topic("gone", 2, &[]), false).await.unwrap();
    b.produce("gone", 0, &batch(1, 0), Acks::All).await.unwrap();
    assert!(d.path().join("data/gone-0").exists());
    b.delete_topic("gone").await.unwrap();
    assert!(!d.path().join("data/gone-0").exists());
    assert!(b.topic("gone").is_none());
    // Recreating starts from offset 0.
    b.create_topic(topic("gone", 1, &[]), false).await.unwrap();
    assert_eq!(
        b.produce("gone", 0, &batch(1, 0), Acks::All)
            .await
            .unwrap()
            .base_offset,
        0
    );
}

#[tokio::test]
async fn committed_offsets_survive_restart() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let off = |o| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp: 0,
        topic_id: None,
    };
    {
        let b = broker(d.path(), clock.clone()).await;
        b.groups
            .commit_offsets(
                "g/1",
                "",
                -1,
                vec![("t".into(), 0, off(42)), ("t".into(), 1, off(7))],
            )
            .await
            .unwrap();
    }
    let b = broker(d.path(), clock).await;
    // Offsets load when this broker becomes the group's coordinator.
    b.ensure_coordinator("g/1").await.unwrap();
    let got = b.groups.fetch_offsets("g/1", None);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].2.as_ref().unwrap().offset, 42);
    assert_eq!(b.groups.list()[0].group_id, "g/1");
    b.groups.delete_group("g/1").await.unwrap();
    assert!(b.groups.fetch_offsets("g/1", None).is_empty());
}

#[tokio::test]
async fn offload_commits_under_the_leader_fence_and_a_fenced_upload_never_appears() {
    use object_store::{memory::InMemory, ObjectStore};
    use strata_meta::{Compare, MemStore, Op, Txn};
    let d = tempfile::tempdir().unwrap();
    let meta = Arc::new(MemStore::new());
    let store = Arc::new(InMemory::new());
    let b = BrokerBuilder::new(d.path().join("data"))
        .metadata_store(meta.clone())
        .clock(Arc::new(ManualClock::new(0)))
        .cold_tier(store.clone(), "lake", 1 << 20)
        .build()
        .await
        .unwrap();
    b.create_topic(topic("t", 1, &[("segment.bytes", "2048")]), false)
        .await
        .unwrap();
    let objects = |s: Arc<InMemory>| async move {
        use futures::TryStreamExt;
        s.list(None).try_collect::<Vec<_>>().await.unwrap().len()
    };
    for i in 0..10 {
        b.produce("t", 0, &batch(20, i), Acks::All).await.unwrap();
    }
    assert!(b.offload_once().await >= 1);
    let committed = objects(store.clone()).await;
    assert!(committed >= 1);
    let manifest = meta
        .range("/strata/strata/partitions/t/0/segments/")
        .await
        .unwrap()
        .kvs;
    assert_eq!(manifest.len(), committed);
    assert!(manifest[0]
        .value
        .starts_with(b"{\"object_key\":\"lake/topics/t/partition=0/"));

    // Another broker takes the leader key while this one is paused: its
    // fencing token (the key's create revision) no longer matches.
    let leader = "/strata/strata/partitions/t/0/leader".to_string();
    meta.txn(Txn::new().then(Op::delete(leader.clone())))
        .await
        .unwrap();
    meta.txn(
        Txn::new()
            .when(Compare::CreateRevision(leader.clone(), 0))
            .then(Op::put(leader, "{\"broker\":7,\"epoch\":9}")),
    )
    .await
    .unwrap();
    for i in 10..20 {
        b.produce("t", 0, &batch(20, i), Acks::All).await.unwrap();
    }
    assert_eq!(b.offload_once().await, 0, "a fenced leader commits nothing");
    assert_eq!(
        objects(store).await,
        committed,
        "and its upload was removed"
    );
    let after = meta
        .range("/strata/strata/partitions/t/0/segments/")
        .await
        .unwrap()
        .kvs;
    assert_eq!(after.len(), committed);
}

#[tokio::test]
async fn retention_spans_both_tiers_and_topic_deletion_removes_objects() {
    use object_store::{memory::InMemory, ObjectStore};
    use strata_meta::MemStore;
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(100_000);
    let store = Arc::new(InMemory::new());
    let b = BrokerBuilder::new(d.path().join("data"))
        .metadata_store(Arc::new(MemStore::new()))
        .clock(Arc::new(clock.clone()))
        .cold_tier(store.clone(), "", 1 << 20)
        .build()
        .await
        .unwrap();
    b.create_topic(
        topic(
            "t",
            1,
            &[
                ("segment.bytes", "2048"),
                ("retention.ms", "10000"),
                ("local.retention.bytes", "4096"),
            ],
        ),
        false,
    )
    .await
    .unwrap();
    let count = |s: Arc<InMemory>| async move {
        use futures::TryStreamExt;
        s.list(None).try_collect::<Vec<_>>().await.unwrap().len()
    };
    // Old records, then new ones.
    for i in 0..10 {
        b.produce("t", 0, &batch(20, 100_000 + i), Acks::All)
            .await
            .unwrap();
    }
    for i in 0..10 {
        b.produce("t", 0, &batch(20, 115_000 + i), Acks::All)
            .await
            .unwrap();
    }
    assert!(b.offload_once().await >= 2);
    let offloaded = count(store.clone()).await;
    b.housekeeping(true).await; // local retention: only offloaded segments go
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Earliest).await.unwrap().0,
        0,
        "cold keeps history"
    );

    // 12 s later the old records are past retention.ms in both tiers.
    clock.advance(12_000);
    b.housekeeping(true).await;
    let earliest = b.list_offset("t", 0, OffsetSpec::Earliest).await.unwrap().0;
    assert!(earliest > 0, "expired cold segments are gone");
    let left = count(store.clone()).await;
    assert!(left < offloaded, "their objects were deleted");
    let spec = [FetchSpec {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        current_leader_epoch: None,
        isolation: Default::default(),
    }];
    let r = b.fetch(&spec, Duration::from_millis(0), 1, 1 << 20).await;
    assert!(matches!(r[0], Err(BrokerError::OffsetOutOfRange { .. })));

    b.delete_topic("t").await.unwrap();
    assert_eq!(
        count(store).await,
        0,
        "deleting the topic deletes its objects"
    );
}

#[tokio::test]
async fn garbage_collection_removes_only_old_unreferenced_objects() {
    use object_store::{memory::InMemory, path::Path as ObjectPath, ObjectStore, ObjectStoreExt};
    use strata_meta::MemStore;
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(InMemory::new());
    let b = BrokerBuilder::new(d.path().join("data"))
        .metadata_store(Arc::new(MemStore::new()))
        .cold_tier(store.clone(), "lake", 1 << 20)
        .build()
        .await
        .unwrap();
    b.create_topic(topic("t", 1, &[("segment.bytes", "2048")]), false)
        .await
        .unwrap();
    for i in 0..10 {
        b.produce("t", 0, &batch(20, b.now_ms() + i), Acks::All)
            .await
            .unwrap();
    }
    assert!(b.offload_once().await >= 1);
    let keys = |s: Arc<InMemory>| async move {
        use futures::TryStreamExt;
        let mut v: Vec<String> = s
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        v.sort();
        v
    };
    let committed = keys(store.clone()).await;
    let orphan = "lake/topics/t/partition=0/00000000000000099999-00000000000000099999-e1.parquet";
    let gone_topic =
        "lake/topics/deleted/partition=0/00000000000000000000-00000000000000000009-e1.parquet";
    for k in [orphan, gone_topic] {
        store
            .put(&ObjectPath::from(k), bytes::Bytes::from_static(b"x").into())
            .await
            .unwrap();
    }
    // Within the grace period nothing is touched.
    assert_eq!(b.collect_garbage(3_600_000).await, 0);
    assert_eq!(keys(store.clone()).await.len(), committed.len() + 2);
    // Past it, only the unreferenced objects go.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(b.collect_garbage(1).await, 2);
    assert_eq!(keys(store).await, committed);
}

#[tokio::test]
async fn acks_all_needs_min_insync_replicas_and_epochs_are_tracked() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let b = broker(d.path(), clock.clone()).await;
    b.create_topic(topic("strict", 1, &[("min.insync.replicas", "2")]), false)
        .await
        .unwrap();
    // One replica can never satisfy min.insync.replicas=2: refused before
    // anything is written; acks=1 is unaffected.
    assert!(matches!(
        b.produce("strict", 0, &batch(2, 0), Acks::All).await,
        Err(BrokerError::NotEnoughReplicas(_))
    ));
    let o = b
        .produce("strict", 0, &batch(2, 0), Acks::Leader)
        .await
        .unwrap();
    assert_eq!(o.base_offset, 0);
    // The first leader epoch is 1; OffsetForLeaderEpoch answers from the
    // batches, and a client with a stale or future epoch is told so.
    assert_eq!(
        b.end_offset_for_epoch("strict", 0, -1, 1).unwrap(),
        Some((1, 2))
    );
    assert_eq!(
        b.end_offset_for_epoch("strict", 0, -1, 0).unwrap(),
        Some((0, 0))
    );
    assert!(matches!(
        b.end_offset_for_epoch("strict", 0, 0, 1),
        Err(BrokerError::FencedLeaderEpoch(_))
    ));
    assert!(matches!(
        b.end_offset_for_epoch("strict", 0, 5, 1),
        Err(BrokerError::UnknownLeaderEpoch(_))
    ));
    assert_eq!(b.epoch_of_offset("strict", 0, 1), 1);
    // Fetch checks the client's epoch too (KIP-320).
    let spec = |epoch| FetchSpec {
        topic: "strict".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        current_leader_epoch: epoch,
        isolation: Default::default(),
    };
    let r = b
        .fetch(
            &[spec(Some(0)), spec(Some(1)), spec(Some(2)), spec(None)],
            Duration::ZERO,
            1,
            1 << 20,
        )
        .await;
    assert!(matches!(r[0], Err(BrokerError::FencedLeaderEpoch(_))));
    assert!(r[1].as_ref().is_ok_and(|read| !read.data.is_empty()));
    assert!(matches!(r[2], Err(BrokerError::UnknownLeaderEpoch(_))));
    assert!(r[3].is_ok());
    // Unclean election is refused rather than silently ignored.
    assert!(matches!(
        b.create_topic(
            topic("unclean", 1, &[("unclean.leader.election.enable", "true")]),
            false
        )
        .await,
        Err(BrokerError::InvalidConfig(_))
    ));
    b.shutdown().await;
}

/// A broker whose topic `t` has a few thousand records only in the cold
/// tier (64 KiB segments, offloaded after each of `rounds` rounds of
/// producing, so in at least that many files), cached up to `cache` bytes;
/// and the first offset still in the local log.
async fn cold_only_topic(cache: u64, rounds: i64) -> (tempfile::TempDir, Arc<Broker>, i64) {
    cold_topic(cache, rounds, "1").await
}

/// [`cold_only_topic`] keeping `local_retention` bytes of segments in the
/// local log (offloaded ones among them).
async fn cold_topic(
    cache: u64,
    rounds: i64,
    local_retention: &str,
) -> (tempfile::TempDir, Arc<Broker>, i64) {
    use object_store::memory::InMemory;
    use strata_meta::MemStore;
    let d = tempfile::tempdir().unwrap();
    let b = BrokerBuilder::new(d.path().join("data"))
        .metadata_store(Arc::new(MemStore::new()))
        .cold_tier(Arc::new(InMemory::new()), "lake", cache)
        .build()
        .await
        .unwrap();
    let configs = [
        ("segment.bytes", "65536"),
        ("local.retention.bytes", local_retention),
    ];
    b.create_topic(topic("t", 1, &configs), false)
        .await
        .unwrap();
    for round in 0..rounds {
        for i in 0..300 {
            b.produce("t", 0, &batch(20, b.now_ms() + round * 1000 + i), Acks::All)
                .await
                .unwrap();
        }
        for _ in 0..10 {
            if b.offload_once().await == 0 {
                break;
            }
        }
    }
    b.housekeeping(true).await;
    let local_start = b.partition("t", 0).unwrap().log_start_offset();
    assert!(
        local_start > 2_000,
        "a few thousand records only in the cold tier"
    );
    let earliest = b.list_offset("t", 0, OffsetSpec::Earliest).await.unwrap().0;
    assert_eq!(earliest, 0, "cold keeps them (local start {local_start})");
    (d, b, local_start)
}

/// Fetches `t`-0 from offset 0 to `end`, each fetch asking for the offset
/// after the last and for the next of `sizes` bytes; checks that records
/// follow on with no gap or repeat. Returns where it stopped.
async fn read_cold_in_order(b: &Broker, end: i64, sizes: &[usize]) -> i64 {
    read_cold_in_order_from(b, 0, end, sizes).await
}

/// [`read_cold_in_order`] from offset `from`.
async fn read_cold_in_order_from(b: &Broker, from: i64, end: i64, sizes: &[usize]) -> i64 {
    use strata_record::BatchIter;
    let mut next = from;
    for &max_bytes in sizes.iter().cycle().take(1_000) {
        if next >= end {
            break;
        }
        let spec = [FetchSpec {
            topic: "t".into(),
            partition: 0,
            offset: next,
            max_bytes,
            current_leader_epoch: None,
            isolation: Default::default(),
        }];
        let r = b.fetch(&spec, Duration::from_millis(0), 1, max_bytes).await;
        let data = r.into_iter().next().unwrap().unwrap().data;
        let mut it = BatchIter::verifying(&data);
        for (_, h) in it.by_ref() {
            assert_eq!(
                h.base_offset, next,
                "records follow on with no gap or repeat"
            );
            next = h.last_offset() + 1;
        }
        assert!(it.stop_reason().is_none());
    }
    next
}

#[tokio::test]
async fn a_consumer_reading_the_cold_tier_continues_on_one_reader() {
    use std::sync::atomic::Ordering;
    // Files kept in the cold cache (read in memory), then none (ranged reads).
    for cache in [1 << 20, 0] {
        let (_d, b, local_start) = cold_only_topic(cache, 1).await;
        // Fetches of about 70 records or 2000: several per cold file, each
        // asking for the offset after the last. A fetch smaller than the one
        // before cannot take what was read ahead for it, and reads afresh.
        let next = read_cold_in_order(&b, local_start, &[2_000, 60_000, 2_000]).await;
        assert!(next >= local_start, "read through the cold tier");
        assert!(
            b.metrics.cold_reads_continued.load(Ordering::Relaxed) > 0,
            "fetches went on from kept readers (cache {cache})"
        );
    }
}

/// The manifest entries of `t`-0's first two cold files.
fn first_two_cold_files(
    b: &Broker,
) -> (crate::cluster::SegmentEntry, crate::cluster::SegmentEntry) {
    let v = b.view();
    let m = v.segments.get(&("t".to_string(), 0)).unwrap();
    let mut files = m.values();
    (files.next().unwrap().clone(), files.next().unwrap().clone())
}

#[tokio::test]
async fn a_range_read_file_has_its_next_file_read_ahead_from_its_first_fetches() {
    // Ranged (no cache): the next file's reader starts while this one is
    // read. Cached whole: only once this one's reader reaches its end.
    for (cache, early) in [(0, true), (16 << 20, false)] {
        let (_d, b, _) = cold_only_topic(cache, 3).await;
        let (first, second) = first_two_cold_files(&b);
        // Three small fetches: well inside the first file.
        let next = read_cold_in_order(&b, 1, &[2_000]).await;
        let next = read_cold_in_order_from(&b, next, next + 100, &[2_000]).await;
        assert!(next < first.last_offset, "still in the first file");
        let cold = b.cold.as_ref().unwrap();
        assert_eq!(
            cold.cursors
                .contains(&second.object_key, first.last_offset + 1),
            early,
            "cache {cache}"
        );
    }
}

#[tokio::test]
async fn a_timestamp_lookup_and_an_inspection_range_read_a_cold_file() {
    use std::sync::atomic::Ordering;
    // No cache: every read goes to the store, through the ranged reader.
    let (_d, b, _) = cold_only_topic(0, 3).await;
    let (first, second) = first_two_cold_files(&b);
    let stats = b.cold_cache_stats().unwrap();
    let reads = || stats.store_reads.load(Ordering::Relaxed);
    let before = reads();
    // Timestamps grow with offsets here: the first record after the first
    // file's last timestamp is the second file's first.
    assert_eq!(
        b.list_offset("t", 0, OffsetSpec::Timestamp(first.max_timestamp + 1))
            .await
            .unwrap(),
        (second.base_offset, second.min_timestamp)
    );
    // The footer, then one row group's offsets and timestamps.
    assert_eq!(reads() - before, 2, "range reads of the file");
    let md = b
        .inspect_cold_segment("t", 0, first.base_offset)
        .await
        .unwrap();
    assert_eq!(md["rows"], first.records);
    assert!(md["row_groups"].as_u64().unwrap() >= 1);
    assert_eq!(md["metadata"]["strata.format.version"], "1");
    assert_eq!(reads() - before, 3, "the footer only");
    b.shutdown().await;
}

#[tokio::test]
async fn a_consumer_reaching_the_local_log_starts_no_read_ahead_of_a_cold_file_there() {
    for cache in [16 << 20, 0] {
        let (_d, b, local_start) = cold_topic(cache, 3, "200000").await;
        // The newest files of the cold tier are in the local log too.
        let there = b
            .view()
            .cold_segment("t", 0, local_start)
            .expect("a cold file holds the local log's start");
        let next = read_cold_in_order(&b, local_start, &[4_000]).await;
        assert!(next >= local_start, "read through the cold tier");
        // The fetch at the local start reads the local log: reading that
        // file ahead (from the store, without the cache) would be wasted.
        let cold = b.cold.as_ref().unwrap();
        assert!(
            !cold.cursors.contains(&there.object_key, local_start),
            "a cold file the local log holds was read ahead (cache {cache})"
        );
    }
}

/// Reads a topic of `rounds` cold files (cached up to `cache` bytes) from
/// the start with fetches of `sizes` bytes, as `read_cold_in_order`;
/// returns the number of files, of fetches and of fresh reader opens.
async fn read_cold_files(cache: u64, rounds: i64, sizes: &[usize]) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering;
    let (_d, b, local_start) = cold_only_topic(cache, rounds).await;
    let files = b.view().segments.values().map(|m| m.len()).sum::<usize>() as u64;
    assert!(files >= 3, "{files} cold files");
    let next = read_cold_in_order(&b, local_start, sizes).await;
    assert!(next >= local_start, "read through the cold tier");
    let reads = b.metrics.cold_reads.load(Ordering::Relaxed);
    let continued = b.metrics.cold_reads_continued.load(Ordering::Relaxed);
    (files, reads, reads - continued)
}

#[tokio::test]
async fn a_consumer_reading_cold_files_one_after_another_finds_each_one_read_ahead() {
    // Files in the cold cache, then none (range-read from the store).
    for cache in [16 << 20, 0] {
        let (files, reads, opened) = read_cold_files(cache, 5, &[4_000]).await;
        assert!(reads > files, "{reads} fetches for {files} files");
        // Only the first fetch opened a reader: every later file's reader
        // had been started when the one before had read its file to the end.
        assert_eq!(
            opened, 1,
            "{reads} fetches, {opened} opened (cache {cache})"
        );
    }
}

#[tokio::test]
async fn a_fetch_larger_than_a_read_ahead_chunk_takes_several_and_reads_on_ahead() {
    use crate::cold::cursors::READ_AHEAD_MAX;
    // Files in the cold cache, then none (range-read from the store).
    for cache in [16 << 20, 0] {
        // Fetches of 8 chunks: about half a file each, and one of 16 (a
        // file or what is left of it).
        let sizes = [8 * READ_AHEAD_MAX, 8 * READ_AHEAD_MAX, 16 * READ_AHEAD_MAX];
        let (files, reads, opened) = read_cold_files(cache, 4, &sizes).await;
        assert!(
            reads <= 3 * files,
            "a fetch takes several chunks: {reads} fetches for {files} files"
        );
        // Read ahead like smaller fetches: only the first fetch opened a
        // reader, each later file's was started at the end of the one before.
        assert_eq!(
            opened, 1,
            "{reads} fetches, {opened} opened (cache {cache})"
        );
    }
}

/// A fetch prepares its read under the partition's lock and runs it
/// without: a produce goes through while a read is prepared and not yet
/// run, and the read returns the partition as it was when prepared.
#[tokio::test]
async fn a_produce_goes_through_while_a_read_is_prepared() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(1_000)).await;
    b.create_topic(topic("t", 1, &[]), false).await.unwrap();
    b.produce("t", 0, &batch(3, 1000), Acks::Leader)
        .await
        .unwrap();
    let p = b.partition("t", 0).unwrap();
    let (log, ctx) = p
        .prepare_read(0, 1 << 20, crate::partition::Isolation::ReadUncommitted)
        .unwrap();
    let produced = tokio::time::timeout(
        Duration::from_secs(5),
        b.produce("t", 0, &batch(2, 1001), Acks::Leader),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(produced.base_offset, 3);
    let data = log.read().unwrap().data;
    let read = p.complete_read(ctx, data);
    assert_eq!(read.high_watermark, 3);
    let ends: Vec<i64> = strata_record::BatchIter::new(&read.data)
        .map(|(_, h)| h.next_offset())
        .collect();
    assert_eq!(ends, vec![3]);
    assert_eq!(
        p.read(0, 1 << 20, crate::partition::Isolation::ReadUncommitted)
            .await
            .unwrap()
            .high_watermark,
        5
    );
}

/// A fetch asking for more than `fetch.max.bytes` gets at most that much
/// (the broker bounds what a fetch holds in memory), and always at least
/// the first batch.
#[tokio::test]
async fn fetches_are_bounded_by_fetch_max_bytes() {
    let d = tempfile::tempdir().unwrap();
    let one = batch(50, 1000).len();
    let settings = BrokerSettings {
        fetch_max_bytes: 3 * one,
        ..BrokerSettings::default()
    };
    let b = broker_with(d.path(), ManualClock::new(1_000), settings).await;
    b.create_topic(topic("t", 1, &[]), false).await.unwrap();
    for _ in 0..10 {
        b.produce("t", 0, &batch(50, 1000), Acks::Leader)
            .await
            .unwrap();
    }
    let fetch = |max: usize| {
        let b = b.clone();
        async move {
            let spec = FetchSpec {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: max,
                current_leader_epoch: None,
                isolation: Default::default(),
            };
            let r = b.fetch(&[spec], Duration::ZERO, 1, max).await;
            r[0].as_ref().unwrap().data.len()
        }
    };
    assert_eq!(fetch(i32::MAX as usize).await, 3 * one);
    assert_eq!(fetch(2 * one).await, 2 * one);
    assert_eq!(fetch(1).await, one, "at least one batch");
}

/// Compressed produces large enough to be checked off the async worker
/// keep their order, and a batch that would decompress past the limit is
/// refused without being inflated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_checked_in_order_and_bombs_refused() {
    use strata_record::{compress_batch, decode_batch, BatchIter, Compression};
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    b.create_topic(topic("t", 1, &[]), false).await.unwrap();
    // Values zstd cannot shrink, so each batch is > 64 KiB compressed.
    let mut x = 1u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut sent = Vec::new();
    for round in 0..4u8 {
        let vals: Vec<Vec<u8>> = (0..80)
            .map(|i| {
                let mut v = vec![round, i];
                v.extend(noise(1000));
                v
            })
            .collect();
        let recs: Vec<KeyValue<'_>> = vals.iter().map(|v| (None, Some(v.as_slice()))).collect();
        let z = compress_batch(&build_batch(0, 0, &recs), Compression::Zstd).unwrap();
        assert!(z.len() >= 64 << 10);
        b.produce("t", 0, &z.freeze(), Acks::Leader).await.unwrap();
        sent.extend(vals);
    }
    let spec = [FetchSpec {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 8 << 20,
        current_leader_epoch: None,
        isolation: Default::default(),
    }];
    let r = b.fetch(&spec, Duration::from_millis(0), 1, 8 << 20).await;
    let data = r.into_iter().next().unwrap().unwrap().data;
    let got: Vec<Vec<u8>> = BatchIter::new(&data)
        .flat_map(|(at, h)| {
            decode_batch(&data.slice(at..at + h.total_size()))
                .unwrap()
                .records
        })
        .map(|r| r.value.unwrap().to_vec())
        .collect();
    assert_eq!(got, sent);
    // 80 MiB of zeros in one record: a few kilobytes of zstd.
    let zeros = vec![0u8; 80 << 20];
    let bomb = compress_batch(
        &build_batch(0, 0, &[(None, Some(&zeros[..]))]),
        Compression::Zstd,
    )
    .unwrap();
    assert!(bomb.len() < 1 << 20);
    let err = b
        .produce("t", 0, &bomb.freeze(), Acks::Leader)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::DecompressedTooLarge { limit } if limit == 64 << 20),
        "{err}"
    );
}
