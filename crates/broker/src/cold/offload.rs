//! Offload: sealed local segments to Parquet objects under the leader fence.

use super::ColdTier;
use crate::broker::Broker;
use crate::cluster::SegmentEntry;
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topics::to_json;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use strata_cold::{object_key, write_segment, AbortedRange, WriteOptions};
use strata_log::SegmentInfo;
use strata_meta::{Compare, Op, Txn};

impl Broker {
    /// Whether a sealed local segment may be deleted: always without a cold
    /// tier; with one, once the manifest covers its last offset, or when
    /// whole-log retention has expired it anyway.
    pub(crate) fn may_delete_local(&self, p: &Partition, seg: &SegmentInfo) -> bool {
        if self.cold.is_none() || expired(p, seg, self.clock.now_ms()) {
            return true;
        }
        let covered = self
            .view()
            .segments
            .get(&(p.topic.clone(), p.index))
            .and_then(|m| m.values().next_back().map(|e| e.last_offset));
        covered.is_some_and(|c| c >= seg.next_offset - 1)
    }

    /// One offload round: for every partition this broker leads, its sealed
    /// segments not yet in the manifest, oldest first, one at a time (at most
    /// `MAX_PER_ROUND` per partition). Returns how many were offloaded.
    pub async fn offload_once(&self) -> usize {
        const MAX_PER_ROUND: usize = 64;
        let Some(cold) = &self.cold else { return 0 };
        let mut done = 0;
        for p in self.hosted_partitions() {
            let mut covered = self
                .view()
                .segments
                .get(&(p.topic.clone(), p.index))
                .and_then(|m| m.values().next_back().map(|e| e.last_offset))
                .unwrap_or(-1);
            for _ in 0..MAX_PER_ROUND {
                let now = self.clock.now_ms();
                // Segments already past whole-log retention are not worth
                // uploading: retention deletes them locally instead.
                // Only settled offsets go cold: a segment holding part of an
                // open transaction waits until it ends (last stable offset).
                let stable = p.last_stable_offset();
                let next = p.segments().into_iter().find(|s| {
                    s.sealed
                        && s.next_offset - 1 > covered
                        && s.next_offset > s.base_offset
                        && s.next_offset <= stable
                        && !expired(&p, s, now)
                });
                let Some(seg) = next else { break };
                match self.offload_segment(cold, &p, &seg, covered).await {
                    Ok(last) => {
                        done += 1;
                        covered = last;
                    }
                    Err(e) => {
                        self.metrics
                            .offload_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(partition = %p.name(), base = seg.base_offset, error = %e, "offload failed; will retry");
                        break;
                    }
                }
            }
        }
        if done > 0 {
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
        done
    }

    /// Offloads one sealed segment; returns the last offset now covered.
    async fn offload_segment(
        &self,
        cold: &ColdTier,
        p: &Arc<Partition>,
        seg: &SegmentInfo,
        covered: i64,
    ) -> Result<i64, BrokerError> {
        let path = seg.path.clone();
        let data = tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .map_err(|e| BrokerError::Storage(format!("offload read task failed: {e}")))?
            .map_err(|e| {
                BrokerError::Storage(format!("cannot read {}: {e}", seg.path.display()))
            })?;
        let mut opts = WriteOptions::new(p.topic.clone(), p.index, p.leader_epoch());
        opts.from_offset = covered + 1;
        opts.aborted = p
            .aborted_between(seg.base_offset, seg.next_offset)
            .into_iter()
            .map(|a| AbortedRange {
                producer_id: a.producer_id,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
            })
            .collect();
        let file = tokio::task::spawn_blocking(move || write_segment(&Bytes::from(data), &opts))
            .await
            .map_err(|e| BrokerError::Storage(format!("offload encode task failed: {e}")))?
            .map_err(|e| BrokerError::Storage(format!("cannot convert segment to Parquet: {e}")))?;
        let key = object_key(
            &cold.prefix,
            &p.topic,
            p.index,
            file.base_offset,
            file.last_offset,
            p.leader_epoch(),
        );
        let size = file.bytes.len() as u64;
        upload(
            cold.store.as_ref(),
            &key,
            file.bytes.clone(),
            MULTIPART_THRESHOLD,
        )
        .await?;
        let entry = SegmentEntry {
            object_key: key.clone(),
            base_offset: file.base_offset,
            last_offset: file.last_offset,
            min_timestamp: file.min_timestamp,
            max_timestamp: file.max_timestamp,
            bytes: size,
            records: file.record_count,
            epoch: p.leader_epoch(),
        };
        let committed = self
            .meta
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision(
                        self.keys.partition_leader(&p.topic, p.index),
                        p.fencing_revision(),
                    ))
                    .then(Op::put(
                        self.keys.segment(&p.topic, p.index, file.base_offset),
                        to_json(&entry)?,
                    )),
            )
            .await?
            .succeeded;
        if !committed {
            // Fenced: this upload must never become part of the log.
            if let Err(e) = cold.store.delete(&ObjectPath::from(key.as_str())).await {
                tracing::warn!(key, error = %e, "cannot delete a fenced upload; the GC will");
            }
            return Err(BrokerError::NotLeader(format!(
                "{} (fenced during offload)",
                p.name()
            )));
        }
        cold.cache.insert(key.clone(), file.bytes);
        self.metrics
            .offloaded_segments
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(partition = %p.name(), key, records = entry.records, "offloaded segment");
        Ok(entry.last_offset.max(seg.next_offset - 1))
    }

    /// Sealed local segments not yet covered by the manifest, over every
    /// partition this broker leads (the offload backlog).
    pub fn offload_backlog(&self) -> usize {
        if self.cold.is_none() {
            return 0;
        }
        let view = self.view();
        self.hosted_partitions()
            .iter()
            .map(|p| {
                let covered = view
                    .segments
                    .get(&(p.topic.clone(), p.index))
                    .and_then(|m| m.values().next_back().map(|e| e.last_offset))
                    .unwrap_or(-1);
                p.segments()
                    .iter()
                    .filter(|s| s.sealed && s.next_offset - 1 > covered)
                    .filter(|s| !expired(p, s, self.clock.now_ms()))
                    .count()
            })
            .sum()
    }
}

