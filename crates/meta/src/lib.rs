//! The metadata store port (DESIGN §5): an etcd-shaped key-value store with
//! global revisions and compare-and-swap transactions.
//!
//! Two implementations live here: [`MemStore`] (in-memory, for unit tests)
//! and [`EmbeddedStore`] (the `strata dev` store, persisted under the data
//! directory as a checksummed write-ahead log plus snapshots). The etcd
//! implementation joins them in the cluster profile. All of them must pass
//! [`conformance`].
//!
//! Invariants shared by every implementation:
//! - every successful mutating transaction bumps the store revision by one and
//!   stamps the keys it writes with that revision (`mod_revision`);
//! - `create_revision` is the revision at which the key was last created, and
//!   0 in a [`Compare`] means "the key does not exist";
//! - a transaction's compares and operations are applied atomically.

mod embedded;
mod mem;
mod state;
mod types;

pub mod conformance;

pub use embedded::EmbeddedStore;
pub use mem::MemStore;
pub use types::*;
