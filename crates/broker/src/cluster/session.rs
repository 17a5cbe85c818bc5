//! The broker's session with the metadata store: one lease, renewed in the
//! background, and the fencing rule built on it.
//!
//! A lease granted with TTL `t` can expire `t` after the store last heard a
//! renewal. The broker only counts a renewal from the moment it *sent* it, and
//! treats itself as live until `sent + t × 3/4`; past that it refuses to
//! acknowledge writes (see `Broker::produce`), so it stops strictly before
//! any other broker could take over its keys.

use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Default)]
pub struct Session {
    lease: AtomicI64,
    live_until_ms: AtomicI64,
}

impl Session {
    /// The current lease, or 0 without a session.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    pub fn is_live(&self, now_ms: i64) -> bool {
        self.lease() != 0 && now_ms < self.live_until_ms.load(Ordering::Acquire)
    }

    /// Records a lease granted or renewed by a request sent at `sent_ms`.
    pub fn renewed(&self, lease: i64, sent_ms: i64, ttl_ms: i64) {
        self.lease.store(lease, Ordering::Release);
        self.live_until_ms
            .store(sent_ms + ttl_ms * 3 / 4, Ordering::Release);
    }

    pub fn lost(&self) {
        self.lease.store(0, Ordering::Release);
        self.live_until_ms.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_being_live_well_before_the_lease_can_expire() {
        let s = Session::default();
        assert!(!s.is_live(0));
        s.renewed(7, 1_000, 10_000);
        assert!(s.is_live(8_499));
        assert!(
            !s.is_live(8_500),
            "3/4 of the TTL after the renewal was sent"
        );
        s.lost();
        assert!(!s.is_live(1_001));
    }
}
