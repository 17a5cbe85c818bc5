//! Transactions as one partition's log sees them: which producers have an
//! open transaction here (and from which offset), the last stable offset,
//! and the aborted transactions a read_committed consumer must skip.
//!
//! Everything is derived from stored batch headers and marker types, in log
//! order, so followers and restarted replicas rebuild it from the log (the
//! index lives in memory; see docs/decisions/0003-transactions.md).
//!
//! Invariants: a producer has at most one open transaction per partition; a
//! transaction's first offset is the base offset of its first transactional
//! batch here; the last stable offset never exceeds the high watermark and
//! never passes the first offset of a transaction whose marker is not below
//! the high watermark.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use strata_record::{BatchHeader, ControlType};

/// An aborted transaction: records of `producer_id` from `first_offset` up
/// to its abort marker at `last_offset` are not part of the committed log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// An open transaction, for DescribeProducers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTxn {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_offset: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PartitionTxns {
    /// Producer id → (epoch, first offset) of its open transaction.
    open: HashMap<i64, (i16, i64)>,
    /// First offset → marker offset (`None` while open) of transactions
    /// that may still hold the last stable offset back.
    unstable: BTreeMap<i64, Option<i64>>,
    /// Aborted transactions in marker order.
    aborted: Vec<AbortedTxn>,
}

impl PartitionTxns {
    /// Notes a stored batch. `marker` is the control type of a control batch.
    pub fn observe(&mut self, h: &BatchHeader, marker: Option<ControlType>) {
        if !h.is_transactional() || h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            if let Some(kind) = marker {
                self.end(h.producer_id, h.base_offset, kind);
            }
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.open.entry(h.producer_id) {
            e.insert((h.producer_epoch, h.base_offset));
            self.unstable.insert(h.base_offset, None);
        }
    }

    fn end(&mut self, producer_id: i64, marker_offset: i64, kind: ControlType) {
        // A marker for a producer with no data here (it wrote elsewhere, or
        // its data is below this log's start) hides nothing.
        let Some((_, first)) = self.open.remove(&producer_id) else {
            return;
        };
        self.unstable.insert(first, Some(marker_offset));
        if kind == ControlType::Abort {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: marker_offset,
            });
        }
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// The last stable offset given the high watermark: the first offset of
    /// the oldest transaction that is open or whose marker is not yet below
    /// the high watermark, else the high watermark.
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        while let Some((&first, &end)) = self.unstable.first_key_value() {
            match end {
                Some(marker) if marker < high_watermark => {
                    self.unstable.remove(&first);
                }
                _ => return first.min(high_watermark),
            }
        }
        high_watermark
    }

    /// Aborted transactions overlapping `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly below `log_start`.
    pub fn prune_below(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Open transactions, oldest first.
    pub fn open_transactions(&self) -> Vec<OpenTxn> {
        let mut v: Vec<OpenTxn> = self
            .open
            .iter()
            .map(|(&producer_id, &(producer_epoch, first_offset))| OpenTxn {
                producer_id,
                producer_epoch,
                first_offset,
            })
            .collect();
        v.sort_by_key(|t| t.first_offset);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, offset: i64, n: i32, control: bool) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: if control { 0x30 } else { 0x10 },
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: if control { -1 } else { 0 },
            records_count: n,
        }
    }

    #[test]
    fn last_stable_offset_waits_for_open_and_unreplicated_transactions() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.last_stable_offset(10), 10);
        t.observe(&batch(1, 10, 3, false), None);
        t.observe(&batch(2, 13, 2, false), None);
        assert_eq!(t.last_stable_offset(15), 10);
        assert!(t.is_open(1));
        // Producer 1 commits at 15; until the HW passes the marker, 10 holds.
        t.observe(&batch(1, 15, 1, true), Some(ControlType::Commit));
        assert!(!t.is_open(1));
        assert_eq!(t.last_stable_offset(15), 10);
        // HW past the marker: producer 2's open transaction holds it at 13.
        assert_eq!(t.last_stable_offset(16), 13);
        t.observe(&batch(2, 16, 1, true), Some(ControlType::Abort));
        assert_eq!(t.last_stable_offset(17), 17);
        assert_eq!(
            t.aborted_between(0, 100),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 13,
                last_offset: 16
            }]
        );
        assert!(t.aborted_between(17, 100).is_empty());
        assert!(t.aborted_between(0, 13).is_empty());
        t.prune_below(17);
        assert!(t.aborted_between(0, i64::MAX).is_empty());
    }

    #[test]
    fn non_transactional_batches_and_stray_markers_change_nothing() {
        let mut t = PartitionTxns::default();
        let mut plain = batch(3, 0, 1, false);
        plain.attributes = 0;
        t.observe(&plain, None);
        t.observe(&batch(4, 1, 1, true), Some(ControlType::Abort));
        assert_eq!(t.last_stable_offset(2), 2);
        assert!(t.aborted_between(0, i64::MAX).is_empty());
        assert!(t.open_transactions().is_empty());
    }
}
