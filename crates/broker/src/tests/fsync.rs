//! When an acknowledged write is fsync'd (decision 0015): every acks=all
//! write (`AckAllFsync::Always`, the dev profile), one only while the
//! leader is the only in-sync replica (`Unreplicated`, the cluster
//! profile), or none (`Never`). Whether a produce fsync'd shows in the
//! partition's unflushed count once it returns (nothing else flushes
//! here).

use super::{batch, broker_with, topic};
use crate::clock::ManualClock;
use crate::config::BrokerSettings;
use crate::durability::{AckAllFsync, Acks};
use crate::replication::replica_set::ReplicaSet;
use std::time::Duration;

const ALL: [AckAllFsync; 3] = [
    AckAllFsync::Always,
    AckAllFsync::Unreplicated,
    AckAllFsync::Never,
];

fn settings(ack_all_fsync: AckAllFsync) -> BrokerSettings {
    BrokerSettings {
        ack_all_fsync,
        ..BrokerSettings::default()
    }
}

#[tokio::test]
async fn a_lone_leader_fsyncs_acks_all_unless_never() {
    for mode in ALL {
        let d = tempfile::tempdir().unwrap();
        let b = broker_with(d.path(), ManualClock::new(0), settings(mode)).await;
        b.create_topic(topic("t", 1, &[]), false).await.unwrap();
        let p = b.partition("t", 0).unwrap();
        assert_eq!(p.isr_size(), 1);

        b.produce("t", 0, &batch(5, 0), Acks::Leader).await.unwrap();
        assert_eq!(p.unflushed_messages(), 5, "acks=1 is not fsynced");
        // The only in-sync replica.
        b.produce("t", 0, &batch(5, 1), Acks::All).await.unwrap();
        let never = mode == AckAllFsync::Never;
        assert_eq!(
            p.unflushed_messages(),
            if never { 10 } else { 0 },
            "{mode:?}"
        );
        let flushes = b
            .metrics
            .log_flushes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(flushes, if never { 0 } else { 1 }, "{mode:?}");
        b.shutdown().await;
    }
}

#[tokio::test]
async fn acks_all_with_a_follower_in_sync_is_fsynced_only_always() {
    for mode in ALL {
        let d = tempfile::tempdir().unwrap();
        let b = broker_with(d.path(), ManualClock::new(0), settings(mode)).await;
        b.create_topic(topic("t", 1, &[]), false).await.unwrap();
        let p = b.partition("t", 0).unwrap();
        // A follower (broker `me + 1`) in sync from here on.
        let me = b.node_id();
        let set = ReplicaSet::new(me, vec![me, me + 1], &[me + 1], p.log_end_offset(), 0);
        p.promote(p.leader_epoch() + 1, 0, set);
        assert_eq!(p.isr_size(), 2);

        let produce = tokio::spawn({
            let b = b.clone();
            async move { b.produce("t", 0, &batch(5, 0), Acks::All).await }
        });
        // The write waits for the follower; it fetches it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while p.log_end_offset() < 5 {
            assert!(tokio::time::Instant::now() < deadline, "not appended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.follower_position(me + 1, 5, 0);
        let done = tokio::time::timeout(Duration::from_secs(10), produce).await;
        done.unwrap().unwrap().unwrap();
        let want = if mode == AckAllFsync::Always { 0 } else { 5 };
        assert_eq!(p.unflushed_messages(), want, "{mode:?}");
        b.shutdown().await;
    }
}

#[test]
fn the_rule() {
    use crate::durability::needs_fsync;
    use AckAllFsync::{Always, Never, Unreplicated};
    // (acks, mode, isr size, unflushed, flush.messages) -> fsync
    let cases = [
        (Acks::All, Always, 3, 1, i64::MAX, true),
        (Acks::All, Unreplicated, 3, 1, i64::MAX, false),
        (Acks::All, Unreplicated, 1, 1, i64::MAX, true),
        (Acks::All, Never, 1, 1, i64::MAX, false),
        (Acks::Leader, Always, 1, 1, i64::MAX, false),
        (Acks::None, Unreplicated, 1, 1, i64::MAX, false),
        (Acks::Leader, Never, 3, 10, 10, true),
        (Acks::All, Unreplicated, 3, 9, 10, false),
    ];
    for (acks, mode, isr, unflushed, every, want) in cases {
        assert_eq!(
            needs_fsync(acks, mode, || isr, unflushed, every),
            want,
            "{acks:?} {mode:?} isr={isr} unflushed={unflushed}/{every}"
        );
    }
}
