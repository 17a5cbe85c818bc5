//! The cold tier on the broker side (DESIGN §4): offloading sealed segments
//! as Parquet objects with manifest entries committed under the leader's
//! fencing token, and serving reads below the local log start from them.
//!
//! Rules:
//! - a segment is offloaded by the partition's leader only: upload first,
//!   then commit `partitions/<t>/<p>/segments/<base>` in a transaction that
//!   requires the leader key to still have the create revision it had when
//!   this broker took it. A fenced leader's upload never becomes part of the
//!   log (the object is deleted, best effort; a GC sweeps leftovers later);
//! - a local segment is deleted (by local retention) only once the manifest
//!   covers its last offset;
//! - one segment per partition per round, sequentially, so memory stays
//!   bounded by about one segment and its Parquet file.

use crate::broker::Broker;
use crate::cluster::SegmentEntry;
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topics::to_json;
use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use strata_cold::{
    object_key, offset_for_timestamp, read_batches, read_batches_ranged, write_segment,
    ReadOptions, WriteOptions,
};
use strata_log::SegmentInfo;
use strata_meta::{Compare, Op, Txn};

pub struct ColdTier {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Whole objects by key, bounded by bytes.
    cache: moka::sync::Cache<String, Bytes>,
}

impl ColdTier {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: String, cache_bytes: u64) -> Self {
        Self {
            store,
            prefix,
            cache: moka::sync::Cache::builder()
                .weigher(|_k: &String, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(cache_bytes)
                .build(),
        }
    }

