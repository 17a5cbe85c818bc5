//! [`EpochHistory`]: which leader epoch wrote which offsets of a replica's
//! log, as `(epoch, start offset)` pairs — Kafka's leader-epoch cache. It is
//! derived from the `partition_leader_epoch` of stored batches, so it needs
//! no file of its own: the owner observes every batch in log order (on open
//! and on append) and truncates it with the log.
//!
//! Invariant: epochs and start offsets are both strictly increasing.

/// The start offset of each leader epoch present in a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(i32, i64)>,
}

impl EpochHistory {
    pub fn from_entries(mut entries: Vec<(i32, i64)>) -> Self {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        let mut h = Self::default();
        for (e, s) in entries {
            h.observe(e, s);
        }
        h
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// Records a batch written at `base_offset` by leader `epoch`. Batches
    /// must be observed in log order; an older epoch (or one below zero, as
    /// in batches from before epochs were stamped) changes nothing.
    pub fn observe(&mut self, epoch: i32, base_offset: i64) {
        if epoch < 0 {
            return;
        }
        match self.entries.last() {
            Some(&(last, start)) if epoch <= last || base_offset <= start => {}
            _ => self.entries.push((epoch, base_offset)),
        }
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_to(&mut self, offset: i64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// The newest epoch in the log.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch at or below `epoch`
    /// and the offset where it ends (the next epoch's start, or `log_end`
    /// for the newest). An epoch older than every epoch here ends where the
    /// log's first epoch starts; `None` for an empty history or epoch < 0.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let Some(i) = self.entries.iter().rposition(|&(e, _)| e <= epoch) else {
            return self.entries.first().map(|&(_, start)| (epoch, start));
        };
        let end = self.entries.get(i + 1).map_or(log_end, |&(_, s)| s);
        Some((self.entries[i].0, end))
    }

    /// The epoch that wrote `offset` (the newest starting at or below it).
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|&&(_, start)| start <= offset)
            .map(|&(e, _)| e)
    }

    /// Where a follower's log stops agreeing with its leader's: the end of
    /// the newest epoch both logs have, in whichever log it ends first.
    /// Batches of one epoch at one offset are identical in every replica
    /// (one leader per epoch writes one sequence), so everything below that
    /// point matches. With no epoch in common the follower keeps nothing it
    /// has epochs for (the result is its first epoch's start); with no
    /// batches it has nothing to lose (the result is `follower_end`).
    pub fn divergence(leader: &Self, leader_end: i64, follower: &Self, follower_end: i64) -> i64 {
        for (i, &(epoch, _)) in follower.entries.iter().enumerate().rev() {
            let Some(j) = leader.entries.iter().position(|&(e, _)| e == epoch) else {
                continue;
            };
            let f_end = follower
                .entries
                .get(i + 1)
                .map_or(follower_end, |&(_, s)| s);
            let l_end = leader.entries.get(j + 1).map_or(leader_end, |&(_, s)| s);
            return f_end.min(l_end);
        }
        follower
            .entries
            .first()
            .map_or(follower_end, |&(_, start)| start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(e: &[(i32, i64)]) -> EpochHistory {
        EpochHistory::from_entries(e.to_vec())
    }

    #[test]
    fn observes_only_new_epochs_in_order() {
        let mut x = EpochHistory::default();
        for (e, o) in [(1, 0), (1, 5), (3, 9), (2, 12), (-1, 13), (4, 20)] {
            x.observe(e, o);
        }
        assert_eq!(x.entries(), &[(1, 0), (3, 9), (4, 20)]);
        x.truncate_to(20);
        assert_eq!(x.latest(), Some(3));
        x.truncate_to(0);
        assert_eq!(x.latest(), None);
    }

    #[test]
    fn end_offset_follows_kafka() {
        let x = h(&[(1, 0), (3, 9), (4, 20)]);
        assert_eq!(x.end_offset_for(0, 30), Some((0, 0)));
        assert_eq!(x.end_offset_for(-1, 30), None);
        assert_eq!(EpochHistory::default().end_offset_for(3, 30), None);
        assert_eq!(x.epoch_at(8), Some(1));
        assert_eq!(x.epoch_at(25), Some(4));
        assert_eq!(x.end_offset_for(1, 30), Some((1, 9)));
        assert_eq!(x.end_offset_for(2, 30), Some((1, 9)));
        assert_eq!(x.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(x.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(x.end_offset_for(9, 30), Some((4, 30)));
    }

    #[test]
    fn divergence_cases() {
        // A follower that fetched further than the new leader in epoch 1.
        let leader = h(&[(1, 0), (2, 90)]);
        assert_eq!(
            EpochHistory::divergence(&leader, 120, &h(&[(1, 0)]), 100),
            90
        );
        // A lagging follower: nothing to drop.
        assert_eq!(
            EpochHistory::divergence(&leader, 120, &h(&[(1, 0)]), 50),
            50
        );
        assert_eq!(
            EpochHistory::divergence(&leader, 120, &h(&[(1, 0), (2, 90)]), 100),
            100
        );
        // An old leader that wrote epoch 2 nobody else kept.
        let old = h(&[(1, 0), (2, 95)]);
        let new_leader = h(&[(1, 0), (3, 95)]);
        assert_eq!(EpochHistory::divergence(&new_leader, 130, &old, 110), 95);
        // Empty follower, and no epoch in common.
        assert_eq!(EpochHistory::divergence(&leader, 120, &h(&[]), 0), 0);
        assert_eq!(
            EpochHistory::divergence(&h(&[(5, 40)]), 60, &h(&[(1, 10)]), 30),
            10
        );
    }
}
