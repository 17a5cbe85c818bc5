//! The durability step of a produce, behind one interface (DESIGN §6): what
//! must happen after the local append before the write is acknowledged.
//!
//! Today: [`ReplicatedDurability`] (`strata.durability=replicated`) fsyncs
//! the active segment when [`needs_fsync`] says so (acks=all as
//! [`AckAllFsync`] says; `flush.messages` reached), then, for acks=all,
//! waits until every in-sync replica has the write and checks
//! `min.insync.replicas`.
//! `strata.durability=object` (group into a write-ahead object) would be
//! another implementation of the same trait.

use crate::clock::Clock;
use crate::error::BrokerError;
use crate::partition::Partition;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_log::AppendInfo;

/// Kafka's `acks`, as the domain sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn from_kafka(acks: i16) -> Option<Self> {
        match acks {
            0 => Some(Self::None),
            1 => Some(Self::Leader),
            -1 => Some(Self::All),
            _ => None,
        }
    }
}

pub trait Durability: Send + Sync + 'static {
    /// Completes once `appended` is as durable as `acks` requires, or fails
    /// after `timeout`.
    fn make_durable<'a>(
        &'a self,
        partition: &'a Arc<Partition>,
        appended: AppendInfo,
        acks: Acks,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
}

/// When an acks=all write is fsync'd before it is acknowledged (decision
/// 0015).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckAllFsync {
    /// Every one (`fsync_on_ack_all=true`; the dev profile's default,
    /// DESIGN §3).
    Always,
    /// While the leader is the partition's only in-sync replica
    /// (replication factor 1, or every follower out of the ISR): then no
    /// other copy of the write would outlive this machine's crash. With
    /// followers in sync the write is on several machines before it is
    /// acknowledged, and Kafka's default (no fsync) holds. The cluster
    /// profile's default.
    Unreplicated,
    /// Never (`fsync_on_ack_all=false`): Kafka's behaviour.
    Never,
}

pub struct ReplicatedDurability {
    pub ack_all_fsync: AckAllFsync,
    /// Counts the fsyncs (the broker's `Metrics::log_flushes`).
    pub flushes: Arc<AtomicU64>,
    pub clock: Arc<dyn Clock>,
}

/// fsyncs a partition's active segment on the blocking pool, counting it
/// in `flushes`.
pub async fn flush_partition(
    p: &Arc<Partition>,
    now_ms: i64,
    flushes: &AtomicU64,
) -> Result<(), BrokerError> {
    let handle = p.flush_handle()?;
    tokio::task::spawn_blocking(move || handle.sync())
        .await
        .map_err(|e| BrokerError::Storage(format!("fsync task failed: {e}")))??;
    flushes.fetch_add(1, Ordering::Relaxed);
    p.mark_flushed(now_ms);
    Ok(())
}

/// Whether an append must be fsync'd before it is acknowledged: an
/// acks=all one as `ack_all` says (`isr_size` counts the partition's
/// in-sync replicas, the leader included; asked only for an acks=all
/// write under `Unreplicated`, as it takes the replica set's lock), and any
/// once `flush.messages` appends are unflushed (Kafka's `flush.messages`).
pub(crate) fn needs_fsync(
    acks: Acks,
    ack_all: AckAllFsync,
    isr_size: impl FnOnce() -> usize,
    unflushed: i64,
    flush_messages: i64,
) -> bool {
    let by_acks = acks == Acks::All
        && match ack_all {
            AckAllFsync::Always => true,
            AckAllFsync::Unreplicated => isr_size() <= 1,
            AckAllFsync::Never => false,
        };
    by_acks || unflushed >= flush_messages
}

impl Durability for ReplicatedDurability {
    fn make_durable<'a>(
        &'a self,
        partition: &'a Arc<Partition>,
        appended: AppendInfo,
        acks: Acks,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let epoch = partition.leader_epoch();
            if needs_fsync(
                acks,
                self.ack_all_fsync,
                || partition.isr_size(),
                partition.unflushed_messages(),
                partition.config().flush_messages(),
            ) {
                flush_partition(partition, self.clock.now_ms(), &self.flushes).await?;
            }
            if acks == Acks::All {
                partition
                    .wait_for_high_watermark(appended.last_offset + 1, epoch, timeout)
                    .await?;
                let min = partition.config().min_insync_replicas();
                let isr = partition.isr_size();
                if isr < min {
                    return Err(BrokerError::NotEnoughReplicasAfterAppend(format!(
                        "{}: {isr} in sync, min.insync.replicas={min}",
                        partition.name()
                    )));
                }
            }
            Ok(())
        })
    }
}
