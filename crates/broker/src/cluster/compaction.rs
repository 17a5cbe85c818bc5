//! Compaction of the metadata store's history.
//!
//! etcd keeps every revision of every key until it is compacted, and a
//! stock etcd does not compact by itself (`--auto-compaction-retention`
//! is off by default). Every offset commit, partition-state change and
//! coordinator claim is a revision, so an uncompacted etcd grows until it
//! reaches its backend quota (2 GiB by default), raises its NOSPACE alarm
//! and refuses every write: no commit, no election, until an operator
//! compacts, defragments and disarms it by hand. Brokers need only recent
//! history: a watch resumes from the revision after its view's, and one
//! that finds it compacted reads the whole view again and watches on.
//!
//! So every broker, each `metadata_compaction_interval_ms`, compacts the
//! store to the revision its view had at its previous round: at least one
//! interval of history is always kept, the current revision never
//! compacted. Brokers do this independently; compacting to a revision
//! already compacted is a no-op, so several doing it costs nothing.

use crate::broker::Broker;
use std::sync::atomic::Ordering;

impl Broker {
    /// One compaction round (see the module docs): compacts to the mark
    /// the previous round left, then marks the view's revision now.
    pub(crate) async fn compact_metadata(&self) {
        if self.settings.metadata_compaction_interval_ms == 0 {
            return;
        }
        let now = self.view().revision;
        let mark = self.compaction_mark.swap(now, Ordering::Relaxed);
        if mark <= 0 {
            return;
        }
        match self.meta.compact(mark).await {
            Ok(()) => tracing::debug!(revision = mark, "compacted the metadata history"),
            Err(e) => {
                tracing::warn!(revision = mark, error = %e, "cannot compact the metadata history")
            }
        }
    }
}
