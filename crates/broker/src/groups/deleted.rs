//! Offsets of a deleted topic: every group's committed and pending
//! offsets for it are deleted with it, as Kafka does.
//!
//! Reads do not depend on this: each offset carries the id of the topic
//! it was committed for, and `Broker::fetch_offsets` leaves out those of a
//! topic since deleted (a coordinator on another broker may still hold
//! them in memory). This frees the keys, which would otherwise stay in
//! the metadata store for good.
//!
//! Invariant: only offsets of the deleted topic (its id, or no id) are
//! deleted, each only if unchanged since it was read (an offset committed
//! meanwhile for a topic of the same name created again stays).

use super::{lock, CommittedOffset, GroupCoordinator, GroupError};
use crate::topics::from_json;
use strata_meta::{guarded_chunks, Compare, Op, Txn};

impl GroupCoordinator {
    /// Deletes every group's offsets of topic `name` (id `id`), stored and
    /// held here. Returns how many stored offsets were deleted.
    pub async fn forget_topic(&self, name: &str, id: &str) -> Result<usize, GroupError> {
        let ours = |o: &CommittedOffset| o.topic_id.as_deref().is_none_or(|t| t == id);
        let range = self
            .meta
            .range(&self.keys.groups_prefix())
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        // Each guarded by its revision: unchanged since read.
        let doomed: Vec<(Compare, String)> = range
            .kvs
            .into_iter()
            .filter(|kv| {
                let topic = match self.keys.parse_group_offset(&kv.key) {
                    Some((_, t, _)) => Some(t),
                    None => self.keys.parse_group_txn_offset(&kv.key).map(|k| k.2),
                };
                topic.as_deref() == Some(name)
                    && from_json::<CommittedOffset>(&kv.value).is_ok_and(|o| ours(&o))
            })
            .map(|kv| {
                (
                    Compare::ModRevision(kv.key.clone(), kv.mod_revision),
                    kv.key,
                )
            })
            .collect();
        let deleted = self
            .delete_guarded(&doomed)
            .await?
            .iter()
            .filter(|d| **d)
            .count();
        for offsets in lock(&self.offsets).values_mut() {
            offsets.retain(|(t, _), o| t != name || !ours(o));
        }
        for group in lock(&self.pending).values_mut() {
            for offsets in group.values_mut() {
                offsets.retain(|(t, _), o| t != name || !ours(o));
            }
        }
        Ok(deleted)
    }

    /// Deletes each key whose compare holds, in transactions of as many
    /// as fit (`strata_meta::guarded_chunks`): a whole one, or if any
    /// compare in it fails, its keys one by one. Returns which were deleted.
    pub(super) async fn delete_guarded(
        &self,
        keys: &[(Compare, String)],
    ) -> Result<Vec<bool>, GroupError> {
        let store = |e: strata_meta::MetaError| GroupError::OffsetStore(e.to_string());
        let pairs = keys
            .iter()
            .map(|(c, k)| (c.clone(), Op::delete(k.clone())))
            .collect();
        let mut deleted = Vec::with_capacity(keys.len());
        for chunk in guarded_chunks(pairs) {
            let n = chunk.success.len();
            let (compares, ops) = (chunk.compares.clone(), chunk.success.clone());
            if self.meta.txn(chunk).await.map_err(store)?.succeeded {
                deleted.extend(std::iter::repeat_n(true, n));
                continue;
            }
            for (compare, op) in compares.into_iter().zip(ops) {
                let one = Txn::new().when(compare).then(op);
                deleted.push(self.meta.txn(one).await.map_err(store)?.succeeded);
            }
        }
        Ok(deleted)
    }
}
