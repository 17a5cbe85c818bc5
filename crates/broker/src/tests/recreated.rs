//! A topic deleted and created again under its name is another topic:
//! none of the old one's offsets or records are the new one's.

use super::{batch, broker, topic};
use crate::clock::ManualClock;
use crate::durability::Acks;
use crate::groups::CommittedOffset;
use crate::partition::incarnation;
use crate::topics::{to_json, PartitionStateRecord, TopicRecord};
use crate::Broker;
use strata_meta::{Op, Txn};

/// A deleted topic's offsets go with it: a topic created again under its
/// name starts with none (as in Kafka), and the keys are deleted, the
/// group's offsets of other topics kept.
#[tokio::test]
async fn a_deleted_topics_offsets_are_not_a_new_topics() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    let off = |o, topic_id: Option<String>| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp: 0,
        topic_id,
    };
    for t in ["re", "kept"] {
        b.create_topic(topic(t, 2, &[]), false).await.unwrap();
    }
    let (old, kept) = (b.topic_id("re").unwrap(), b.topic_id("kept").unwrap());
    let commit = |g: &'static str, o: Vec<(String, i32, CommittedOffset)>| {
        let b = b.clone();
        async move { b.groups.commit_offsets(g, "", -1, o).await.unwrap() }
    };
    commit(
        "g",
        vec![
            ("re".into(), 0, off(42, Some(old.clone()))),
            ("re".into(), 1, off(7, None)), // committed before ids were kept
            ("kept".into(), 0, off(5, Some(kept))),
        ],
    )
    .await;
    commit("h", vec![("re".into(), 0, off(9, Some(old.clone())))]).await;
    async fn stored(b: &Broker) -> usize {
        let offsets = b.meta.range(&b.keys.groups_prefix()).await.unwrap();
        offsets.kvs.len()
    }
    assert_eq!(stored(&b).await, 4);

    b.delete_topic("re").await.unwrap();
    b.create_topic(topic("re", 2, &[]), false).await.unwrap();
    assert_ne!(b.topic_id("re").unwrap(), old);
    let parts = [("re".to_string(), 0), ("re".to_string(), 1)];
    let got = b.fetch_offsets("g", Some(&parts));
    assert!(got.iter().all(|(_, _, o)| o.is_none()), "{got:?}");
    let all = b.fetch_offsets("g", None);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.as_str(), all[0].1), ("kept", 0));
    assert!(b.fetch_offsets("h", None).is_empty());
    assert_eq!(
        stored(&b).await,
        1,
        "only the kept topic's offset is stored"
    );

    // An offset held by a coordinator that missed the deletion is not read
    // either: it names the old topic's id.
    commit("g", vec![("re".into(), 0, off(42, Some(old)))]).await;
    assert!(b.fetch_offsets("g", Some(&parts[..1]))[0].2.is_none());
    b.shutdown().await;
}

/// What another broker's deletion of topic `name` and creation of another
/// of that name look like to `b` when it did not reconcile in between:
/// the record names a new id, the states start over, the leader keys are
/// gone (one transaction, so no view of `b` sees the topic absent).
async fn replace_behind_its_back(b: &Broker, name: &str) -> String {
    let key = b.keys.topic(name);
    let stored = b.meta.get(&key).await.unwrap().unwrap();
    let mut record: TopicRecord = serde_json::from_slice(&stored.value).unwrap();
    record.id = uuid::Uuid::new_v4().to_string();
    let mut txn = Txn::new().then(Op::put(key, to_json(&record).unwrap()));
    for p in 0..record.partitions {
        let state = PartitionStateRecord {
            replicas: vec![b.node_id()],
            isr: vec![b.node_id()],
            leader_epoch: 0,
            log_start_offset: 0,
            target_replicas: None,
        };
        txn = txn
            .then(Op::put(
                b.keys.partition_state(name, p),
                to_json(&state).unwrap(),
            ))
            .then(Op::delete(b.keys.partition_leader(name, p)));
    }
    assert!(b.meta.txn(txn).await.unwrap().succeeded);
    record.id
}

async fn led_log_end(b: &Broker, name: &str) -> i64 {
    b.sync_view().await.unwrap();
    b.reconcile().await;
    b.await_leaders(name, std::time::Duration::from_secs(10))
        .await;
    b.partition(name, 0).unwrap().log_end_offset()
}

/// A replica still open from the deleted topic is closed and deleted, not
/// carried over as the new topic's.
#[tokio::test]
async fn an_open_replica_of_the_deleted_topic_is_not_the_new_ones() {
    let d = tempfile::tempdir().unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    b.create_topic(topic("t", 1, &[]), false).await.unwrap();
    for i in 0..5 {
        b.produce("t", 0, &batch(10, i), Acks::All).await.unwrap();
    }
    assert_eq!(led_log_end(&b, "t").await, 50);
    let id = replace_behind_its_back(&b, "t").await;
    assert_eq!(led_log_end(&b, "t").await, 0, "the old topic's records");
    let dir = d.path().join("data").join("t-0");
    assert_eq!(incarnation::recorded(&dir), Some(id));
    b.produce("t", 0, &batch(3, 9), Acks::All).await.unwrap();
    assert_eq!(led_log_end(&b, "t").await, 3);
    b.shutdown().await;
}

/// A broker that was down while the topic was replaced finds the old
/// topic's directory at start, and deletes it rather than open it.
#[tokio::test]
async fn a_directory_of_the_deleted_topic_found_at_start_is_not_the_new_ones() {
    let d = tempfile::tempdir().unwrap();
    let id = {
        let b = broker(d.path(), ManualClock::new(0)).await;
        b.create_topic(topic("t", 1, &[]), false).await.unwrap();
        for i in 0..5 {
            b.produce("t", 0, &batch(10, i), Acks::All).await.unwrap();
        }
        let id = replace_behind_its_back(&b, "t").await;
        b.shutdown().await;
        id
    };
    let b = broker(d.path(), ManualClock::new(0)).await;
    assert_eq!(led_log_end(&b, "t").await, 0, "the old topic's records");
    let dir = d.path().join("data").join("t-0");
    assert_eq!(incarnation::recorded(&dir), Some(id));
    b.shutdown().await;
}

/// A broker down through a topic's deletion deletes the directory it kept
/// (not a directory without an id, nor an open replica's) once running.
#[tokio::test]
async fn a_directory_of_a_topic_deleted_while_down_is_removed() {
    let d = tempfile::tempdir().unwrap();
    {
        let b = broker(d.path(), ManualClock::new(0)).await;
        for t in ["gone", "kept"] {
            b.create_topic(topic(t, 1, &[]), false).await.unwrap();
            b.produce(t, 0, &batch(10, 0), Acks::All).await.unwrap();
        }
        // Another broker's deletion, not seen here before stopping.
        let txn = Txn::new()
            .then(Op::delete(b.keys.topic("gone")))
            .then(Op::delete_prefix(b.keys.partitions_prefix("gone")));
        assert!(b.meta.txn(txn).await.unwrap().succeeded);
        b.shutdown().await;
    }
    let data = d.path().join("data");
    let legacy = data.join("old-0");
    std::fs::create_dir_all(&legacy).unwrap();
    let b = broker(d.path(), ManualClock::new(0)).await;
    assert_eq!(b.remove_stray_replicas().await, 1);
    assert!(!data.join("gone-0").exists());
    assert!(data.join("kept-0").exists() && legacy.exists());
    assert_eq!(b.partition("kept", 0).unwrap().log_end_offset(), 10);
    b.shutdown().await;
}
