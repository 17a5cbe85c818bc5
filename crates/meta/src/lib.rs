//! The metadata store port (DESIGN §5): an etcd-shaped key-value store with
//! global revisions and compare-and-swap transactions.
//!
//! Implementations: [`LocalStore`] (in memory as [`MemStore`] for unit tests,
//! or persisted under the data directory as [`EmbeddedStore`] for `strata
//! dev`) and [`EtcdStore`] for the cluster profile. All pass
//! [`conformance`].
//!
//! Invariants shared by every implementation:
//! - every successful mutating transaction bumps the store revision by one and
//!   stamps the keys it writes with that revision (`mod_revision`);
//! - `create_revision` is the revision at which the key was last created, and
//!   0 in a [`Compare`] means "the key does not exist";
//! - a transaction's compares and operations are applied atomically.

mod etcd;
mod local;
mod state;
mod types;

pub mod conformance;

pub use etcd::{EtcdOptions, EtcdStore};
pub use local::{EmbeddedStore, LocalStore, MemStore};
pub use types::*;
