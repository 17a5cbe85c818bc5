//! Expiry of committed offsets (Kafka's `offsets.retention.minutes`).
//!
//! Kafka discards an empty group's committed offsets once the retention
//! has passed since it became empty (for a consumer that never joined, its
//! last commit). Without it every group ever used keeps its offsets for
//! good: a console consumer's random group, a test's, a renamed
//! application's. Each offset is a key in the metadata store, and every
//! broker reads the whole store at start.
//!
//! A coordinator expires the offsets of the groups it coordinates: a group
//! without members whose last activity (members seen, made or loaded here,
//! the last commit) is older than the retention, and with no transaction's
//! offsets pending, loses all its committed offsets. Each key is deleted
//! only if it still holds the value expired (a commit meanwhile keeps it).
//!
//! Groups that no broker coordinates (none has been asked for them since
//! their coordinator stopped) are adopted by one broker, the live one with
//! the lowest id, once their last commit is older than the retention: it
//! becomes their coordinator, so they expire a retention after that (up to
//! twice the retention in all; never sooner than Kafka would).

use super::{lock, CommittedOffset, GroupCoordinator};
use crate::topics::to_json;
use std::collections::BTreeMap;
use strata_meta::Compare;

/// One group's offsets as they were when chosen to expire.
type Expiring = (String, Vec<((String, i32), CommittedOffset)>);

impl GroupCoordinator {
    /// Expires the committed offsets of this coordinator's groups idle
    /// for `retention_ms` (see the module docs). Returns how many offsets.
    pub async fn expire_offsets(&self, retention_ms: i64) -> usize {
        let now = self.clock.now_ms();
        // Each lock alone (never two at once): activity, then pending, then offsets.
        let active: BTreeMap<String, Option<i64>> = lock(&self.groups)
            .iter()
            .map(|(id, g)| {
                let g = lock(g);
                (id.clone(), g.is_empty().then_some(g.active_ms))
            })
            .collect();
        let pending: Vec<String> = lock(&self.pending)
            .iter()
            .filter(|(_, p)| p.values().any(|m| !m.is_empty()))
            .map(|(id, _)| id.clone())
            .collect();
        let expiring: Vec<Expiring> = lock(&self.offsets)
            .iter()
            .filter(|(id, _)| !pending.contains(id))
            .filter_map(|(id, offsets)| {
                // Members now: not idle. Not made here: made by a commit
                // through another path, so as active as its last commit.
                let active_ms = match active.get(id) {
                    Some(None) => return None,
                    Some(Some(ms)) => *ms,
                    None => 0,
                };
                let committed = offsets.values().map(|o| o.commit_timestamp).max();
                let last = active_ms.max(committed.unwrap_or(0));
                (now.saturating_sub(last) >= retention_ms).then(|| {
                    let all = offsets.iter().map(|(k, o)| (k.clone(), o.clone()));
                    (id.clone(), all.collect())
                })
            })
            .collect();
        let mut expired = 0;
        for (group, offsets) in expiring {
            match self.expire_group(&group, offsets).await {
                Ok(n) => {
                    expired += n;
                    tracing::info!(
                        group,
                        offsets = n,
                        retention_ms,
                        "expired the committed offsets of an idle group"
                    );
                }
                Err(e) => tracing::warn!(group, error = %e, "cannot expire the committed offsets"),
            }
        }
        expired
    }

    /// Deletes `offsets` of `group` where they still hold those values.
    async fn expire_group(
        &self,
        group: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<usize, super::GroupError> {
        let mut guarded = Vec::with_capacity(offsets.len());
        for ((t, p), o) in &offsets {
            let key = self.keys.group_offset(group, t, *p);
            let value = to_json(o).map_err(|e| super::GroupError::OffsetStore(e.to_string()))?;
            guarded.push((Compare::Value(key.clone(), value.into()), key));
        }
        let deleted = self.delete_guarded(&guarded).await?;
        let mut n = 0;
        let mut all = lock(&self.offsets);
        if let Some(held) = all.get_mut(group) {
            for ((tp, o), gone) in offsets.iter().zip(&deleted) {
                if *gone && held.get(tp) == Some(o) {
                    held.remove(tp);
                    n += 1;
                }
            }
            if held.is_empty() {
                all.remove(group);
            }
        }
        let left = all.contains_key(group);
        drop(all);
        // An empty group with no offsets left is gone, as in Kafka (Dead).
        let mut groups = lock(&self.groups);
        if !left && groups.get(group).is_some_and(|g| lock(g).is_empty()) {
            groups.remove(group);
        }
        Ok(n)
    }
}

impl crate::Broker {
    /// Adopts the groups no broker coordinates whose last commit is older
    /// than `retention_ms`, on the live broker with the lowest id (see the
    /// module docs). Returns how many.
    pub(crate) async fn adopt_idle_groups(&self, retention_ms: i64) -> usize {
        if self.view().brokers.keys().next() != Some(&self.node_id()) {
            return 0;
        }
        let range = match self.meta.range(&self.keys.groups_prefix()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the groups to expire");
                return 0;
            }
        };
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for kv in &range.kvs {
            if let Some((group, _, _)) = self.keys.parse_group_offset(&kv.key) {
                // One it cannot read is never taken as old.
                let at = crate::topics::from_json::<CommittedOffset>(&kv.value)
                    .map_or(i64::MAX, |o| o.commit_timestamp);
                let e = last.entry(group).or_insert(i64::MIN);
                *e = (*e).max(at);
            }
        }
        let now = self.now_ms();
        let idle: Vec<String> = {
            let v = self.view();
            last.into_iter()
                .filter(|(g, at)| {
                    !v.coordinators.contains_key(g) && now.saturating_sub(*at) >= retention_ms
                })
                .map(|(g, _)| g)
                .collect()
        };
        let mut adopted = 0;
        for group in idle {
            match self.ensure_coordinator(&group).await {
                Ok(()) => adopted += 1,
                Err(e) => tracing::debug!(group, error = %e, "cannot adopt an idle group"),
            }
        }
        adopted
    }

    /// One round of offset expiry: this broker's groups, then adoption.
    pub(crate) async fn expire_offsets(&self) {
        let retention_ms = self
            .settings
            .offsets_retention_minutes
            .saturating_mul(60_000);
        if retention_ms <= 0 {
            return;
        }
        self.groups.expire_offsets(retention_ms).await;
        let adopted = self.adopt_idle_groups(retention_ms).await;
        if adopted > 0 {
            tracing::info!(
                groups = adopted,
                "adopted idle groups nobody coordinated, to expire their offsets"
            );
        }
    }
}
