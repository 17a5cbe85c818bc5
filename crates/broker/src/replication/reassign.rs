//! Moving partitions: replica reassignment and leadership transfer.
//!
//! `reassign` records the target replica list in the partition state (CAS)
//! and widens `replicas` to old ∪ new, so new replicas start following:
//! a new replica copies only the leader's local log (older history is in
//! the cold tier), so the time a move takes does not grow with retained
//! bytes. The leader finishes the move once every target replica is in the
//! ISR: `replicas` becomes the target, the ISR keeps only target members,
//! and if the leader is not the target's preferred (first) replica it
//! deletes its own leader key in the same transaction, so the preferred
//! replica takes over at once with a higher epoch. Brokers dropped from the
//! list stop following and delete their copy.
//!
//! Reassigning a partition to its current replicas in another order is a
//! leadership transfer to the new first replica.

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topics::{from_json, to_json, PartitionStateRecord};
use strata_meta::{Compare, Op, Txn};

/// A reassignment as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Broker {
    /// Starts moving `topic`-`partition` to `target` (`None` cancels a move
    /// in progress, keeping the original replicas).
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<(), BrokerError> {
        let key = self.keys.partition_state(topic, partition);
        if let Some(t) = &target {
            let mut uniq = t.clone();
            uniq.sort_unstable();
            uniq.dedup();
            if t.is_empty() || uniq.len() != t.len() {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replicas {t:?} must be distinct and not empty"
                )));
            }
            let live = self.view().brokers.clone();
            if let Some(dead) = t.iter().find(|b| !live.contains_key(b)) {
                return Err(BrokerError::InvalidRequest(format!(
                    "broker {dead} is not a live broker"
                )));
            }
        }
        for _ in 0..10 {
            let kv = self.meta.get(&key).await?.ok_or_else(|| {
                BrokerError::UnknownTopicOrPartition(format!("{topic}-{partition}"))
            })?;
            let mut state: PartitionStateRecord = from_json(&kv.value)?;
            match &target {
                Some(t) => {
                    // The original replicas: what a cancel would return to.
                    let original: Vec<i32> = state
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| {
                            state.target_replicas.is_none()
                                || state.isr.contains(r)
                                || t.contains(r)
                        })
                        .collect();
                    let mut replicas = t.clone();
                    replicas.extend(original.iter().filter(|r| !t.contains(r)));
                    state.replicas = replicas;
                    state.target_replicas = Some(t.clone());
                }
                None => {
                    let Some(t) = state.target_replicas.take() else {
                        return Err(BrokerError::InvalidRequest(format!(
                            "{topic}-{partition} has no reassignment in progress"
                        )));
                    };
                    // Drop the target replicas that are not in sync yet.
                    state
                        .replicas
                        .retain(|r| !t.contains(r) || state.isr.contains(r));
                }
            }
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .then(Op::put(key.clone(), to_json(&state)?));
            if self.meta.txn(txn).await?.succeeded {
                tracing::info!(topic, partition, replicas = ?state.replicas, target = ?state.target_replicas, "reassignment recorded");
                self.sync_view().await?;
                return Ok(());
            }
        }
        Err(BrokerError::Metadata(format!(
            "{topic}-{partition}: partition state kept changing; try again"
        )))
    }

    /// Reassignments in progress.
    pub fn reassignments(&self) -> Vec<Reassignment> {
        let v = self.view();
        v.states
            .iter()
            .filter_map(|((t, p), st)| {
                let target = st.state.target_replicas.as_ref()?;
                Some(Reassignment {
                    topic: t.clone(),
                    partition: *p,
                    replicas: st.state.replicas.clone(),
                    adding: target
                        .iter()
                        .copied()
                        .filter(|r| !st.state.isr.contains(r))
                        .collect(),
                    removing: st
                        .state
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !target.contains(r))
                        .collect(),
                })
            })
            .collect()
    }

    /// Leader: finishes `p`'s reassignment once every target replica is in
    /// sync (see the module docs). Returns true if it wrote.
    pub(crate) async fn complete_reassignment(&self, p: &Partition) -> Result<bool, BrokerError> {
        let target = {
            let v = self.view();
            match v.states.get(&(p.topic.clone(), p.index)) {
                Some(st) => st.state.target_replicas.clone(),
                None => None,
            }
        };
        let Some(target) = target else {
            return Ok(false);
        };
        let in_sync = p.stored_isr();
        if !target.iter().all(|r| in_sync.contains(r)) {
            return Ok(false);
        }
        let state_key = self.keys.partition_state(&p.topic, p.index);
        let leader_key = self.keys.partition_leader(&p.topic, p.index);
        let Some(kv) = self.meta.get(&state_key).await? else {
            return Ok(false);
        };
        let mut state: PartitionStateRecord = from_json(&kv.value)?;
        if state.target_replicas.as_ref() != Some(&target) || state.leader_epoch != p.leader_epoch()
        {
            return Ok(false);
        }
        state.isr.retain(|r| target.contains(r));
        state.replicas = target.clone();
        state.target_replicas = None;
        let step_down = target.first() != Some(&self.identity.id);
        let mut txn = Txn::new()
            .when(Compare::CreateRevision(
                leader_key.clone(),
                p.fencing_revision(),
            ))
            .when(Compare::ModRevision(state_key.clone(), kv.mod_revision))
            .then(Op::put(state_key, to_json(&state)?));
        if step_down {
            txn = txn.then(Op::delete(leader_key));
        }
        let done = self.meta.txn(txn).await?.succeeded;
        if done {
            tracing::info!(partition = %p.name(), replicas = ?target, step_down, "reassignment complete");
            self.sync_view().await?;
            self.reconcile_now.notify_one();
        }
        Ok(done)
    }
}
