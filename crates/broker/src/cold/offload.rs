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
use strata_cold::{object_key, write_segment_file, AbortedRange, SegmentSummary, WriteOptions};
use strata_log::SegmentInfo;
use strata_meta::{Compare, Op, Txn};

impl Broker {
    /// Which of `p`'s sealed local segments may be deleted, decided from
    /// what the broker knows now (so the rule can run off the async
    /// workers, under the partition's lock): always without a cold tier;
    /// with one, once the manifest covers a segment's last offset, or when
    /// whole-log retention has expired it anyway.
    pub(crate) fn local_deletion_rule(&self, p: &Partition) -> LocalDeletion {
        LocalDeletion {
            cold: self.cold.is_some(),
            covered: self
                .view()
                .segments
                .get(&(p.topic.clone(), p.index))
                .and_then(|m| m.values().next_back().map(|e| e.last_offset)),
        }
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
        // The segment is converted in chunks into a local scratch file, so
        // memory stays bounded by a chunk and a row group whatever
        // `segment.bytes` is (a whole 1 GiB segment used to be read, and its
        // Parquet file built, in memory).
        let scratch = self
            .data_dir
            .join(SCRATCH_DIR)
            .join(format!("{}-{}.parquet", p.topic, p.index));
        let result = self.convert_and_upload(cold, p, seg, opts, &scratch).await;
        if let Err(e) = std::fs::remove_file(&scratch) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %scratch.display(), error = %e, "cannot remove an offload scratch file");
            }
        }
        let (file, key, size, small) = result?;
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
        // A small file stays cached for consumers just behind the hot tail.
        if let Some(bytes) = small {
            cold.cache.insert_object(&key, bytes);
        }
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

/// Where offload writes a Parquet file before uploading it (under the
/// data directory; one file per partition at a time, removed after).
const SCRATCH_DIR: &str = "offload-scratch";

/// Removes scratch files an offload interrupted by a crash left behind.
pub(crate) fn remove_offload_scratch(data_dir: &std::path::Path) {
    let dir = data_dir.join(SCRATCH_DIR);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove offload scratch files");
        }
    }
}

/// Bytes of whole batches converted at a time.
const CONVERT_CHUNK: usize = 4 << 20;

impl Broker {
    /// Converts `seg` into the scratch file and uploads it; returns what the
    /// file covers, its key, its size and, when it is small enough to be
    /// read back whole for the cache, its bytes.
    async fn convert_and_upload(
        &self,
        cold: &ColdTier,
        p: &Partition,
        seg: &SegmentInfo,
        opts: WriteOptions,
        scratch: &std::path::Path,
    ) -> Result<(SegmentSummary, String, u64, Option<Bytes>), BrokerError> {
        let (src, out) = (seg.path.clone(), scratch.to_path_buf());
        let summary = tokio::task::spawn_blocking(move || {
            let io = |e: std::io::Error| {
                BrokerError::Storage(format!("cannot write {}: {e}", out.display()))
            };
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let file = std::fs::File::create(&out).map_err(io)?;
            let (summary, w) =
                write_segment_file(&src, &opts, std::io::BufWriter::new(file), CONVERT_CHUNK)
                    .map_err(|e| {
                        BrokerError::Storage(format!("cannot convert segment to Parquet: {e}"))
                    })?;
            // A scratch file needs no fsync: a crash redoes the offload.
            w.into_inner().map_err(|e| io(e.into_error()))?;
            Ok::<_, BrokerError>(summary)
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("offload encode task failed: {e}")))??;
        let key = object_key(
            &cold.prefix,
            &p.topic,
            p.index,
            summary.base_offset,
            summary.last_offset,
            p.leader_epoch(),
        );
        let (size, small) =
            upload_file(cold.store.as_ref(), &key, scratch, MULTIPART_THRESHOLD).await?;
        Ok((summary, key, size, small))
    }
}

/// Uploads the file at `path` to `key`: one PUT when it is at most
/// `threshold` bytes (returning its bytes), else a multipart upload read
/// from the file part by part, at most two parts in memory (aborted on
/// failure, so no parts linger). Returns the size too.
pub(crate) async fn upload_file(
    store: &dyn ObjectStore,
    key: &str,
    path: &std::path::Path,
    threshold: usize,
) -> Result<(u64, Option<Bytes>), BrokerError> {
    use tokio::io::AsyncReadExt;
    let object = ObjectPath::from(key);
    let fail = |e: object_store::Error| BrokerError::Storage(format!("cannot upload {key}: {e}"));
    let io =
        |e: std::io::Error| BrokerError::Storage(format!("cannot read {}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    if size <= threshold as u64 {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf).await.map_err(io)?;
        let bytes = Bytes::from(buf);
        store
            .put(&object, bytes.clone().into())
            .await
            .map_err(fail)?;
        return Ok((size, Some(bytes)));
    }
    let parts = store.put_multipart(&object).await.map_err(fail)?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(parts, threshold);
    let mut sent = 0u64;
    let read = async {
        while sent < size {
            w.wait_for_capacity(2).await.map_err(fail)?;
            let want = (size - sent).min(threshold as u64) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf).await.map_err(io)?;
            w.put(Bytes::from(buf));
            sent += want as u64;
        }
        Ok::<_, BrokerError>(())
    };
    if let Err(e) = read.await {
        w.abort().await.map_err(fail)?;
        return Err(e);
    }
    // finish() aborts the upload itself when a part fails.
    w.finish().await.map_err(fail)?;
    Ok((size, None))
}

/// See [`Broker::local_deletion_rule`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalDeletion {
    cold: bool,
    /// The last offset the manifest covers, if any.
    covered: Option<i64>,
}

impl LocalDeletion {
    pub(crate) fn allows(&self, p: &Partition, seg: &SegmentInfo, now_ms: i64) -> bool {
        !self.cold
            || expired(p, seg, now_ms)
            || self.covered.is_some_and(|c| c >= seg.next_offset - 1)
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
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let big = dir.path().join("big.parquet");
        std::fs::write(&big, &data).unwrap();
        let (size, cached) = upload_file(&store, "a/big.parquet", &big, 1 << 20)
            .await
            .unwrap();
        // Too large to keep: not returned for the cache.
        assert_eq!((size, cached), (3_000_000, None));
        let small = dir.path().join("small.parquet");
        std::fs::write(&small, b"tiny").unwrap();
        let (size, cached) = upload_file(&store, "a/small.parquet", &small, 1 << 20)
            .await
            .unwrap();
        assert_eq!((size, cached.as_deref()), (4, Some(&b"tiny"[..])));
        for (key, want) in [("a/big.parquet", &data[..]), ("a/small.parquet", b"tiny")] {
            let got = store
                .get(&ObjectPath::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(&got[..], want, "{key}");
        }
        let missing = upload_file(&store, "a/x", &dir.path().join("nope"), 1 << 20).await;
        assert!(missing.is_err());
    }

    #[test]
    fn stale_scratch_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join(SCRATCH_DIR);
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join("t-0.parquet"), b"half a file").unwrap();
        remove_offload_scratch(dir.path());
        assert!(!scratch.exists());
        // Nothing to remove is not an error.
        remove_offload_scratch(dir.path());
    }
}
