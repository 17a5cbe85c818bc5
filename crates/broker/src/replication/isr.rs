//! The cluster side of replication on [`Broker`]: which leader a follower
//! copies from, gRPC channels to other brokers, ISR changes written to the
//! metadata store, and handing leadership over at shutdown.

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::replication::follower::{self, LeaderTarget};
use crate::replication::replica_set::IsrChange;
use crate::topics::{from_json, to_json, PartitionStateRecord};
use std::sync::Arc;
use std::time::Duration;
use strata_meta::{Compare, Op, Txn};
use tonic::transport::Channel;

impl Broker {
    /// The live leader of a partition another broker leads, with its gRPC
    /// endpoint. `None` while leaderless, while the leader key is this
    /// broker's own (a previous incarnation's, until its lease expires), or
    /// when the leader has no gRPC endpoint.
    pub(crate) fn leader_to_follow(&self, topic: &str, p: i32) -> Option<LeaderTarget> {
        let v = self.view();
        let l = v.leaders.get(&(topic.to_string(), p))?;
        if l.leader.broker == self.identity.id {
            return None;
        }
        let grpc = v.brokers.get(&l.leader.broker)?.grpc.clone()?;
        Some(LeaderTarget {
            broker: l.leader.broker,
            epoch: l.leader.epoch,
            grpc,
        })
    }

    /// A shared, lazily connected channel to another broker's gRPC address.
    pub(crate) fn rpc_channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.rpc_channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = follower::channel(addr)?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// One round of ISR maintenance on every led partition: followers that
    /// lag longer than `replica.lag.time.max.ms` leave, caught-up ones join.
    pub(crate) async fn maintain_isr(&self) {
        let lag = self.settings.replica_lag_time_max_ms;
        for p in self.hosted_partitions() {
            if let Err(e) = self.complete_reassignment(&p).await {
                tracing::warn!(partition = %p.name(), error = %e, "cannot complete reassignment");
            }
            let Some(change) = p.wanted_isr_change(self.clock.now_ms(), lag) else {
                continue;
            };
            p.begin_isr_change(&change);
            match self.write_isr(&p, &change).await {
                Ok(true) => {
                    p.commit_isr_change(&change);
                    tracing::info!(partition = %p.name(), isr = ?change.isr, added = ?change.added, removed = ?change.removed, "ISR changed");
                }
                Ok(false) => {
                    tracing::debug!(partition = %p.name(), "ISR change lost a race; retrying")
                }
                Err(e) => {
                    tracing::warn!(partition = %p.name(), error = %e, "cannot write ISR change")
                }
            }
        }
    }

    /// Writes `change` into the partition state: a CAS on the state's
    /// revision, only while this broker's leader key is the one it took.
    async fn write_isr(&self, p: &Partition, change: &IsrChange) -> Result<bool, BrokerError> {
        let state_key = self.keys.partition_state(&p.topic, p.index);
        let leader_key = self.keys.partition_leader(&p.topic, p.index);
        let Some(kv) = self.meta.get(&state_key).await? else {
            return Ok(false);
        };
        let mut state: PartitionStateRecord = from_json(&kv.value)?;
        if state.leader_epoch != p.leader_epoch() {
            return Ok(false);
        }
        state.isr = change.isr.clone();
        let txn = Txn::new()
            .when(Compare::CreateRevision(leader_key, p.fencing_revision()))
            .when(Compare::ModRevision(state_key.clone(), kv.mod_revision))
            .then(Op::put(state_key, to_json(&state)?));
        Ok(self.meta.txn(txn).await?.succeeded)
    }

    /// At shutdown, before the lease goes: gives in-sync followers of every
    /// led partition up to `grace` to copy the whole log, so whichever takes
    /// over has every record this broker accepted (even with acks=1).
    pub(crate) async fn drain_to_followers(&self, grace: Duration) {
        let led: Vec<Arc<Partition>> = self
            .hosted_partitions()
            .into_iter()
            .filter(|p| p.isr_size() > 1)
            .collect();
        if led.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + grace;
        for p in &led {
            let epoch = p.leader_epoch();
            let end = p.log_end_offset();
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(e) = p.wait_for_high_watermark(end, epoch, timeout).await {
                tracing::warn!(partition = %p.name(), error = %e, "followers did not catch up before shutdown");
            }
        }
    }
}
