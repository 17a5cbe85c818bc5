//! [`PartitionLog`]: the ordered set of segments of one partition replica.

use crate::behind::WriteBehind;
use crate::error::{IoContext, LogError};
use crate::seal::{SealHook, Sealing};
use crate::segment::Segment;
use crate::view::LogRead;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use strata_record::{layout, stored_header, BatchError, BatchHeader, BatchIter, ValidatedBatch};

/// Per-partition log settings, derived from topic configs by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll once the active segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: keep the log under this size; -1 = unbounded.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Set when the broker stamped log-append time.
    pub log_append_time: Option<i64>,
}

/// What [`PartitionLog::append`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub info: AppendInfo,
    /// Each batch's header as stored (offsets and epoch assigned), in order.
    pub headers: Vec<BatchHeader>,
}

/// The bytes of validated batch `vb` of `records` (its header and records).
fn batch_at<'a>(records: &'a [u8], vb: &ValidatedBatch) -> Result<&'a [u8], LogError> {
    let end = vb.position + vb.header.total_size();
    records
        .get(vb.position..end)
        .ok_or(LogError::Batch(BatchError::Truncated {
            needed: end,
            available: records.len(),
        }))
}

/// Batches read from the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub data: Bytes,
}

/// Summary of one segment, for operators and the offloader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    pub sealed: bool,
    pub path: PathBuf,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    /// Given to each active segment in turn.
    behind: Option<WriteBehind>,
    /// The fsync of the segment the last roll sealed, if one was started.
    sealing: Option<Sealing>,
    /// Runs on the seal thread before it syncs (tests).
    seal_hook: Option<SealHook>,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering the active segment.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let n = bases.len();
        let mut bases = bases.into_iter().enumerate();
        for (i, base) in bases.by_ref() {
            // The last two: the active segment and the one whose seal may
            // not have reached the disk (see `seal.rs`).
            let recover = i + 2 >= n;
            let mut seg = Segment::open(dir, base, now_ms, config.index_interval_bytes, recover)?;
            let torn = seg.torn;
            if torn && !recover {
                // It becomes the active segment: verify it whole, as one.
                drop(seg);
                seg = Segment::open(dir, base, now_ms, config.index_interval_bytes, true)?;
            }
            segments.insert(base, seg);
            if torn {
                break;
            }
        }
        // A segment cut short leaves a gap before the next: what followed
        // it cannot be kept (offsets must stay dense). Its index files go
        // with the orphans below.
        for (_, base) in bases {
            tracing::warn!(dir = %dir.display(), base_offset = base, "deleting segment after a torn one");
            let p = dir.join(crate::segment::file_name(base, "log"));
            std::fs::remove_file(&p).at(&p)?;
        }
        // Remove index files whose segment is gone (e.g. crash mid-deletion,
        // or dropped above).
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                let stem = name.split('.').next().and_then(|s| s.parse::<i64>().ok());
                if let Some(b) = stem {
                    if !segments.contains_key(&b) && !name.ends_with(".log") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        if segments.is_empty() {
            segments.insert(
                0,
                Segment::create(dir, 0, now_ms, config.index_interval_bytes)?,
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            behind: None,
            sealing: None,
            seal_hook: None,
        })
    }

    /// Runs `hook` on the seal thread of every later roll before it syncs.
    #[cfg(test)]
    pub(crate) fn set_seal_hook(&mut self, hook: SealHook) {
        self.seal_hook = Some(hook);
    }

    /// Whether the segment the last roll sealed is still being synced.
    #[cfg(test)]
    pub(crate) fn seal_pending(&self) -> bool {
        self.sealing.as_ref().is_some_and(|s| !s.is_done())
    }

    /// Reports this log's appends from now on to `behind`, which keeps only
    /// the broker's most recent writes in the page cache; `None` leaves the
    /// cache to the kernel.
    pub fn set_write_behind(&mut self, behind: Option<WriteBehind>) {
        self.behind = behind.clone();
        self.active_mut().write_behind(behind);
    }

    /// Makes `seg` the active segment.
    fn push_active(&mut self, base: i64, mut seg: Segment) {
        seg.write_behind(self.behind.clone());
        self.segments.insert(base, seg);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        // Invariant: there is always at least one segment.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("partition log has no segment"))
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("partition log has no segment"))
    }

    /// Offset the next appended record will get (the log end offset).
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.segments.keys().next().copied().unwrap_or(0)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Appends a client's validated record set: assigns consecutive offsets
    /// and the leader epoch to every batch (and log-append time if asked)
    /// in a header of its own, and writes each header and its batch's
    /// records in one vectored write, so the records go from the request
    /// to the file without being copied.
    pub fn append(
        &mut self,
        records: &[u8],
        batches: &[ValidatedBatch],
        leader_epoch: i32,
        now_ms: i64,
        log_append_time: bool,
    ) -> Result<Appended, LogError> {
        self.maybe_roll(records.len() as u64, now_ms)?;
        let base_offset = self.next_offset();
        let mut next = base_offset;
        let mut stamped = Vec::with_capacity(batches.len());
        let mut bodies = Vec::with_capacity(batches.len());
        let mut stored = Vec::with_capacity(batches.len());
        for vb in batches {
            let batch = batch_at(records, vb)?;
            let h = stored_header(
                batch,
                vb.header.max_timestamp,
                next,
                leader_epoch,
                log_append_time.then_some(now_ms),
            )?;
            let header = BatchHeader::parse_prefix(&h)?;
            stamped.push(h);
            // `stored_header` checked the batch holds a whole header.
            bodies.push(&batch[layout::HEADER_SIZE..]);
            stored.push((vb.position, header));
            next = header.next_offset();
        }
        // The headers are borrowed once all are built.
        let mut parts: Vec<IoSlice<'_>> = stamped
            .iter()
            .zip(&bodies)
            .flat_map(|(h, body)| [IoSlice::new(h), IoSlice::new(body)])
            .collect();
        self.active_mut().append(&mut parts, &stored)?;
        Ok(Appended {
            info: AppendInfo {
                base_offset,
                last_offset: next - 1,
                log_append_time: log_append_time.then_some(now_ms),
            },
            headers: stored.into_iter().map(|(_, h)| h).collect(),
        })
    }

    /// Appends batches that already carry their offsets and leader epochs
    /// (a follower copying its leader's log). Every batch must pass its
    /// length and CRC checks and the first must start at the log end, with
    /// the rest following densely; nothing is written otherwise.
    pub fn append_stored(&mut self, buf: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let mut it = BatchIter::verifying(buf);
        let mut stored = Vec::new();
        let mut next = self.next_offset();
        for (pos, h) in it.by_ref() {
            if h.base_offset != next {
                return Err(LogError::NotContiguous {
                    expected: next,
                    got: h.base_offset,
                });
            }
            next = h.next_offset();
            stored.push((pos, h));
        }
        if it.valid_len() != buf.len() || stored.is_empty() {
            let why = it
                .stop_reason()
                .map_or_else(|| "no whole batch".to_string(), |e| e.to_string());
            return Err(LogError::Corrupt(
                self.dir.clone(),
                format!(
                    "replicated data of {} bytes rejected after {} bytes: {why}",
                    buf.len(),
                    it.valid_len()
                ),
            ));
        }
        let base_offset = self.next_offset();
        self.maybe_roll(buf.len() as u64, now_ms)?;
        self.active_mut()
            .append(&mut [IoSlice::new(buf)], &stored)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: None,
        })
    }

    /// Removes everything at and after `offset` (a follower dropping a tail
    /// its new leader does not have). A batch straddling `offset` goes
    /// whole, so the log may end below `offset`. Truncating at or below the
    /// log start empties the log, which then starts at `offset`.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        if offset >= self.next_offset() {
            return Ok(());
        }
        if offset <= self.log_start_offset() {
            return self.reset_to(offset, now_ms);
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete()?;
            }
        }
        let Some((&base, _)) = self.segments.iter().next_back() else {
            return self.reset_to(offset, now_ms);
        };
        if let Some(seg) = self.segments.remove(&base) {
            let seg =
                seg.truncate_at(&self.dir, offset, now_ms, self.config.index_interval_bytes)?;
            self.push_active(base, seg);
        }
        tracing::info!(dir = %self.dir.display(), offset, log_end = self.next_offset(), "truncated log");
        Ok(())
    }

    /// Deletes every segment and starts an empty log at `offset` (a new or
    /// far-behind follower: history older than its leader's local log is in
    /// the cold tier, so only the hot tail is copied).
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let offset = offset.max(0);
        for (_, seg) in std::mem::take(&mut self.segments) {
            seg.delete()?;
        }
        let seg = Segment::create(&self.dir, offset, now_ms, self.config.index_interval_bytes)?;
        self.push_active(offset, seg);
        tracing::info!(dir = %self.dir.display(), offset, "log reset to start at offset");
        Ok(())
    }

    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), LogError> {
        let cfg = &self.config;
        let a = self.active();
        let full = a.size > 0 && a.size + incoming > cfg.segment_bytes;
        let old = a.size > 0 && now_ms - a.created_ms >= cfg.segment_ms;
        // Relative offsets and positions in the indexes are u32.
        let wide = a.size + incoming > u64::from(u32::MAX)
            || a.next_offset - a.base_offset > i64::from(i32::MAX);
        if full || old || wide {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end. The
    /// sealed segment is fsync'd on a thread of its own (see `seal.rs`);
    /// this waits only for the previous roll's fsync, if still running.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let next = self.next_offset();
        if self.active().size == 0 {
            return Ok(());
        }
        if let Some(prev) = self.sealing.take() {
            prev.wait()?;
        }
        let files = self.active().seal_files()?;
        let seg = Segment::create(&self.dir, next, now_ms, self.config.index_interval_bytes)?;
        self.active_mut().report_tail();
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled segment");
        self.push_active(next, seg);
        self.sealing = Some(Sealing::start(files, self.seal_hook.clone()));
        Ok(())
    }

    /// Rolls if the active segment has outlived `segment.ms` (for idle partitions).
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.maybe_roll(0, now_ms)
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (but at least one
    /// batch), not past `upper` (the high watermark).
    pub fn read(&self, offset: i64, max_bytes: usize, upper: i64) -> Result<ReadResult, LogError> {
        self.prepare_read(offset, max_bytes, upper)?.read()
    }

    /// [`Self::read`], prepared here and run by the caller, who may release
    /// the lock guarding this log first (see [`LogRead`]). Fails now if
    /// `offset` is outside the log.
    pub fn prepare_read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper: i64,
    ) -> Result<LogRead, LogError> {
        let start = self.log_start_offset();
        let end = self.next_offset();
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        let mut segments = Vec::with_capacity(2);
        for (_, seg) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..).take(1))
        {
            if offset >= seg.next_offset && seg.next_offset == end {
                break;
            }
            segments.push(seg.view(offset));
        }
        Ok(LogRead::new(offset, max_bytes, upper.min(end), segments))
    }

    /// First `(offset, timestamp)` whose timestamp is `>= ts`, or `None`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if let Some(hit) = seg.find_timestamp(ts)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Calls `f` with every batch header in the log, oldest first (used to
    /// rebuild producer state on open).
    pub fn for_each_header(&self, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        for seg in self.segments.values() {
            seg.for_each_header(&mut f)?;
        }
        Ok(())
    }

    /// Calls `f` with every batch header at or above `from`, oldest first
    /// (to replay the log after a snapshot).
    pub fn for_each_header_from(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        for seg in self.segments.values().filter(|s| s.next_offset > from) {
            seg.for_each_header(|h| {
                if h.base_offset >= from {
                    f(h)
                }
            })?;
        }
        Ok(())
    }

    /// fsyncs the active segment and its indexes, after the segment sealed
    /// last, if its fsync is still running.
    pub fn flush(&self) -> Result<(), LogError> {
        if let Some(s) = &self.sealing {
            s.wait()?;
        }
        self.active().sync()
    }

    /// A handle on the active segment file, to fsync without holding the
    /// partition's lock.
    pub fn flush_handle(&self) -> Result<FlushHandle, LogError> {
        Ok(FlushHandle {
            file: self.active().try_clone_file()?,
            path: self.active().path().to_path_buf(),
            sealing: self.sealing.clone(),
        })
    }

    /// Deletes whole sealed segments beyond `retention.ms` / `retention.bytes`.
    /// An expired active segment is rolled first so it can go too. Returns
    /// the number of segments deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        self.enforce_retention_where(now_ms, |_| true)
    }

    /// Like [`Self::enforce_retention`], but only deletes segments for which
    /// `may_delete` holds (the cold tier passes "its Parquet file is
    /// committed"); deletion stops at the first segment that may not go, so
    /// the log stays contiguous.
    pub fn enforce_retention_where(
        &mut self,
        now_ms: i64,
        may_delete: impl Fn(&SegmentInfo) -> bool,
    ) -> Result<usize, LogError> {
        let mut deleted = 0;
        let retention_ms = self.config.retention_ms;
        if retention_ms >= 0 {
            let a = self.active();
            if a.size > 0 && a.max_timestamp >= 0 && now_ms - a.max_timestamp > retention_ms {
                self.roll(now_ms)?;
            }
            while self.segments.len() > 1 {
                let Some((&base, first)) = self.segments.iter().next() else {
                    break;
                };
                if first.max_timestamp < 0 || now_ms - first.max_timestamp <= retention_ms {
                    break;
                }
                if !may_delete(&first.info(false)) {
                    break;
                }
                self.delete_segment(base)?;
                deleted += 1;
            }
        }
        let retention_bytes = self.config.retention_bytes;
        if retention_bytes >= 0 {
            while self.segments.len() > 1 {
                let Some((&base, first)) = self.segments.iter().next() else {
                    break;
                };
                if (self.size_bytes() - first.size) < retention_bytes as u64 {
                    break;
                }
                if !may_delete(&first.info(false)) {
                    break;
                }
                self.delete_segment(base)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes every segment whose records all lie below `offset`
    /// (DeleteRecords). The active segment is rolled first if it is wholly
    /// below, so the log end offset is kept. Returns segments deleted.
    pub fn delete_below(&mut self, offset: i64, now_ms: i64) -> Result<usize, LogError> {
        if self.active().size > 0 && self.next_offset() <= offset {
            self.roll(now_ms)?;
        }
        let mut n = 0;
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if first.next_offset > offset {
                break;
            }
            self.delete_segment(base)?;
            n += 1;
        }
        Ok(n)
    }

    fn delete_segment(&mut self, base: i64) -> Result<(), LogError> {
        if let Some(seg) = self.segments.remove(&base) {
            tracing::info!(dir = %self.dir.display(), base_offset = base, "deleting segment by retention");
            seg.delete()?;
        }
        Ok(())
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        let last = self.active().base_offset;
        self.segments
            .values()
            .map(|s| s.info(s.base_offset == last))
            .collect()
    }

    /// Removes the whole log directory (topic deletion).
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).at(&dir)
    }
}

/// fsync access to the active segment file, detached from the log's lock.
pub struct FlushHandle {
    file: File,
    path: PathBuf,
    /// The seal pending when the handle was taken: records acknowledged
    /// after this sync may be in that segment, so it must be durable too.
    sealing: Option<Sealing>,
}

impl FlushHandle {
    pub fn sync(&self) -> Result<(), LogError> {
        if let Some(s) = &self.sealing {
            s.wait()?;
        }
        self.file.sync_data().at(&self.path)
    }
}
