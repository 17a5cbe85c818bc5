//! Broker domain logic: topics and partitions over the local log, the
//! durability step, fetch waiting, consumer groups and committed offsets.
//!
//! Nothing here knows the Kafka wire format: the Kafka edge translates
//! requests into these calls and [`BrokerError`] / [`groups::GroupError`]
//! into Kafka error codes, in one place.

mod broker;
pub mod clock;
pub mod cluster;
mod cluster_ops;
pub mod cold;
pub mod config;
pub mod durability;
mod error;
mod fsutil;
pub mod groups;
pub mod keys;
pub mod metrics;
pub mod partition;
pub mod partition_txns;
pub mod producer_ids;
pub mod producers;
pub mod replication;
mod snapshot;
pub mod topics;
pub mod txn;

pub use broker::{Broker, BrokerBuilder, FetchSpec, OffsetSpec, ProduceOutcome};
pub use error::BrokerError;

#[cfg(test)]
mod tests;
