//! Snapshots of a replica's derived state — producer state, transactions
//! and the leader-epoch history — taken as segments roll, so opening a
//! replica replays only the batches after the newest snapshot instead of
//! scanning every header of the local log.
//!
//! A snapshot `snapshot-<offset:020>.json` in the partition directory is
//! the state after observing every batch below `offset` (a batch boundary:
//! the log end when it was taken). Files are written to a temporary name,
//! fsync'd and renamed, so a crash leaves either the old or the new one.
//! An unreadable snapshot is ignored (the log is replayed from further
//! back). Truncation deletes snapshots above the new log end; a restarted
//! log (follower reset) deletes them all.
//!
//! The names do not start with a number, so the log's cleanup of orphaned
//! index files leaves them alone.
//!
//! A snapshot is taken (the state cloned) under the partition's lock and
//! written after it is released, so a produce does not wait for the
//! snapshot's fsync ([`SnapshotFiles`] keeps a truncation from slipping in
//! between).

use crate::partition_txns::PartitionTxns;
use crate::producers::ProducerStates;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use strata_log::EpochHistory;

const FORMAT: u32 = 1;
/// Snapshots kept per partition (the newest, and one to fall back on).
const KEEP: usize = 2;

/// The derived state as of `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    format: u32,
    pub offset: i64,
    pub producers: ProducerStates,
    pub txns: PartitionTxns,
    epochs: Vec<(i32, i64)>,
}

impl Snapshot {
    pub fn new(
        offset: i64,
        producers: &ProducerStates,
        txns: &PartitionTxns,
        epochs: &EpochHistory,
    ) -> Self {
        Self {
            format: FORMAT,
            offset,
            producers: producers.clone(),
            txns: txns.clone(),
            epochs: epochs.entries().to_vec(),
        }
    }

    pub fn epochs(&self) -> EpochHistory {
        EpochHistory::from_entries(self.epochs.clone())
    }
}

/// One partition's snapshot files: who writes and removes them, and
/// whether a snapshot taken under the partition's lock may still be
/// written once that lock is released.
///
/// Invariant: no snapshot file describes batches the log no longer has. A
/// truncation counts itself and removes the files above its point while
/// holding `files` (and the partition's lock, so every snapshot was taken
/// wholly before or after it); a writer writes only while holding `files`,
/// and only if no truncation was counted since its snapshot was taken. So
/// a truncation either comes first (the writer gives up) or finds the file
/// written and removes it. (A truncation that comes during a write waits
/// for its fsync, holding the partition's lock: rare, a leader change.)
pub(crate) struct SnapshotFiles {
    files: Mutex<()>,
    truncations: AtomicU64,
    /// Offset of the newest snapshot on disk (-1: none).
    newest: AtomicI64,
    /// Called at each stage of writing a snapshot ("taken", "writing"):
    /// tests hold a write there.
    #[cfg(test)]
    pub(crate) hook: Mutex<Option<Hook>>,
}

