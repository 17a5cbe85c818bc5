//! Transactions (KIP-98): the coordinator of transactional ids and the
//! delivery of transaction markers.
//!
//! - `record`: the stored state of a transactional id and its transitions.
//! - `coordinator`: InitProducerId / AddPartitionsToTxn / AddOffsetsToTxn /
//!   EndTxn, timeouts and recovery, on [`crate::Broker`].
//! - `markers`: writing commit/abort markers to partition leaders and
//!   settling pending offsets at group coordinators, locally or over gRPC.
//!
//! Ownership: a transactional id is coordinated by the broker holding
//! `transactions/<id>/coordinator` (bound to its session lease, like group
//! coordinators). Its state lives in `transactions/<id>/state` and every
//! change is a compare-and-set on that key's mod revision, so a stale
//! coordinator can never overwrite a newer decision. The in-memory table
//! here only caches the record and serialises operations per id.

mod coordinator;
pub mod markers;
mod record;
#[cfg(test)]
mod tests;

pub use coordinator::TxnListing;
pub use record::{EndStep, InitStep, TxnRecord, TxnState};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A cached record and the mod revision it was read or written at.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub record: TxnRecord,
    pub mod_revision: i64,
}

/// One transactional id's slot: operations on the id hold its lock.
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The coordinator's cache of transactional ids it serves.
#[derive(Default)]
pub struct TxnTable {
    slots: Mutex<HashMap<String, Slot>>,
}

impl TxnTable {
    pub(crate) fn slot(&self, id: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Drops the cached state of `id` (it is reread from the store next).
    pub(crate) fn forget(&self, id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Drops everything (the session, hence every coordinator key, is gone).
    pub(crate) fn forget_all(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
