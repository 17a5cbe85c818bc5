//! [`ReplicaSet`]: a partition leader's view of its followers — how far each
//! has replicated, which are in sync, and the high watermark that follows.
//!
//! Pure state, driven with explicit times so it is unit-tested alone.
//!
//! Invariants (DESIGN §6):
//! - `isr` always contains the leader, and is a superset of the ISR last
//!   written to the metadata store: a follower joins it here *before* the
//!   store is asked to add it (so a record is never acknowledged without a
//!   replica that could already be elected), and leaves it here only
//!   *after* the store removed it.
//! - the high watermark is the smallest log end among `isr` and never moves
//!   backwards.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end offset as it last reported it (-1: not yet).
    pub log_end: i64,
    /// Last time the follower was known to be caught up with the leader.
    pub caught_up_ms: i64,
    /// Leader log end and time when the leader last sent this follower data:
    /// reaching that log end means it was caught up at that time.
    sent_end: i64,
    sent_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ReplicaSet {
    pub me: i32,
    pub replicas: Vec<i32>,
    /// The ISR counted for the high watermark.
    pub isr: BTreeSet<i32>,
    /// The ISR as last written to (or read from) the metadata store.
    pub stored: BTreeSet<i32>,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// The leader's log end when it took leadership: a follower must reach
    /// it before it may join the ISR.
    pub epoch_start: i64,
}

/// An ISR change the leader should write to the metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<i32>,
    pub added: Vec<i32>,
    pub removed: Vec<i32>,
}

impl ReplicaSet {
    pub fn new(me: i32, replicas: Vec<i32>, isr: &[i32], epoch_start: i64, now_ms: i64) -> Self {
        let mut set: BTreeSet<i32> = isr.iter().copied().collect();
        set.insert(me);
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        log_end: -1,
                        // Followers get a full lag interval to show up.
                        caught_up_ms: now_ms,
                        sent_end: -1,
                        sent_ms: now_ms,
                    },
                )
            })
            .collect();
        Self {
            me,
            replicas,
            stored: set.clone(),
            isr: set,
            followers,
            epoch_start,
        }
    }

    /// Takes a new replica list: new followers start unknown (with a full lag
    /// interval to catch up), followers no longer listed are forgotten.
    pub fn set_replicas(&mut self, replicas: &[i32], now_ms: i64) {
        if self.replicas == replicas {
            return;
        }
        self.replicas = replicas.to_vec();
        let me = self.me;
        self.followers.retain(|id, _| replicas.contains(id));
        for r in replicas.iter().filter(|r| **r != me) {
            self.followers.entry(*r).or_insert(FollowerProgress {
                log_end: -1,
                caught_up_ms: now_ms,
                sent_end: -1,
                sent_ms: now_ms,
            });
        }
    }

    /// A single-replica set (no followers): the high watermark is the log end.
    pub fn solo(me: i32) -> Self {
        Self::new(me, vec![me], &[me], 0, 0)
    }

    /// The high watermark the ISR supports, given the leader's log end.
    pub fn high_watermark(&self, leader_end: i64) -> i64 {
        self.isr
            .iter()
            .filter(|r| **r != self.me)
            .map(|r| self.followers.get(r).map_or(-1, |f| f.log_end))
            .fold(leader_end, i64::min)
    }

    /// Records that the leader sent `follower` data up to `leader_end`.
    pub fn sent(&mut self, follower: i32, leader_end: i64, now_ms: i64) {
        if let Some(f) = self.followers.get_mut(&follower) {
            f.sent_end = leader_end;
            f.sent_ms = now_ms;
        }
    }

    /// Records a follower's reported log end.
    pub fn position(&mut self, follower: i32, log_end: i64, leader_end: i64, now_ms: i64) {
        if let Some(f) = self.followers.get_mut(&follower) {
            f.log_end = log_end;
            if log_end >= leader_end {
                f.caught_up_ms = now_ms;
            } else if f.sent_end >= 0 && log_end >= f.sent_end {
                f.caught_up_ms = f.caught_up_ms.max(f.sent_ms);
            }
        }
    }

    /// The ISR this leader wants: followers lagging longer than `lag_ms`
    /// leave, caught-up followers join. `None` when nothing changes.
    pub fn wanted_change(&self, hw: i64, now_ms: i64, lag_ms: i64) -> Option<IsrChange> {
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for (&id, f) in &self.followers {
            let lagging = now_ms - f.caught_up_ms > lag_ms;
            if self.stored.contains(&id) {
                if lagging {
                    removed.push(id);
                }
            } else if !lagging && f.log_end >= hw.max(self.epoch_start) {
                added.push(id);
            }
        }
        if removed.is_empty() && added.is_empty() {
            return None;
        }
        let isr: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| (self.stored.contains(r) && !removed.contains(r)) || added.contains(r))
            .collect();
        Some(IsrChange {
            isr,
            added,
            removed,
        })
    }

    /// Before writing `change`: added followers count for the high
    /// watermark from now on.
    pub fn begin(&mut self, change: &IsrChange) {
        self.isr.extend(change.added.iter().copied());
    }

    /// After the store accepted `change`: removed followers stop counting.
    pub fn committed(&mut self, change: &IsrChange) {
        for r in &change.removed {
            self.isr.remove(r);
        }
        self.stored = change.isr.iter().copied().collect();
        self.stored.insert(self.me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_is_the_slowest_in_sync_replica() {
        let mut s = ReplicaSet::new(1, vec![1, 2, 3], &[1, 2, 3], 0, 0);
        assert_eq!(s.high_watermark(10), -1, "followers not heard from yet");
        s.position(2, 10, 10, 5);
        s.position(3, 7, 10, 5);
        assert_eq!(s.high_watermark(10), 7);
        assert_eq!(ReplicaSet::solo(1).high_watermark(42), 42);
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let mut s = ReplicaSet::new(1, vec![1, 2, 3], &[1, 2, 3], 0, 0);
        s.position(2, 10, 10, 100);
        s.sent(3, 10, 100);
        s.position(3, 5, 10, 150);
        assert_eq!(s.wanted_change(5, 900, 1000), None);
        // 3 stays behind what it was sent for longer than the lag limit.
        s.position(2, 10, 10, 1150);
        let c = s.wanted_change(5, 1200, 1000).unwrap();
        assert_eq!(c.isr, vec![1, 2]);
        assert_eq!(c.removed, vec![3]);
        // It keeps counting until the store has removed it...
        assert_eq!(s.high_watermark(10), 5);
        s.committed(&c);
        assert_eq!(s.high_watermark(10), 10);
        // ...and joins again once it reaches the high watermark.
        s.sent(3, 12, 1250);
        s.position(3, 12, 12, 1300);
        let c = s.wanted_change(10, 1300, 1000).unwrap();
        assert_eq!(c.added, vec![3]);
        assert_eq!(c.isr, vec![1, 2, 3]);
        s.begin(&c);
        s.position(2, 11, 12, 1300);
        assert_eq!(s.high_watermark(12), 11, "counts before the write");
    }

    #[test]
    fn a_follower_reaching_what_it_was_sent_counts_as_caught_up_then() {
        let mut s = ReplicaSet::new(1, vec![1, 2], &[1, 2], 0, 0);
        s.sent(2, 50, 900);
        // Under constant load the follower never equals the leader's end.
        s.position(2, 50, 60, 950);
        assert_eq!(s.followers[&2].caught_up_ms, 900);
        assert_eq!(s.wanted_change(50, 1500, 1000), None);
    }
}
