//! Producer-state snapshots written off the partition's lock; the
//! bounds on record timestamps.

use super::{FollowerStart, Partition};
use crate::config::TopicConfig;
use crate::replication::replica_set::ReplicaSet;
use bytes::Bytes;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_log::PartitionLog;
use strata_record::{build_batch_with, BatchProducer};

/// A leader of a log with 1 KiB segments, holding `batches` batches of one
/// 100-byte record (several segments).
fn leader(dir: &std::path::Path, batches: i64) -> Arc<Partition> {
    let mut configs = std::collections::BTreeMap::new();
    configs.insert("segment.bytes".to_string(), "1024".to_string());
    let cfg = Arc::new(TopicConfig::new(configs, Default::default()).unwrap());
    let log = PartitionLog::open(dir, cfg.log_config(), 0).unwrap();
    let p = Arc::new(Partition::open("t".into(), 0, log, cfg, 0).unwrap());
    p.promote(1, 0, ReplicaSet::solo(0));
    for i in 0..batches {
        p.append(&record(), i).unwrap();
    }
    p
}

fn record() -> Bytes {
    build_batch_with(0, 0, BatchProducer::NONE, &[(None, Some(&[b'x'; 100][..]))]).freeze()
}

/// Runs housekeeping on a thread of its own with its snapshot write held
/// at `stage` (until the returned sender is sent to or dropped), and
/// returns once the write got there.
fn housekeeping_held_at(
    p: &Arc<Partition>,
    stage: &'static str,
) -> (std::thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (reached_tx, reached) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(reached_tx), Mutex::new(release_rx));
    *p.snapshots.hook.lock().unwrap() = Some(Arc::new(move |at| {
        if at == stage {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
    }));
    let hk = {
        let p = p.clone();
        std::thread::spawn(move || {
            p.housekeeping(0, |_| false).unwrap();
        })
    };
    reached
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("housekeeping's snapshot write reached {stage}"));
    (hk, release)
}

/// A produce does not wait for the snapshot a roll asked for: with the
/// snapshot's write held just before its fsync, an append finishes.
#[test]
fn a_produce_does_not_wait_for_a_snapshot_write() {
    let d = tempfile::tempdir().unwrap();
    let p = leader(d.path(), 20);
    let (hk, release) = housekeeping_held_at(&p, "writing");
    let snap_end = p.log_end_offset();
    let (done_tx, done) = mpsc::channel();
    let app = {
        let p = p.clone();
        std::thread::spawn(move || {
            let r = p.append(&record(), 100).map(|a| a.base_offset);
            let _ = done_tx.send(());
            r
        })
    };
    let appended = done.recv_timeout(Duration::from_secs(2));
    release.send(()).unwrap();
    assert!(
        appended.is_ok(),
        "the append waited for the snapshot's write"
    );
    assert_eq!(app.join().unwrap().unwrap(), snap_end);
    hk.join().unwrap();
    assert_eq!(p.snapshots.newest(), snap_end, "the snapshot was written");
}

/// A snapshot taken before a truncation is not written after it: it would
/// describe batches the log no longer has, and a reopen that found the log
/// grown past it again would trust it.
#[test]
fn a_truncation_between_taking_and_writing_drops_the_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = leader(d.path(), 20);
    let (hk, release) = housekeeping_held_at(&p, "taken");
    let taken_at = p.log_end_offset();
    // Another leader took over; this replica's tail diverged.
    p.demote();
    let to = taken_at - 5;
    let end = p
        .truncate_for_leader(
            FollowerStart {
                truncate_to: to,
                log_start_offset: 0,
                high_watermark: to,
            },
            0,
        )
        .unwrap();
    assert_eq!(end, to);
    release.send(()).unwrap();
    hk.join().unwrap();
    assert!(
        p.snapshots.newest() <= to,
        "a snapshot at {} survived the truncation to {to}",
        p.snapshots.newest()
    );
    let files: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert!(
        !files.contains(&format!("snapshot-{taken_at:020}.json")),
        "{files:?}"
    );
}

/// A leader of a topic with `configs`.
fn leader_with(dir: &std::path::Path, configs: &[(&str, &str)]) -> Arc<Partition> {
    let configs = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cfg = Arc::new(TopicConfig::new(configs, Default::default()).unwrap());
    let log = PartitionLog::open(dir, cfg.log_config(), 0).unwrap();
    let p = Arc::new(Partition::open("t".into(), 0, log, cfg, 0).unwrap());
    p.promote(1, 0, ReplicaSet::solo(0));
    p
}

fn at(ts: i64) -> Bytes {
    build_batch_with(0, ts, BatchProducer::NONE, &[(None, Some(b"v"))]).freeze()
}

/// Create-time records more than `message.timestamp.after.max.ms` (an
/// hour by default, as in Kafka 4) ahead of the broker's clock, or more
/// than `before.max.ms` (unbounded by default) behind it, are refused
/// with nothing stored; -1 ("no timestamp") and log-append-time topics
/// pass.
#[test]
fn record_timestamps_far_from_the_clock_are_refused() {
    use crate::error::BrokerError;
    let now = 1_800_000_000_000;
    let hour = 3_600_000;
    let d = tempfile::tempdir().unwrap();
    let p = leader_with(&d.path().join("default"), &[]);
    let refused = |r: Result<_, BrokerError>| matches!(r, Err(BrokerError::InvalidTimestamp(_)));
    assert!(refused(p.append(&at(now + hour + 1), now)));
    assert!(refused(p.append(&at(i64::MAX), now)));
    assert_eq!(p.log_end_offset(), 0, "nothing stored");
    for ok in [now + hour, now, 0, -1] {
        p.append(&at(ok), now).unwrap();
    }
    assert_eq!(p.log_end_offset(), 4);

    let p = leader_with(
        &d.path().join("bounded"),
        &[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "9223372036854775807"),
        ],
    );
    assert!(refused(p.append(&at(now - 1001), now)));
    p.append(&at(now - 1000), now).unwrap();
    p.append(&at(i64::MAX), now).unwrap();
    p.append(&at(-1), now).unwrap();

    let p = leader_with(
        &d.path().join("append-time"),
        &[("message.timestamp.type", "LogAppendTime")],
    );
    p.append(&at(now + 10 * hour), now).unwrap();
}
