//! Offsets committed inside a transaction (TxnOffsetCommit): held as
//! pending under `groups/<g>/txn-offsets/<producer id>/<topic>/<p>` until
//! the transaction ends, then moved to the group's committed offsets in one
//! metadata-store transaction (commit) or deleted (abort).
//!
//! While a partition has pending offsets, an OffsetFetch that asks for
//! stable offsets (read_committed consumers, KIP-447) gets
//! UNSTABLE_OFFSET_COMMIT and retries, so a new consumer never starts from
//! an offset a transaction in flight is about to move.

use super::{lock, CommittedOffset, GroupCoordinator, GroupError};
use crate::topics::{from_json, to_json};
use std::collections::BTreeMap;
use strata_meta::Op;

/// Pending offsets of one group: producer id → partition → offset.
pub(crate) type Pending = BTreeMap<i64, BTreeMap<(String, i32), CommittedOffset>>;

fn store_err(e: impl std::fmt::Display) -> GroupError {
    GroupError::OffsetStore(e.to_string())
}

impl GroupCoordinator {
    /// Stores `offsets` as pending for `producer_id`'s open transaction.
    /// `member` (member id, generation) is checked when the client sent it.
    pub async fn txn_commit_offsets(
        &self,
        group: &str,
        producer_id: i64,
        member: Option<(&str, i32)>,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), GroupError> {
        if group.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if let Some((member_id, generation)) = member {
            let g = self.group(group);
            let r = lock(&g).validate_commit(member_id, generation);
            r?;
        }
        let mut ops = Vec::with_capacity(offsets.len());
        for (t, p, o) in &offsets {
            ops.push(Op::put(
                self.keys.group_txn_offset(group, producer_id, t, *p),
                to_json(o).map_err(store_err)?,
            ));
        }
        // Pending until the transaction ends, so written in parts if need
        // be: nothing reads them as committed before then.
        strata_meta::apply_in_chunks(&*self.meta, ops)
            .await
            .map_err(store_err)?;
        let mut pending = lock(&self.pending);
        let mine = pending
            .entry(group.to_string())
            .or_default()
            .entry(producer_id)
            .or_default();
        for (t, p, o) in offsets {
            mine.insert((t, p), o);
        }
        Ok(())
    }

    /// Ends `producer_id`'s transaction for `group`: its pending offsets
    /// become committed (`commit`) or are dropped. Idempotent.
    pub async fn complete_txn_offsets(
        &self,
        group: &str,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), GroupError> {
        let prefix = self.keys.group_txn_offsets_prefix(group, producer_id);
        let stored = self.meta.range(&prefix).await.map_err(store_err)?;
        let mut moved = Vec::new();
        let mut ops = Vec::new();
        if commit {
            for kv in &stored.kvs {
                let Some((_, _, t, p)) = self.keys.parse_group_txn_offset(&kv.key) else {
                    continue;
                };
                let o: CommittedOffset = match from_json(&kv.value) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(key = %kv.key, error = %e, "dropping unreadable pending offset");
                        continue;
                    }
                };
                ops.push(Op::put(
                    self.keys.group_offset(group, &t, p),
                    to_json(&o).map_err(store_err)?,
                ));
                moved.push((t, p, o));
            }
        }
        if !stored.kvs.is_empty() {
            // The pending offsets go last: if a part fails they are still
            // there, and completing again (idempotent) moves them all.
            ops.push(Op::delete_prefix(prefix));
            strata_meta::apply_in_chunks(&*self.meta, ops)
                .await
                .map_err(store_err)?;
        }
        if let Some(g) = lock(&self.pending).get_mut(group) {
            g.remove(&producer_id);
        }
        let mut all = lock(&self.offsets);
        let entry = all.entry(group.to_string()).or_default();
        for (t, p, o) in moved {
            entry.insert((t, p), o);
        }
        Ok(())
    }

    /// Whether a transaction in flight holds offsets of `group` for the
    /// partition.
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        lock(&self.pending)
            .get(group)
            .is_some_and(|g| g.values().any(|m| m.contains_key(&key)))
    }

    /// Reads `group`'s pending offsets from the store (on becoming its
    /// coordinator).
    pub(crate) async fn load_pending(&self, group: &str) -> Result<(), GroupError> {
        let prefix = format!("{}txn-offsets/", self.keys.group_prefix(group));
        let range = self.meta.range(&prefix).await.map_err(store_err)?;
        let mut loaded: Pending = BTreeMap::new();
        for kv in range.kvs {
            let Some((_, pid, t, p)) = self.keys.parse_group_txn_offset(&kv.key) else {
                continue;
            };
            if let Ok(o) = from_json::<CommittedOffset>(&kv.value) {
                loaded.entry(pid).or_default().insert((t, p), o);
            }
        }
        let mut pending = lock(&self.pending);
        if loaded.is_empty() {
            pending.remove(group);
        } else {
            pending.insert(group.to_string(), loaded);
        }
        Ok(())
    }
}
