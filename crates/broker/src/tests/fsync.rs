//! When an acknowledged write is fsync'd (decision 0015): every acks=all
//! write with `fsync_on_ack_all` (the dev profile); without it (the
//! cluster profile), an acks=all write only while the leader is the only
//! in-sync replica. Whether a produce fsync'd shows in the partition's
//! unflushed count once it returns (nothing else flushes here).

use super::{batch, broker_with, topic};
use crate::clock::ManualClock;
use crate::config::BrokerSettings;
use crate::durability::Acks;
use crate::replication::replica_set::ReplicaSet;
use std::time::Duration;

fn settings(fsync_on_ack_all: bool) -> BrokerSettings {
    BrokerSettings {
        fsync_on_ack_all,
        ..BrokerSettings::default()
    }
}

#[tokio::test]
async fn acks_all_is_fsynced_when_set_or_when_the_leader_is_alone() {
    for fsync_on_ack_all in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let b = broker_with(d.path(), ManualClock::new(0), settings(fsync_on_ack_all)).await;
        b.create_topic(topic("t", 1, &[]), false).await.unwrap();
        let p = b.partition("t", 0).unwrap();
        assert_eq!(p.isr_size(), 1);

        b.produce("t", 0, &batch(5, 0), Acks::Leader).await.unwrap();
        assert_eq!(p.unflushed_messages(), 5, "acks=1 is not fsynced");
        // The only in-sync replica: fsynced whatever the setting.
        b.produce("t", 0, &batch(5, 1), Acks::All).await.unwrap();
        assert_eq!(
            p.unflushed_messages(),
            0,
            "fsync_on_ack_all={fsync_on_ack_all}"
        );
        b.shutdown().await;
    }
}

#[tokio::test]
async fn acks_all_with_a_follower_in_sync_is_fsynced_only_when_set() {
    for fsync_on_ack_all in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let b = broker_with(d.path(), ManualClock::new(0), settings(fsync_on_ack_all)).await;
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
        let want = if fsync_on_ack_all { 0 } else { 5 };
        assert_eq!(
            p.unflushed_messages(),
            want,
            "fsync_on_ack_all={fsync_on_ack_all}"
        );
        b.shutdown().await;
    }
}

#[test]
fn the_rule() {
    use crate::durability::needs_fsync;
    // (acks, fsync_on_ack_all, isr size, unflushed, flush.messages) -> fsync
    let cases = [
        (Acks::All, true, 3, 1, i64::MAX, true),
        (Acks::All, false, 3, 1, i64::MAX, false),
        (Acks::All, false, 1, 1, i64::MAX, true),
        (Acks::Leader, true, 1, 1, i64::MAX, false),
        (Acks::None, false, 1, 1, i64::MAX, false),
        (Acks::Leader, false, 3, 10, 10, true),
        (Acks::All, false, 3, 9, 10, false),
    ];
    for (acks, set, isr, unflushed, every, want) in cases {
        assert_eq!(
            needs_fsync(acks, set, isr, unflushed, every),
            want,
            "{acks:?} fsync_on_ack_all={set} isr={isr} unflushed={unflushed}/{every}"
        );
    }
}
