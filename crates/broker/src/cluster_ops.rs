//! The cluster side of [`Broker`]: the view, the session, leadership and
//! group-coordinator placement (see `cluster/mod.rs` for the rules).

use crate::broker::Broker;
use crate::cluster::{ClusterView, CoordinatorRecord, LeaderRecord};
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::keys::ParsedKey;
use crate::partition::Partition;
use crate::topics::{to_json, PartitionStateRecord};
use std::sync::Arc;
use std::time::Duration;
use strata_log::PartitionLog;
use strata_meta::{Compare, MetaError, Op, Txn};

/// Bounded backoff between retries against the metadata store.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    (RETRY_MIN * 2u32.saturating_pow(attempt.min(6))).min(RETRY_MAX)
}

impl Broker {
    /// Re-reads everything under the cluster root into the view (read-your-
    /// writes after this broker's own transactions; resync after a watch
    /// error). Events at or below the read revision are then ignored.
    pub(crate) async fn sync_view(&self) -> Result<(), BrokerError> {
        let range = self.meta.range(self.keys.root()).await?;
        let fresh = ClusterView::load(
            &self.keys,
            &range.kvs,
            range.revision,
            &self.settings.topic_defaults,
        );
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        if fresh.revision >= v.revision {
            *v = fresh;
        }
        Ok(())
    }

    /// Grants a lease and registers `brokers/<id>` with it.
    pub(crate) async fn open_session(&self) -> Result<(), BrokerError> {
        let ttl = self.settings.session_timeout_ms.max(1000);
        let sent = self.clock.now_ms();
        let lease = self
            .meta
            .grant_lease(Duration::from_millis(ttl as u64))
            .await?;
        let record = to_json(&self.identity)?;
        self.meta
            .txn(Txn::new().then(Op::put_with_lease(
                self.keys.broker(self.identity.id),
                record,
                lease,
            )))
            .await?;
        self.session.renewed(lease, sent, ttl);
        tracing::info!(
            broker = self.identity.id,
            lease,
            "registered with the metadata store"
        );
        self.sync_view().await?;
        Ok(())
    }

    /// Revokes the session lease: leadership and coordinators are released
    /// at once, so other brokers can take over without waiting for the TTL.
    pub(crate) async fn close_session(&self) {
        let lease = self.session.lease();
        self.session.lost();
        if lease != 0 {
            if let Err(e) = self.meta.revoke_lease(lease).await {
                tracing::warn!(error = %e, "could not revoke the session lease at shutdown");
            }
        }
    }

    /// Keeps the session alive; on loss, drops every partition and group and
    /// opens a new session.
    pub(crate) async fn session_loop(self: Arc<Self>) {
        let ttl = self.settings.session_timeout_ms.max(1000);
        let every = Duration::from_millis((ttl / 4) as u64);
        let mut failures = 0u32;
        loop {
            let wait = if self.session.lease() == 0 {
                backoff(failures)
            } else {
                every
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let lease = self.session.lease();
            if lease == 0 {
                match self.open_session().await {
                    Ok(()) => {
                        failures = 0;
                        self.reconcile_now.notify_one();
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "cannot open a metadata-store session; retrying");
                    }
                }
                continue;
            }
            let sent = self.clock.now_ms();
            match self.meta.keep_alive(lease).await {
                Ok(()) => {
                    self.session.renewed(lease, sent, ttl);
                    failures = 0;
                }
                Err(MetaError::LeaseNotFound(_)) => {
                    tracing::error!(
                        lease,
                        "metadata-store session expired; giving up leadership"
                    );
                    self.session.lost();
                    self.drop_everything();
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot renew the metadata-store session");
                }
            }
        }
    }

