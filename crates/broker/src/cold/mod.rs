//! The cold tier on the broker side (DESIGN §4): offloading sealed segments
//! as Parquet objects with manifest entries committed under the leader's
//! fencing token (`offload`), serving reads below the local log start from
//! them (`read`), their lifecycle — retention, DeleteRecords, topic deletion,
//! garbage collection (`lifecycle`) — and operator listings (`listing`).
//!
//! Rules:
//! - a segment is offloaded by the partition's leader only: upload first,
//!   then commit `partitions/<t>/<p>/segments/<base>` in a transaction that
//!   requires the leader key to still have the create revision it had when
//!   this broker took it. A fenced leader's upload never becomes part of the
//!   log (the object is deleted, best effort; a GC sweeps leftovers later);
//! - a local segment is deleted (by local retention) only once the manifest
//!   covers its last offset;
//! - segments are offloaded one at a time (at most 64 per partition per
//!   round), so memory stays bounded by about one segment and its Parquet
//!   file.

pub(crate) mod cursors;
mod lifecycle;
mod listing;
mod offload;
mod read;

pub use listing::{HotSegment, PartitionSegments};
pub(crate) use offload::remove_offload_scratch;
pub(crate) use read::ColdPartition;

use object_store::ObjectStore;
use std::sync::Arc;
use strata_cold::{ColdCache, StoreObject};

/// The object store of the cold tier, its key prefix and a byte-bounded cache.
pub struct ColdTier {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: String,
    /// Whole objects, and ranges of the others read, bounded by bytes.
    pub(crate) cache: ColdCache,
    /// Readers kept between a consumer's fetches.
    pub(crate) cursors: cursors::Cursors,
}

impl ColdTier {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: String, cache_bytes: u64) -> Self {
        Self {
            store,
            prefix,
            cache: ColdCache::new(cache_bytes),
            cursors: cursors::Cursors::default(),
        }
    }

    /// Drops what is kept in memory of object `key` (it is being deleted).
    pub(crate) fn forget(&self, key: &str) {
        self.cache.forget(key);
        self.cursors.forget(key);
    }

    /// Object `key` of `size` bytes, for a ranged read through the cache.
    pub(crate) fn ranged(&self, key: &str, size: u64) -> StoreObject {
        StoreObject::new(self.store.clone(), key, size).cached(self.cache.clone())
    }
}

/// Runs `read` — a ranged read: requests to the store, and the CPU work of
/// parsing and decoding what they return (a footer of a large file takes
/// milliseconds) — on a blocking thread, its requests driven by this
/// runtime, so the async workers serving other connections never decode.
pub(crate) async fn off_workers<F>(read: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(read)).await
}
