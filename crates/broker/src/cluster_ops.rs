//! The cluster side of [`Broker`]: the view, the session, leadership and
//! group-coordinator placement (see `cluster/mod.rs` for the rules).

use crate::broker::Broker;
use crate::cluster::view::TopicEntry;
use crate::cluster::{ClusterView, CoordinatorRecord, LeaderRecord};
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::keys::ParsedKey;
use crate::partition::{incarnation, Partition};
use crate::replication::follower::FollowerHandle;
use crate::replication::replica_set::ReplicaSet;
use crate::topics::{to_json, PartitionStateRecord};
use std::sync::Arc;
use std::time::Duration;
use strata_log::PartitionLog;
use strata_meta::{Compare, MetaError, Op, Txn};

/// Which coordinator key a claim is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoordinatorKind {
    Group,
    Transaction,
}

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
        {
            let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
            if fresh.revision >= v.revision {
                *v = fresh;
            }
        }
        self.leaders_changed.notify_waiters();
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
                        let key = self.keys.parse(ev.key());
                        if matches!(
                            key,
                            ParsedKey::Topic(_)
                                | ParsedKey::PartitionState(..)
                                | ParsedKey::PartitionLeader(..)
                        ) {
                            self.reconcile_now.notify_one();
                        }
                        // A follower waiting for its leader (or for the
                        // leader's address) tries again at once.
                        if matches!(key, ParsedKey::PartitionLeader(..) | ParsedKey::Broker(_)) {
                            self.leaders_changed.notify_waiters();
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
        for round in 0u64.. {
            tokio::select! {
                _ = self.reconcile_now.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.shutdown.cancelled() => return,
            }
            // A scan of every partition: every 10th round is soon enough
            // for states left unwritten for `STATE_REPAIR_AFTER_MS`.
            if round % 10 == 9 {
                self.repair_partition_states().await;
            }
            // Leftovers of a deletion this broker was down through: rare,
            // and a directory listing each minute finds them.
            if round % 60 == 5 {
                self.remove_stray_replicas().await;
            }
            self.reconcile().await;
        }
    }

    fn drop_everything(&self) {
        let led: Vec<Arc<Partition>> = self
            .hosted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in led {
            p.demote();
        }
        self.groups.forget_all();
        self.txns.forget_all();
    }

    /// Makes local replicas match the view: leads the partitions whose
    /// leader key this session holds, follows the others it is a replica
    /// of, runs for leadership of leaderless partitions whose ISR it is in,
    /// lets go (deleting files) of replicas moved away or deleted, and
    /// applies changed topic configs. Replicas are reopened as followers
    /// after a session loss (the reconcile that follows re-establishes roles).
    pub(crate) async fn reconcile(&self) {
        let _one = self.reconcile_lock.lock().await;
        let lease = self.session.lease();
        let me = self.identity.id;
        let view = self.view().clone();
        let is_replica = |k: &(String, i32)| {
            view.topics.contains_key(&k.0)
                && view
                    .states
                    .get(k)
                    .is_some_and(|s| s.state.replicas.contains(&me))
        };
        let leads = |k: &(String, i32)| {
            lease != 0
                && view
                    .leaders
                    .get(k)
                    .is_some_and(|l| l.leader.broker == me && l.lease == lease)
        };
        // Leaders that no longer lead: demote (and follow, if still a replica).
        // A view older than this broker's own acquisition says nothing yet.
        let stale: Vec<(String, i32)> = self
            .hosted()
            .iter()
            .filter(|(k, p)| !leads(k) && view.revision >= p.fencing_revision())
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let removed = self
                .hosted
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(p) = removed {
                p.demote();
                tracing::info!(partition = %p.name(), "no longer the leader");
                if is_replica(&key) {
                    self.start_following(key, p);
                } else {
                    self.remove_replica(p).await;
                }
            }
        }
        // Partitions with a leader again start their next leaderless spell afresh.
        self.leaderless_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !view.leaders.contains_key(k));
        // Followed replicas moved away or deleted.
        let gone: Vec<(String, i32)> = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| !is_replica(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(p) = self.stop_following(&key).await {
                self.remove_replica(p).await;
            }
        }
        let mut acquired = false;
        for ((topic, p), st) in &view.states {
            let key = (topic.clone(), *p);
            let Some(t) = view.topics.get(topic) else {
                continue;
            };
            if !st.state.replicas.contains(&me) {
                continue;
            }
            // Still open from a deleted topic of the same name: this broker
            // had not reconciled between that topic's deletion and this
            // one's creation.
            if self
                .local_replica(&key)
                .is_some_and(|part| part.is_other_topic(&t.record.id))
            {
                self.drop_replica_of_deleted_topic(&key).await;
            }
            if let Some(part) = self.local_replica(&key) {
                if !Arc::ptr_eq(&part.config(), &t.config) {
                    part.set_config(t.config.clone());
                }
                if part.is_leader() {
                    part.set_replicas(&st.state.replicas, self.clock.now_ms());
                }
            }
            match view.leaders.get(&key) {
                Some(l) if leads(&key) => {
                    if self.hosted().contains_key(&key) {
                        continue;
                    }
                    let part = self.stop_or_open(&key, t).await;
                    if let Some(part) = part {
                        self.lead(key, part, l.leader.epoch, l.create_revision, &st.state);
                    }
                }
                Some(_) => self.ensure_following(&key, t).await,
                None if lease != 0 && self.eligible_leader(&key, &st.state, &view) => {
                    let part = self.stop_or_open(&key, t).await;
                    let Some(part) = part else { continue };
                    match self
                        .acquire(topic, *p, st.state.clone(), st.mod_revision, lease, &view)
                        .await
                    {
                        Some((epoch, revision, state)) => {
                            self.lead(key, part, epoch, revision, &state);
                            acquired = true;
                        }
                        None => self.start_following(key, part),
                    }
                }
                None => self.ensure_following(&key, t).await,
            }
        }
        // Read our own leader keys before the next reconcile (one read for
        // every partition taken in this pass).
        if acquired {
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
    }

    /// May this broker run for leadership of a leaderless partition? Only a
    /// member of the stored ISR (unclean election is off): it holds every
    /// acknowledged record. The first live ISR member in replica order (the
    /// preferred replica when it is in sync) runs at once; the others join
    /// in after two seconds, in case it cannot.
    fn eligible_leader(
        &self,
        key: &(String, i32),
        state: &PartitionStateRecord,
        view: &ClusterView,
    ) -> bool {
        let me = self.identity.id;
        if !state.isr.contains(&me) {
            return false;
        }
        let first = state
            .replicas
            .iter()
            .find(|r| state.isr.contains(r) && view.brokers.contains_key(r));
        if first == Some(&me) {
            return true;
        }
        let now = self.clock.now_ms();
        let mut since = self
            .leaderless_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        now - *since.entry(key.clone()).or_insert(now) >= 2000
    }

    /// The local replica (led or followed), if open.
    fn local_replica(&self, key: &(String, i32)) -> Option<Arc<Partition>> {
        if let Some(p) = self.hosted().get(key) {
            return Some(p.clone());
        }
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|h| h.partition.clone())
    }

    fn lead(
        &self,
        key: (String, i32),
        part: Arc<Partition>,
        epoch: i32,
        fencing_revision: i64,
        state: &PartitionStateRecord,
    ) {
        let set = ReplicaSet::new(
            self.identity.id,
            state.replicas.clone(),
            &state.isr,
            part.log_end_offset(),
            self.clock.now_ms(),
        );
        part.promote(epoch, fencing_revision, set);
        tracing::info!(partition = %part.name(), epoch, isr = ?state.isr, log_end = part.log_end_offset(), "leading");
        self.hosted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, part);
        // A follower's Hello may be waiting for this (`led_here`).
        self.leaders_changed.notify_waiters();
    }

    fn start_following(&self, key: (String, i32), part: Arc<Partition>) {
        let Some(me) = self.self_ref.get().and_then(|w| w.upgrade()) else {
            return;
        };
        let h = FollowerHandle::spawn(me, part);
        let old = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, h);
        if let Some(old) = old {
            // Unreachable under the reconcile lock; never leave two copiers.
            tokio::spawn(old.stop());
        }
    }

    async fn ensure_following(&self, key: &(String, i32), t: &TopicEntry) {
        let open = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key);
        if open || self.hosted().contains_key(key) {
            return;
        }
        if let Some(part) = self.open_replica(&key.0, key.1, t).await {
            self.start_following(key.clone(), part);
        }
    }

    /// The local replica of `key` for a role change: the followed one
    /// (its copying stopped), or else the log opened from disk.
    async fn stop_or_open(&self, key: &(String, i32), t: &TopicEntry) -> Option<Arc<Partition>> {
        match self.stop_following(key).await {
            Some(part) => Some(part),
            None => self.open_replica(&key.0, key.1, t).await,
        }
    }

    async fn stop_following(&self, key: &(String, i32)) -> Option<Arc<Partition>> {
        let h = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)?;
        Some(h.stop().await)
    }

    /// Closes and deletes a replica (led or followed) of a deleted topic
    /// whose name a new topic took; the caller opens the new one's.
    async fn drop_replica_of_deleted_topic(&self, key: &(String, i32)) {
        let led = self
            .hosted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let part = match led {
            Some(p) => {
                p.demote();
                Some(p)
            }
            None => self.stop_following(key).await,
        };
        if let Some(p) = part {
            tracing::warn!(partition = %p.name(), "open replica of a deleted topic of the same name");
            self.remove_replica(p).await;
        }
    }

    /// Deletes the files of a replica this broker no longer holds.
    async fn remove_replica(&self, p: Arc<Partition>) {
        tracing::info!(partition = %p.name(), "replica removed from this broker; deleting local files");
        let part = p.clone();
        let r = tokio::task::spawn_blocking(move || part.delete_files()).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::error!(partition = %p.name(), "failed to delete partition files");
        }
    }

    /// Takes the leader key (only if absent) and bumps the epoch in the
    /// partition state, in one transaction guarded by the state's revision.
    /// The new ISR keeps only live members (a dead leader cannot confirm
    /// writes). Returns the epoch, the leader key's create revision and the
    /// state written.
    async fn acquire(
        &self,
        topic: &str,
        p: i32,
        mut state: PartitionStateRecord,
        state_rev: i64,
        lease: i64,
        view: &ClusterView,
    ) -> Option<(i32, i64, PartitionStateRecord)> {
        let epoch = state.leader_epoch + 1;
        state.leader_epoch = epoch;
        let me = self.identity.id;
        state
            .isr
            .retain(|b| *b == me || view.brokers.contains_key(b));
        let leader_key = self.keys.partition_leader(topic, p);
        let state_key = self.keys.partition_state(topic, p);
        let (Ok(leader), Ok(state_json)) = (
            to_json(&LeaderRecord { broker: me, epoch }),
            to_json(&state),
        ) else {
            return None;
        };
        let txn = Txn::new()
            .when(Compare::CreateRevision(leader_key.clone(), 0))
            .when(Compare::ModRevision(state_key.clone(), state_rev))
            .then(Op::put_with_lease(leader_key, leader, lease))
            .then(Op::put(state_key, state_json));
        match self.meta.txn(txn).await {
            Ok(r) if r.succeeded => {
                tracing::info!(topic, partition = p, epoch, isr = ?state.isr, "became leader");
                // The leader key was created by this transaction.
                Some((epoch, r.revision, state))
            }
            Ok(_) => {
                tracing::debug!(
                    topic,
                    partition = p,
                    "leadership taken elsewhere or state moved"
                );
                None
            }
            Err(e) => {
                tracing::warn!(topic, partition = p, error = %e, "cannot take leadership");
                None
            }
        }
    }

    /// Opens the local replica's log (recovering a torn tail) as a follower.
    async fn open_replica(
        &self,
        topic: &str,
        p: i32,
        entry: &TopicEntry,
    ) -> Option<Arc<Partition>> {
        let dir = self.data_dir.join(format!("{topic}-{p}"));
        let now = self.clock.now_ms();
        let (t, cfg, id) = (
            topic.to_string(),
            entry.config.clone(),
            entry.record.id.clone(),
        );
        let behind = self.write_behind.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let claimed = incarnation::claim(&dir, &id).map_err(|e| {
                BrokerError::Storage(format!(
                    "cannot claim {} for topic id {id}: {e}",
                    dir.display()
                ))
            })?;
            if let incarnation::Claimed::Replaced { previous } = claimed {
                tracing::warn!(
                    partition = %format!("{t}-{p}"),
                    previous_topic_id = %previous,
                    topic_id = %id,
                    "deleted a replica of a deleted topic of the same name"
                );
            }
            let mut log = PartitionLog::open(&dir, cfg.log_config(), now)?;
            log.set_write_behind(behind);
            Partition::open(t, p, log, cfg, now).map(|part| part.with_topic_id(id))
        })
        .await;
        match opened {
            Ok(Ok(part)) => Some(Arc::new(part)),
            Ok(Err(e)) => {
                tracing::error!(topic, partition = p, error = %e, "cannot open partition log");
                None
            }
            Err(e) => {
                tracing::error!(topic, partition = p, error = %e, "partition open task failed");
                None
            }
        }
    }

    /// Where clients should find `group`'s coordinator: the broker holding
    /// its coordinator key, or else the live broker it hashes to.
    pub fn coordinator_for(&self, group: &str) -> Option<crate::cluster::BrokerRecord> {
        self.coordinator_of(CoordinatorKind::Group, group)
    }

    /// Where clients should find the transaction coordinator of `id`.
    pub fn txn_coordinator_for(&self, id: &str) -> Option<crate::cluster::BrokerRecord> {
        self.coordinator_of(CoordinatorKind::Transaction, id)
    }

    fn coordinator_of(
        &self,
        kind: CoordinatorKind,
        key: &str,
    ) -> Option<crate::cluster::BrokerRecord> {
        let v = self.view();
        let held = match kind {
            CoordinatorKind::Group => v.coordinators.get(key),
            CoordinatorKind::Transaction => v.txn_coordinators.get(key),
        };
        let id = match held {
            Some(c) => c.broker,
            None => {
                let ids: Vec<i32> = v.brokers.keys().copied().collect();
                if ids.is_empty() {
                    return None;
                }
                let h = key.bytes().fold(0x811c9dc5u32, |h, b| {
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
        match self.claim_coordinator(CoordinatorKind::Group, group).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                tracing::info!(group, "became group coordinator");
                self.groups.load_group(group).await
            }
            Err(BrokerError::NotCoordinator(_)) => Err(GroupError::NotCoordinator),
            Err(BrokerError::Group(e)) => Err(e),
            Err(e) => Err(GroupError::OffsetStore(e.to_string())),
        }
    }

    /// Succeeds if this broker coordinates transactional id `id`, taking
    /// its coordinator key if nobody holds it; a newly taken id's state is
    /// read afresh from the metadata store.
    pub async fn ensure_txn_coordinator(&self, id: &str) -> Result<(), BrokerError> {
        if self
            .claim_coordinator(CoordinatorKind::Transaction, id)
            .await?
        {
            tracing::info!(transactional_id = id, "became transaction coordinator");
            self.txns.forget(id);
        }
        Ok(())
    }

    /// Takes the coordinator key of `key` for this session if free.
    /// `Ok(true)`: newly taken; `Ok(false)`: already ours.
    async fn claim_coordinator(
        &self,
        kind: CoordinatorKind,
        key: &str,
    ) -> Result<bool, BrokerError> {
        if !crate::keys::id_fits(key) {
            return Err(match kind {
                CoordinatorKind::Group => BrokerError::Group(GroupError::InvalidGroupId),
                CoordinatorKind::Transaction => BrokerError::InvalidRequest(format!(
                    "a transactional id of {} bytes is longer than the {} a Kafka string holds",
                    key.len(),
                    crate::keys::MAX_ID_BYTES
                )),
            });
        }
        let not_coordinator = || BrokerError::NotCoordinator(key.to_string());
        let lease = self.session.lease();
        if lease == 0 || !self.session.is_live(self.clock.now_ms()) {
            return Err(not_coordinator());
        }
        let (current, path) = {
            let v = self.view();
            match kind {
                CoordinatorKind::Group => (
                    v.coordinators.get(key).copied(),
                    self.keys.group_coordinator(key),
                ),
                CoordinatorKind::Transaction => (
                    v.txn_coordinators.get(key).copied(),
                    self.keys.txn_coordinator(key),
                ),
            }
        };
        match current {
            Some(c) if c.broker == self.identity.id && c.lease == lease => return Ok(false),
            Some(_) => return Err(not_coordinator()),
            None => {}
        }
        let value = to_json(&CoordinatorRecord {
            broker: self.identity.id,
        })?;
        let won = self
            .meta
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision(path.clone(), 0))
                    .then(Op::put_with_lease(path, value, lease)),
            )
            .await?
            .succeeded;
        if let Err(e) = self.sync_view().await {
            tracing::warn!(error = %e, "cannot refresh the cluster view");
        }
        if won {
            Ok(true)
        } else {
            Err(not_coordinator())
        }
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