    async fn object(&self, key: &str) -> Result<Bytes, BrokerError> {
        if let Some(b) = self.cache.get(key) {
            return Ok(b);
        }
        let bytes = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| BrokerError::Storage(format!("cannot read cold segment {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| BrokerError::Storage(format!("cannot read cold segment {key}: {e}")))?;
        self.cache.insert(key.to_string(), bytes.clone());
        Ok(bytes)
    }
}

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
                let next = p.segments().into_iter().find(|s| {
                    s.sealed
                        && s.next_offset - 1 > covered
                        && s.next_offset > s.base_offset
                        && !expired(&p, s, now)
                });
                let Some(seg) = next else { break };
                match self.offload_segment(cold, &p, &seg).await {
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
    ) -> Result<i64, BrokerError> {
        let path = seg.path.clone();
        let data = tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .map_err(|e| BrokerError::Storage(format!("offload read task failed: {e}")))?
            .map_err(|e| {
                BrokerError::Storage(format!("cannot read {}: {e}", seg.path.display()))
            })?;
        let opts = WriteOptions::new(p.topic.clone(), p.index, p.leader_epoch);
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
            p.leader_epoch,
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
            epoch: p.leader_epoch,
        };
        let committed = self
            .meta
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision(
                        self.keys.partition_leader(&p.topic, p.index),
                        p.fencing_revision,
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

    /// Reads from the cold tier at `offset` (below the local log start):
    /// whole rebuilt batches, up to `max_bytes` (at least one batch).
    pub(crate) async fn cold_read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, BrokerError> {
        let Some(cold) = &self.cold else {
            return Ok(None);
        };
        let entry = {
            let v = self.view();
            v.cold_segment(topic, partition, offset)
                .or_else(|| v.next_cold_segment(topic, partition, offset))
        };
        let Some(entry) = entry else { return Ok(None) };
        let opts = ReadOptions {
            from_offset: offset,
            max_bytes,
            ..ReadOptions::default()
        };
        let epoch = entry.epoch;
        let batches = match cold.cache.get(&entry.object_key) {
            // Cached (e.g. just offloaded): decode from memory.
            Some(bytes) => tokio::task::spawn_blocking(move || read_batches(&bytes, &opts, epoch))
                .await
                .map_err(|e| BrokerError::Storage(format!("cold read task failed: {e}")))?,
            // Otherwise range-read only the footer and the row groups needed.
            None => {
                read_batches_ranged(
                    cold.store.clone(),
                    &entry.object_key,
                    entry.bytes,
                    &opts,
                    epoch,
                )
                .await
            }
        }
        .map_err(|e| {
            BrokerError::Storage(format!(
                "cannot read cold segment {}: {e}",
                entry.object_key
            ))
        })?;
        let mut out = BytesMut::new();
        for b in batches {
            out.extend_from_slice(&b);
        }
        self.metrics
            .cold_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(out.freeze()))
    }

    /// The first cold record with a timestamp `>= ts`: only the first
    /// manifest entry whose max timestamp reaches `ts` is read.
    pub(crate) async fn cold_offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, BrokerError> {
        let Some(cold) = &self.cold else {
            return Ok(None);
        };
        let entry = self
            .view()
            .segments
            .get(&(topic.to_string(), partition))
            .and_then(|m| m.values().find(|e| e.max_timestamp >= ts).cloned());
        let Some(entry) = entry else { return Ok(None) };
        let bytes = cold.object(&entry.object_key).await?;
        tokio::task::spawn_blocking(move || offset_for_timestamp(&bytes, ts))
            .await
            .map_err(|e| BrokerError::Storage(format!("cold lookup task failed: {e}")))?
            .map_err(|e| BrokerError::Storage(format!("cannot read cold segment: {e}")))
    }

    /// Applies `retention.ms` / `retention.bytes` to the whole log: the
    /// oldest cold segments go first, each by removing its manifest entry
    /// (guarded by the leader fence) and then its object. Returns how many.
    pub(crate) async fn enforce_cold_retention(&self, p: &Partition, now_ms: i64) -> usize {
        let Some(cold) = &self.cold else { return 0 };
        let cfg = p.config();
        let (retention_ms, retention_bytes) = cfg.whole_log_retention();
        let entries: Vec<SegmentEntry> = self
            .view()
            .segments
            .get(&(p.topic.clone(), p.index))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut total: i64 =
            entries.iter().map(|e| e.bytes as i64).sum::<i64>() + p.size_bytes() as i64;
        let mut removed = 0;
        for e in entries {
            let expired = retention_ms >= 0 && now_ms - e.max_timestamp > retention_ms;
            let too_big = retention_bytes >= 0 && total - e.bytes as i64 >= retention_bytes;
            if !(expired || too_big) {
                break;
            }
            let txn = Txn::new()
                .when(Compare::CreateRevision(
                    self.keys.partition_leader(&p.topic, p.index),
                    p.fencing_revision,
                ))
                .then(Op::delete(self.keys.segment(
                    &p.topic,
                    p.index,
                    e.base_offset,
                )));
            match self.meta.txn(txn).await {
                Ok(r) if r.succeeded => {}
                Ok(_) => break, // no longer the leader
                Err(err) => {
                    tracing::warn!(partition = %p.name(), error = %err, "cannot apply cold retention");
                    break;
                }
            }
            if let Err(err) = cold
                .store
                .delete(&ObjectPath::from(e.object_key.as_str()))
                .await
            {
                tracing::warn!(key = %e.object_key, error = %err, "cannot delete an expired cold segment; the GC will");
            }
            cold.cache.invalidate(&e.object_key);
            total -= e.bytes as i64;
            removed += 1;
            tracing::info!(partition = %p.name(), key = %e.object_key, "retention deleted cold segment");
        }
        if removed > 0 {
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
        removed
    }

    /// Deletes the objects of a deleted topic's manifest entries (best
    /// effort: the manifest entries are already gone; leftovers are orphans
    /// for the GC).
    pub(crate) async fn delete_topic_objects(&self, keys: Vec<String>) {
        let Some(cold) = &self.cold else { return };
        for key in keys {
            if let Err(e) = cold.store.delete(&ObjectPath::from(key.as_str())).await {
                tracing::warn!(key, error = %e, "cannot delete an object of a deleted topic");
            }
            cold.cache.invalidate(&key);
        }
    }

    /// Deletes orphaned objects older than `grace_ms`: under each partition
    /// this broker leads, objects the manifest does not reference (uploads
    /// whose commit failed or never happened); and, on the live broker with
    /// the lowest id, objects of topics that no longer exist. Returns how
    /// many objects were deleted.
    pub async fn collect_garbage(&self, grace_ms: i64) -> usize {
        use futures::TryStreamExt;
        let Some(cold) = &self.cold else { return 0 };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let root = if cold.prefix.is_empty() {
            "topics".to_string()
        } else {
            format!("{}/topics", cold.prefix)
        };
        let listed: Vec<object_store::ObjectMeta> = match cold
            .store
            .list(Some(&ObjectPath::from(root.as_str())))
            .try_collect()
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cold tier for garbage collection");
                return 0;
            }
        };
        let (referenced, topics, lowest) = {
            let v = self.view();
            let referenced: std::collections::HashSet<String> = v
                .segments
                .values()
                .flat_map(|m| m.values().map(|e| e.object_key.clone()))
                .collect();
            let topics: std::collections::HashSet<String> = v.topics.keys().cloned().collect();
            (referenced, topics, v.brokers.keys().next().copied())
        };
        let hosted: std::collections::HashSet<(String, i32)> = self
            .hosted_partitions()
            .iter()
            .map(|p| (p.topic.clone(), p.index))
            .collect();
        let sweeps_deleted_topics = lowest == Some(self.identity.id);
        let mut deleted = 0;
        for meta in listed {
            let key = meta.location.to_string();
            if referenced.contains(&key)
                || now_ms - meta.last_modified.timestamp_millis() < grace_ms
            {
                continue;
            }
            // <root>/<topic>/partition=<p>/<file>
            let rest = key.strip_prefix(&format!("{root}/")).unwrap_or(&key);
            let mut parts = rest.split('/');
            let topic = parts.next().unwrap_or_default().to_string();
            let partition = parts
                .next()
                .and_then(|d| d.strip_prefix("partition="))
                .and_then(|p| p.parse::<i32>().ok());
            let mine = match partition {
                Some(p) if topics.contains(&topic) => hosted.contains(&(topic.clone(), p)),
                _ => sweeps_deleted_topics && !topics.contains(&topic),
            };
            if !mine {
                continue;
            }
            match cold.store.delete(&meta.location).await {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(key, "garbage-collected an unreferenced cold object");
                }
                Err(e) => tracing::warn!(key, error = %e, "cannot delete an unreferenced object"),
            }
        }
        deleted
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

