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

use crate::partition_txns::PartitionTxns;
use crate::producers::ProducerStates;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    use std::io::Write;
    let json = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    let path = path_for(dir, snap.offset);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, &path)?;
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
pub(crate) fn remove_above(dir: &Path, offset: Option<i64>) {
    for o in offsets(dir) {
        if offset.is_none_or(|max| o > max) {
            let _ = std::fs::remove_file(path_for(dir, o));
        }
    }
}

/// The newest snapshot's offset, if any.
pub(crate) fn newest_offset(dir: &Path) -> Option<i64> {
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
