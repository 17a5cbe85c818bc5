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
use strata_meta::{Compare, KeyValue, Op, Txn, MAX_TXN_OPS};

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
        let doomed: Vec<KeyValue> = range
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
            .collect();
        let mut deleted = 0;
        // Each key guarded by its revision, so half the operations.
        for chunk in doomed.chunks(MAX_TXN_OPS / 2) {
            deleted += self.delete_unchanged(chunk).await?;
        }
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

    /// Deletes the keys of `kvs` that are unchanged since read: all in one
    /// transaction, or, if any changed, one by one.
    async fn delete_unchanged(&self, kvs: &[KeyValue]) -> Result<usize, GroupError> {
        let guarded = |kv: &KeyValue| {
            (
                Compare::ModRevision(kv.key.clone(), kv.mod_revision),
                Op::delete(kv.key.clone()),
            )
        };
        let store = |e: strata_meta::MetaError| GroupError::OffsetStore(e.to_string());
        let (compares, success) = kvs.iter().map(guarded).unzip();
        let all = Txn {
            compares,
            success,
            failure: Vec::new(),
        };
        if self.meta.txn(all).await.map_err(store)?.succeeded {
            return Ok(kvs.len());
        }
        let mut deleted = 0;
        for kv in kvs {
            let (compare, delete) = guarded(kv);
            let one = Txn::new().when(compare).then(delete);
            deleted += usize::from(self.meta.txn(one).await.map_err(store)?.succeeded);
        }
        Ok(deleted)
    }
}