    /// First offset of the whole log: the earliest in either tier, but never
    /// below a log start offset set by DeleteRecords.
    pub(crate) fn earliest_offset(&self, p: &Partition) -> i64 {
        let local = p.log_start_offset();
        let v = self.view();
        let stored = v
            .cold_start(&p.topic, p.index)
            .map_or(local, |c| c.min(local));
        let floor = v
            .states
            .get(&(p.topic.clone(), p.index))
            .map_or(0, |s| s.state.log_start_offset);
        stored.max(floor)
    }

    /// DeleteRecords: makes `offset` (-1: the high watermark) the partition's
    /// log start offset, persisted in the partition state by a CAS that also
    /// requires this broker's leader key; then drops cold and local segments
    /// wholly below it. Returns the new low watermark.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        let p = self.partition(topic, partition)?;
        let hw = p.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(BrokerError::OffsetOutOfRange {
                requested: offset,
                start: self.earliest_offset(&p),
                end: hw,
            });
        }
        if target <= self.earliest_offset(&p) {
            return Ok(self.earliest_offset(&p));
        }
        let state_key = self.keys.partition_state(topic, partition);
        let kv =
            self.meta.get(&state_key).await?.ok_or_else(|| {
                BrokerError::UnknownTopicOrPartition(format!("{topic}-{partition}"))
            })?;
        let mut state: crate::topics::PartitionStateRecord = crate::topics::from_json(&kv.value)?;
        state.log_start_offset = state.log_start_offset.max(target);
        let mut txn = Txn::new()
            .when(Compare::ModRevision(state_key.clone(), kv.mod_revision))
            .when(Compare::CreateRevision(
                self.keys.partition_leader(topic, partition),
                p.fencing_revision,
            ))
            .then(Op::put(state_key, to_json(&state)?));
        let doomed: Vec<SegmentEntry> = self
            .view()
            .segments
            .get(&(topic.to_string(), partition))
            .map(|m| {
                m.values()
                    .filter(|e| e.last_offset < target)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for e in &doomed {
            txn = txn.then(Op::delete(self.keys.segment(
                topic,
                partition,
                e.base_offset,
            )));
        }
        if !self.meta.txn(txn).await?.succeeded {
            return Err(BrokerError::NotLeader(format!(
                "{topic}-{partition}: state changed or leadership moved; retry"
            )));
        }
        self.sync_view().await?;
        if let Some(cold) = &self.cold {
            for e in doomed {
                if let Err(err) = cold
                    .store
                    .delete(&ObjectPath::from(e.object_key.as_str()))
                    .await
                {
                    tracing::warn!(key = %e.object_key, error = %err, "cannot delete a deleted-records object; the GC will");
                }
                cold.cache.invalidate(&e.object_key);
            }
        }
        p.delete_below(target, self.clock.now_ms())?;
        Ok(self.earliest_offset(&p))
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

/// One partition's segments, for operators (`strata segments`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSegments {
    pub topic: String,
    pub partition: i32,
    pub leader: Option<i32>,
    /// Local segments (only on the partition's leader).
    pub hot: Vec<HotSegment>,
    /// The cold-tier manifest.
    pub cold: Vec<SegmentEntry>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HotSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    pub sealed: bool,
    pub path: String,
}

impl Broker {
    /// Hot and cold segments of a topic's partitions (all, or one).
    pub fn segment_listing(
        &self,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<Vec<PartitionSegments>, BrokerError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(topic.to_string()))?;
        let view = self.view().clone();
        let mut out = Vec::new();
        for info in t
            .partitions
            .iter()
            .filter(|p| partition.is_none_or(|q| q == p.index))
        {
            let hot = self
                .hosted()
                .get(&(topic.to_string(), info.index))
                .map(|p| {
                    p.segments()
                        .into_iter()
                        .map(|s| HotSegment {
                            base_offset: s.base_offset,
                            last_offset: s.next_offset - 1,
                            size_bytes: s.size_bytes,
                            max_timestamp: s.max_timestamp,
                            sealed: s.sealed,
                            path: s.path.display().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let cold = view
                .segments
                .get(&(topic.to_string(), info.index))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            out.push(PartitionSegments {
                topic: topic.to_string(),
                partition: info.index,
                leader: info.leader.map(|l| l.broker),
                hot,
                cold,
            });
        }
        if out.is_empty() {
            return Err(BrokerError::UnknownTopicOrPartition(format!(
                "{topic}-{partition:?}"
            )));
        }
        Ok(out)
    }

    /// The Parquet file metadata (key-value pairs, row groups, rows) of the
    /// cold segment holding `offset`.
    pub async fn inspect_cold_segment(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<serde_json::Value, BrokerError> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let Some(cold) = &self.cold else {
            return Err(BrokerError::InvalidRequest(
                "no cold tier configured".into(),
            ));
        };
        let entry = self.view().cold_segment(topic, partition, offset).ok_or(
            BrokerError::OffsetOutOfRange {
                requested: offset,
                start: -1,
                end: -1,
            },
        )?;
        let bytes = cold.object(&entry.object_key).await?;
        let reader = SerializedFileReader::new(bytes)
            .map_err(|e| BrokerError::Storage(format!("cannot read {}: {e}", entry.object_key)))?;
        let md = reader.metadata();
        let kv: serde_json::Map<String, serde_json::Value> = md
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .map(|k| {
                        (
                            k.key.clone(),
                            serde_json::Value::from(k.value.clone().unwrap_or_default()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(serde_json::json!({
            "segment": entry,
            "row_groups": md.num_row_groups(),
            "rows": md.file_metadata().num_rows(),
            "created_by": md.file_metadata().created_by(),
            "metadata": kv,
        }))
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