    /// Applies watch events to the view; resyncs and rewatches on errors.
    pub(crate) async fn watch_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let from = self.view().revision + 1;
            let mut stream = match self.meta.watch_prefix(self.keys.root(), from).await {
                Ok(s) => s,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot watch the metadata store; resyncing");
                    tokio::time::sleep(backoff(failures)).await;
                    if let Err(e) = self.sync_view().await {
                        tracing::warn!(error = %e, "cannot read the metadata store");
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = self.shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(ev)) => {
                        failures = 0;
                        {
                            let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
                            // Older events are already in the last snapshot;
                            // re-applying one at the same revision is a no-op.
                            if ev.revision() >= v.revision {
                                v.apply(&self.keys, &ev, &self.settings.topic_defaults);
                            }
                        }
                        // Only topics, partition states and leaders change
                        // what this broker hosts; offset commits, manifest
                        // entries and coordinators do not (and the loop also
                        // reconciles every second).
                        if matches!(
                            self.keys.parse(ev.key()),
                            ParsedKey::Topic(_)
                                | ParsedKey::PartitionState(..)
                                | ParsedKey::PartitionLeader(..)
                        ) {
                            self.reconcile_now.notify_one();
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "metadata watch ended; resyncing");
                        break;
                    }
                    None => break,
                }
            }
            failures += 1;
            tokio::time::sleep(backoff(failures)).await;
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot read the metadata store");
            }
            self.reconcile_now.notify_one();
        }
    }

    /// Reconciles whenever woken, and at least every second.
    pub(crate) async fn reconcile_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.reconcile_now.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.shutdown.cancelled() => return,
            }
            self.reconcile().await;
        }
    }

    fn drop_everything(&self) {
        self.hosted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.groups.forget_all();
    }

    /// Makes hosted partitions match the view: takes leadership of assigned
    /// leaderless partitions, lets go of partitions led elsewhere or deleted,
    /// and applies changed topic configs.
    pub(crate) async fn reconcile(&self) {
        let lease = self.session.lease();
        let me = self.identity.id;
        let view = self.view().clone();
        // Let go of what is no longer ours.
        let stale: Vec<(String, i32)> = self
            .hosted()
            .keys()
            .filter(|k| {
                let ours = view
                    .leaders
                    .get(*k)
                    .is_some_and(|l| l.leader.broker == me && l.lease == lease && lease != 0);
                !ours
            })
            .cloned()
            .collect();
        for key in stale {
            let removed = self
                .hosted
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            let topic_gone = !view.topics.contains_key(&key.0);
            if let Some(p) = removed {
                if topic_gone {
                    tracing::info!(partition = %p.name(), "topic deleted; removing local files");
                    let part = p.clone();
                    let r = tokio::task::spawn_blocking(move || part.delete_files()).await;
                    if !matches!(r, Ok(Ok(()))) {
                        tracing::error!(partition = %p.name(), "failed to delete partition files");
                    }
                } else {
                    tracing::info!(partition = %p.name(), "no longer the leader");
                }
            }
        }
        if lease == 0 {
            return;
        }
        for ((topic, p), st) in &view.states {
            let key = (topic.clone(), *p);
            let Some(t) = view.topics.get(topic) else {
                continue;
            };
            match view.leaders.get(&key) {
                Some(l) if l.leader.broker == me && l.lease == lease => {
                    let hosted = self.hosted().get(&key).cloned();
                    match hosted {
                        Some(part) => {
                            if !Arc::ptr_eq(&part.config(), &t.config) {
                                part.set_config(t.config.clone());
                            }
                        }
                        None => {
                            self.host(
                                topic,
                                *p,
                                l.leader.epoch,
                                l.create_revision,
                                t.config.clone(),
                            )
                            .await
                        }
                    }
                }
                Some(_) => {}
                None if st.state.replicas.first() == Some(&me) => {
                    self.acquire(
                        topic,
                        *p,
                        st.state.clone(),
                        st.mod_revision,
                        lease,
                        t.config.clone(),
                    )
                    .await;
                }
                None => {}
            }
        }
    }

    /// Takes the leader key (only if absent) and bumps the epoch in the
    /// partition state, in one transaction guarded by the state's revision.
    async fn acquire(
        &self,
        topic: &str,
        p: i32,
        mut state: PartitionStateRecord,
        state_rev: i64,
        lease: i64,
        config: Arc<crate::config::TopicConfig>,
    ) {
        let epoch = state.leader_epoch + 1;
        state.leader_epoch = epoch;
        let leader_key = self.keys.partition_leader(topic, p);
        let state_key = self.keys.partition_state(topic, p);
        let (Ok(leader), Ok(state_json)) = (
            to_json(&LeaderRecord {
                broker: self.identity.id,
                epoch,
            }),
            to_json(&state),
        ) else {
            return;
        };
        let txn = Txn::new()
            .when(Compare::CreateRevision(leader_key.clone(), 0))
            .when(Compare::ModRevision(state_key.clone(), state_rev))
            .then(Op::put_with_lease(leader_key, leader, lease))
            .then(Op::put(state_key, state_json));
        match self.meta.txn(txn).await {
            Ok(r) if r.succeeded => {
                tracing::info!(topic, partition = p, epoch, "became leader");
                // The leader key was created by this transaction.
                self.host(topic, p, epoch, r.revision, config).await;
            }
            Ok(_) => tracing::debug!(
                topic,
                partition = p,
                "leadership taken elsewhere or state moved"
            ),
            Err(e) => tracing::warn!(topic, partition = p, error = %e, "cannot take leadership"),
        }
    }

    async fn host(
        &self,
        topic: &str,
        p: i32,
        epoch: i32,
        fencing_revision: i64,
        config: Arc<crate::config::TopicConfig>,
    ) {
        let dir = self.data_dir.join(format!("{topic}-{p}"));
        let now = self.clock.now_ms();
        let (t, cfg) = (topic.to_string(), config.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let log = PartitionLog::open(&dir, cfg.log_config(), now)?;
            Partition::open(t, p, epoch, fencing_revision, log, cfg, now)
        })
        .await;
        match opened {
            Ok(Ok(part)) => {
                self.hosted
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((topic.to_string(), p), Arc::new(part));
            }
            Ok(Err(e)) => {
                tracing::error!(topic, partition = p, error = %e, "cannot open partition log")
            }
            Err(e) => {
                tracing::error!(topic, partition = p, error = %e, "partition open task failed")
            }
        }
    }

    /// Where clients should find `group`'s coordinator: the broker holding
    /// its coordinator key, or else the live broker it hashes to.
    pub fn coordinator_for(&self, group: &str) -> Option<crate::cluster::BrokerRecord> {
        let v = self.view();
        let id = match v.coordinators.get(group) {
            Some(c) => c.broker,
            None => {
                let ids: Vec<i32> = v.brokers.keys().copied().collect();
                if ids.is_empty() {
                    return None;
                }
                let h = group.bytes().fold(0x811c9dc5u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(0x01000193)
                });
                ids[(h as usize) % ids.len()]
            }
        };
        v.brokers.get(&id).cloned()
    }

    /// Succeeds if this broker coordinates `group`, taking the coordinator
    /// key (bound to its lease) if nobody holds it. Loads the group's
    /// committed offsets when it becomes the coordinator.
    pub async fn ensure_coordinator(&self, group: &str) -> Result<(), GroupError> {
        let lease = self.session.lease();
        if lease == 0 || !self.session.is_live(self.clock.now_ms()) {
            return Err(GroupError::NotCoordinator);
        }
        let current = self.view().coordinators.get(group).copied();
        match current {
            Some(c) if c.broker == self.identity.id && c.lease == lease => return Ok(()),
            Some(_) => return Err(GroupError::NotCoordinator),
            None => {}
        }
        let key = self.keys.group_coordinator(group);
        let value = to_json(&CoordinatorRecord {
            broker: self.identity.id,
        })
        .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        let won = self
            .meta
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision(key.clone(), 0))
                    .then(Op::put_with_lease(key, value, lease)),
            )
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?
            .succeeded;
        if let Err(e) = self.sync_view().await {
            tracing::warn!(error = %e, "cannot refresh the cluster view");
        }
        if !won {
            return Err(GroupError::NotCoordinator);
        }
        tracing::info!(group, "became group coordinator");
        self.groups.load_group(group).await
    }

    /// Waits (bounded) until every partition of `topic` has a leader in the
    /// view, so a client's next Metadata request finds them.
    pub(crate) async fn await_leaders(&self, topic: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = self
                .topic(topic)
                .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()));
            if ready || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
            self.reconcile().await;
        }
    }

    /// ListGroups: groups with state here, plus groups that only have
    /// committed offsets and would be coordinated here.
    pub async fn list_groups(&self) -> Vec<crate::groups::GroupListing> {
        let mut out = self.groups.list();
        let range = match self.meta.range(&self.keys.groups_prefix()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list groups in the metadata store");
                return out;
            }
        };
        let mut names: Vec<String> = range
            .kvs
            .iter()
            .filter_map(|kv| self.keys.parse_group_offset(&kv.key).map(|(g, _, _)| g))
            .collect();
        names.dedup();
        for g in names {
            let mine = self
                .coordinator_for(&g)
                .is_some_and(|b| b.id == self.identity.id);
            if mine && !out.iter().any(|l| l.group_id == g) {
                out.push(crate::groups::GroupListing {
                    group_id: g,
                    protocol_type: "consumer".into(),
                    state: crate::groups::GroupState::Empty,
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }
}