/// A test's hook into snapshot writes (see `SnapshotFiles::hook`).
#[cfg(test)]
pub(crate) type Hook = std::sync::Arc<dyn Fn(&'static str) + Send + Sync>;

/// What [`SnapshotFiles::taken`] returns: when a snapshot was taken, in
/// truncations counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken(u64);

impl SnapshotFiles {
    /// The snapshot files found in `dir`.
    pub(crate) fn open(dir: &Path) -> Self {
        Self {
            files: Mutex::new(()),
            truncations: AtomicU64::new(0),
            newest: AtomicI64::new(newest_offset(dir).unwrap_or(-1)),
            #[cfg(test)]
            hook: Mutex::new(None),
        }
    }

    /// Runs the test hook, if one is set, at `stage`.
    #[cfg(test)]
    pub(crate) fn at(&self, stage: &'static str) {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            h(stage);
        }
    }

    /// Offset of the newest snapshot written (-1: none).
    pub(crate) fn newest(&self) -> i64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Marks a snapshot being taken; call under the partition's lock.
    pub(crate) fn taken(&self) -> Taken {
        Taken(self.truncations.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // Nothing is kept under the lock: a panic while holding it leaves
        // nothing half-changed.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `snap`, taken at `taken`, unless a truncation came since.
    /// Returns whether it was written.
    pub(crate) fn write(&self, dir: &Path, snap: &Snapshot, taken: Taken) -> std::io::Result<bool> {
        let _files = self.lock();
        if self.truncations.load(Ordering::Acquire) != taken.0 {
            return Ok(false);
        }
        #[cfg(test)]
        self.at("writing");
        write(dir, snap)?;
        self.newest.fetch_max(snap.offset, Ordering::AcqRel);
        Ok(true)
    }

    /// Before truncating the log (under the partition's lock): removes the
    /// snapshots above `offset` (all for `None`), and keeps the files
    /// locked until the returned guard is dropped, after the truncation.
    pub(crate) fn truncating(&self, dir: &Path, offset: Option<i64>) -> MutexGuard<'_, ()> {
        let files = self.removing();
        remove_above(dir, offset);
        self.newest
            .store(newest_offset(dir).unwrap_or(-1), Ordering::Release);
        files
    }

    /// Before removing snapshot files by other means (the whole partition
    /// directory): a snapshot taken before gives up instead of writing
    /// into it, and none is written while the guard is held.
    pub(crate) fn removing(&self) -> MutexGuard<'_, ()> {
        let files = self.lock();
        self.truncations.fetch_add(1, Ordering::AcqRel);
        files
    }
}

fn path_for(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("snapshot-{offset:020}.json"))
}

/// Snapshot offsets present in `dir`, ascending.
fn offsets(dir: &Path) -> Vec<i64> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<i64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("snapshot-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Writes `snap` durably and keeps only the newest [`KEEP`] snapshots.
pub(crate) fn write(dir: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    let path = path_for(dir, snap.offset);
    crate::fsutil::write_whole(&path, &json)?;
    let all = offsets(dir);
    for old in all.iter().take(all.len().saturating_sub(KEEP)) {
        let _ = std::fs::remove_file(path_for(dir, *old));
    }
    Ok(())
}

/// The newest readable snapshot at or below `max_offset`.
pub(crate) fn latest(dir: &Path, max_offset: i64) -> Option<Snapshot> {
    for offset in offsets(dir).into_iter().rev().filter(|o| *o <= max_offset) {
        let path = path_for(dir, offset);
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(s) if s.format == FORMAT && s.offset == offset => return Some(s),
            Ok(_) => tracing::warn!(path = %path.display(), "ignoring snapshot of another format"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot")
            }
        }
    }
    None
}

/// Deletes snapshots above `offset` (all of them for `None`).
fn remove_above(dir: &Path, offset: Option<i64>) {
    for o in offsets(dir) {
        if offset.is_none_or(|max| o > max) {
            let _ = std::fs::remove_file(path_for(dir, o));
        }
    }
}

/// The newest snapshot's offset, if any.
fn newest_offset(dir: &Path) -> Option<i64> {
    offsets(dir).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_keep_two_and_skip_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let epochs = EpochHistory::from_entries(vec![(0, 0), (3, 10)]);
        for o in [10, 20, 30] {
            let s = Snapshot::new(
                o,
                &ProducerStates::default(),
                &PartitionTxns::default(),
                &epochs,
            );
            write(d.path(), &s).unwrap();
        }
        assert_eq!(offsets(d.path()), vec![20, 30]);
        let s = latest(d.path(), 25).unwrap();
        assert_eq!(s.offset, 20);
        assert_eq!(s.epochs(), epochs);
        std::fs::write(path_for(d.path(), 30), b"{not json").unwrap();
        assert_eq!(latest(d.path(), 100).unwrap().offset, 20, "falls back");
        remove_above(d.path(), Some(20));
        assert_eq!(offsets(d.path()), vec![20]);
        remove_above(d.path(), None);
        assert!(latest(d.path(), 100).is_none());
    }
}
