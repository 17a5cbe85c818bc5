//! Cluster membership and leadership over the metadata store (DESIGN §5).
//!
//! Every broker, including the single `strata dev` one, works the same way:
//! - it holds a **session lease** and registers `brokers/<id>` bound to it;
//! - it keeps a **view** of the cluster (brokers, topics, partition states,
//!   leaders, group coordinators) loaded with one range read and kept fresh by
//!   one watch from the next revision, so requests never read the store;
//! - it **leads** a partition only while it holds `partitions/<t>/<p>/leader`,
//!   created by a transaction only if absent, bound to its lease, with a
//!   leader epoch one above the last (kept in the partition state, updated in
//!   the same transaction), so epochs only grow;
//! - it stops acknowledging writes once its lease could have expired (see
//!   [`session::Session`]), before another broker can take the key;
//! - it **compacts** the store's history behind its view ([`compaction`]),
//!   and deletes directories of deleted topics' replicas ([`strays`]).

pub mod compaction;
pub mod identity;
pub mod records;
pub mod session;
pub mod strays;
pub mod view;

pub use records::{BrokerRecord, CoordinatorRecord, LeaderRecord, SegmentEntry};
pub use session::Session;
pub use view::{ClusterView, PartitionInfo, TopicInfo};
