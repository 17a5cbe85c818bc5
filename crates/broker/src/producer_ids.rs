//! Producer ids for InitProducerId, handed out from blocks reserved in the
//! metadata store (`producers/next_id`, DESIGN §5) by compare-and-set, so ids
//! never repeat across restarts or brokers.

use crate::error::BrokerError;
use std::sync::Arc;
use strata_meta::{Compare, MetadataStore, Op, Txn};

/// Ids reserved per metadata-store round trip.
const BLOCK: i64 = 1000;
/// CAS attempts before giving up (other brokers racing for blocks).
const ATTEMPTS: usize = 20;

pub struct ProducerIdAllocator {
    meta: Arc<dyn MetadataStore>,
    key: String,
    /// `[next, end)` of the current block.
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn new(meta: Arc<dyn MetadataStore>, key: String) -> Self {
        Self {
            meta,
            key,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    pub async fn next(&self) -> Result<i64, BrokerError> {
        let mut b = self.block.lock().await;
        if b.0 >= b.1 {
            *b = self.reserve().await?;
        }
        let id = b.0;
        b.0 += 1;
        Ok(id)
    }

    async fn reserve(&self) -> Result<(i64, i64), BrokerError> {
        for _ in 0..ATTEMPTS {
            let current = self.meta.get(&self.key).await?;
            let (start, guard) = match &current {
                Some(kv) => {
                    let start = std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .ok_or_else(|| {
                            BrokerError::Metadata(format!("{} is not a number", self.key))
                        })?;
                    (
                        start,
                        Compare::ModRevision(self.key.clone(), kv.mod_revision),
                    )
                }
                None => (0, Compare::CreateRevision(self.key.clone(), 0)),
            };
            let end = start + BLOCK;
            let ok = self
                .meta
                .txn(
                    Txn::new()
                        .when(guard)
                        .then(Op::put(self.key.clone(), end.to_string())),
                )
                .await?
                .succeeded;
            if ok {
                return Ok((start, end));
            }
        }
        Err(BrokerError::Metadata(
            "could not reserve a block of producer ids (too much contention)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_meta::MemStore;

    #[tokio::test]
    async fn ids_are_unique_across_allocators_sharing_a_store() {
        let meta: Arc<dyn MetadataStore> = Arc::new(MemStore::new());
        let a = ProducerIdAllocator::new(meta.clone(), "/p/next_id".into());
        let b = ProducerIdAllocator::new(meta, "/p/next_id".into());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1500 {
            assert!(seen.insert(a.next().await.unwrap()));
            assert!(seen.insert(b.next().await.unwrap()));
        }
    }
}