/// Files above this go up as multipart uploads, in parts of this size.
const MULTIPART_THRESHOLD: usize = 32 << 20;

/// Uploads `bytes` to `key`: one PUT, or a multipart upload in parts of
/// `threshold` for larger files (aborted on failure, so no parts linger).
pub(crate) async fn upload(
    store: &dyn ObjectStore,
    key: &str,
    bytes: Bytes,
    threshold: usize,
) -> Result<(), BrokerError> {
    let path = ObjectPath::from(key);
    let fail = |e: object_store::Error| BrokerError::Storage(format!("cannot upload {key}: {e}"));
    if bytes.len() <= threshold {
        store.put(&path, bytes.into()).await.map_err(fail)?;
        return Ok(());
    }
    let parts = store.put_multipart(&path).await.map_err(fail)?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(parts, threshold);
    w.put(bytes);
    match w.finish().await {
        Ok(_) => Ok(()),
        // finish() aborts the upload itself when a part fails.
        Err(e) => Err(fail(e)),
    }
}

/// Whether whole-log `retention.ms` has expired every record of `seg`.
fn expired(p: &Partition, seg: &SegmentInfo, now_ms: i64) -> bool {
    let (retention_ms, _) = p.config().whole_log_retention();
    retention_ms >= 0 && seg.max_timestamp >= 0 && now_ms - seg.max_timestamp > retention_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_files_go_up_in_parts_intact() {
        let store = object_store::memory::InMemory::new();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        upload(&store, "a/big.parquet", Bytes::from(data.clone()), 1 << 20)
            .await
            .unwrap();
        upload(
            &store,
            "a/small.parquet",
            Bytes::from_static(b"tiny"),
            1 << 20,
        )
        .await
        .unwrap();
        let got = store
            .get(&ObjectPath::from("a/big.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], &data[..]);
        let small = store
            .get(&ObjectPath::from("a/small.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&small[..], b"tiny");
    }
}
