//! One segment: a `.log` file of stored batches plus its sparse indexes.
//!
//! A segment is written only through [`Segment::append`] while it is the
//! active segment. Reads use positional I/O (`read_at`) so they never move a
//! shared cursor.

use crate::behind::{WriteBehind, CHUNK_BYTES};
use crate::error::{IoContext, LogError};
use crate::index::{Indexes, OffsetEntry, TimeEntry};
use crate::view::SegmentView;
use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_record::{layout, BatchError, BatchHeader, BatchIter};

/// How much of a segment is read at once while scanning headers.
const SCAN_CHUNK: usize = 1 << 20;

pub(crate) struct Segment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    /// Largest batch max-timestamp in the segment (-1 when empty).
    pub max_timestamp: i64,
    /// When the segment was created or reopened: the `segment.ms` clock.
    pub created_ms: i64,
    path: Arc<Path>,
    /// Shared with the write-behind worker, which holds it weakly.
    file: Arc<File>,
    idx: Indexes,
    bytes_since_index: usize,
    index_interval: usize,
    /// Where completed chunks are reported (none: the kernel decides).
    behind: Option<WriteBehind>,
    /// Bytes already reported to `behind`; always a multiple of
    /// [`CHUNK_BYTES`] until the segment is sealed.
    reported: u64,
    /// Set by [`Segment::open`] when it cut off a torn or corrupt tail.
    pub torn: bool,
}

pub(crate) fn file_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(file_name(base, "log")),
            dir.join(file_name(base, "index")),
            dir.join(file_name(base, "timeindex")),
        )
    }

    pub fn create(
        dir: &Path,
        base: i64,
        now_ms: i64,
        index_interval: usize,
    ) -> Result<Self, LogError> {
        let (log, oi, ti) = Self::paths(dir, base);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&log)
            .at(&log)?;
        Ok(Self {
            base_offset: base,
            next_offset: base,
            size: 0,
            max_timestamp: -1,
            created_ms: now_ms,
            path: log.into(),
            file: Arc::new(file),
            idx: Indexes::create(oi, ti)?,
            bytes_since_index: 0,
            index_interval,
            behind: None,
            reported: 0,
            torn: false,
        })
    }

    /// Opens an existing segment. With `recover` (the last two segments of
    /// a log: the active one and the one whose seal may not have reached the
    /// disk) it is fully verified and truncated to its last valid batch, with
    /// indexes rebuilt; otherwise it trusts its indexes and scans only past
    /// the last index entry. Either way a tail that is not whole batches is
    /// cut off, and `torn` says so.
    pub fn open(
        dir: &Path,
        base: i64,
        now_ms: i64,
        index_interval: usize,
        recover: bool,
    ) -> Result<Self, LogError> {
        let (log, oi, ti) = Self::paths(dir, base);
        // Append mode: every write goes to the end, whatever the cursor.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log)
            .at(&log)?;
        let file_len = file.metadata().at(&log)?.len();
        let loaded = if recover {
            None
        } else {
            Indexes::load(oi.clone(), ti.clone())?.filter(|i| {
                i.offsets
                    .last()
                    .is_none_or(|e| u64::from(e.position) < file_len)
            })
        };
        let mut seg = Self {
            base_offset: base,
            next_offset: base,
            size: 0,
            max_timestamp: -1,
            created_ms: now_ms,
            path: log.as_path().into(),
            file: Arc::new(file),
            idx: match loaded {
                Some(i) => i,
                None => Indexes::create(oi, ti)?,
            },
            bytes_since_index: 0,
            index_interval,
            behind: None,
            reported: 0,
            torn: false,
        };
        let rebuild = seg.idx.offsets.is_empty();
        let start = u64::from(seg.idx.floor_position(u32::MAX));
        seg.max_timestamp = seg.idx.times.last().map_or(-1, |e| e.timestamp);
        let mut last: Option<(u64, BatchHeader)> = None;
        let mut pending = Vec::new();
        let valid_end = scan(&seg.file, &log, start, file_len, recover, |pos, h| {
            pending.push((pos, *h));
            last = Some((pos, *h));
        })?;
        if rebuild {
            for (pos, h) in &pending {
                seg.index_batch(*pos, h, h.total_size())?;
            }
            seg.idx.write_pending()?;
        } else {
            for (_, h) in &pending {
                seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp);
            }
        }
        if let Some((_, h)) = last {
            seg.next_offset = h.next_offset();
        } else if let Some(e) = seg.idx.offsets.last() {
            // Unreachable in practice (the scan starts at an indexed batch),
            // but keep offsets sane if the tail vanished.
            seg.next_offset = base + i64::from(e.rel_offset);
        }
        if valid_end < file_len {
            tracing::warn!(
                segment = %log.display(),
                valid_bytes = valid_end,
                file_bytes = file_len,
                "truncating torn or corrupt tail of segment"
            );
            seg.file.set_len(valid_end).at(&log)?;
            seg.file.sync_all().at(&log)?;
            seg.torn = true;
        }
        seg.size = valid_end;
        Ok(seg)
    }

    fn index_batch(&mut self, pos: u64, h: &BatchHeader, size: usize) -> Result<(), LogError> {
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        if self.idx.offsets.is_empty() || self.bytes_since_index >= self.index_interval {
            let rel_offset = (h.base_offset - self.base_offset) as u32;
            self.idx.append_offset(OffsetEntry {
                rel_offset,
                position: pos as u32,
            });
            // Time entries record the running max timestamp whenever it grew.
            if self
                .idx
                .times
                .last()
                .is_none_or(|e| e.timestamp < self.max_timestamp)
            {
                self.idx.append_time(TimeEntry {
                    timestamp: self.max_timestamp,
                    rel_offset,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        Ok(())
    }

    /// Appends stored batches (already carrying their offsets) at the end:
    /// the bytes of `parts`, one after another, in which `batches` are at
    /// the positions given. A failed write leaves the segment as it was
    /// (what part of it reached the file is cut off again).
    pub fn append(
        &mut self,
        parts: &mut [IoSlice<'_>],
        batches: &[(usize, BatchHeader)],
    ) -> Result<(), LogError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(e) = write_all_vectored(&self.file, parts) {
            if let Err(cut) = self.file.set_len(self.size) {
                tracing::error!(segment = %self.path.display(), error = %cut, "cannot cut a failed append off the segment");
            }
            return Err(e).at(&self.path);
        }
        let start = self.size;
        for (pos, h) in batches {
            self.index_batch(start + *pos as u64, h, h.total_size())?;
            self.next_offset = h.next_offset();
        }
        self.idx.write_pending()?;
        self.size += len as u64;
        if let Some(behind) = &self.behind {
            while self.size - self.reported >= CHUNK_BYTES {
                behind.written(&self.file, self.reported, CHUNK_BYTES);
                self.reported += CHUNK_BYTES;
            }
        }
        Ok(())
    }

    /// Reports completed chunks of this (active) segment's appends from now
    /// on; what was there before is left to the kernel.
    pub fn write_behind(&mut self, behind: Option<WriteBehind>) {
        self.reported = self.size - self.size % CHUNK_BYTES;
        self.behind = behind;
    }

    /// On sealing: the last, partial chunk is reported too.
    pub fn report_tail(&mut self) {
        if let Some(behind) = self.behind.take() {
            if self.size > self.reported {
                behind.written(&self.file, self.reported, self.size - self.reported);
            }
        }
    }

    /// What a read from `offset` needs of this segment, to run without the
    /// log's lock (see [`crate::view`]).
    pub fn view(&self, offset: i64) -> SegmentView {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        SegmentView {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            size: self.size,
            from: u64::from(self.idx.floor_position(rel)),
        }
    }

    /// Cuts the segment before the batch holding `offset` and reopens it
    /// (indexes rebuilt from what is left).
    pub fn truncate_at(
        self,
        dir: &Path,
        offset: i64,
        now_ms: i64,
        index_interval: usize,
    ) -> Result<Self, LogError> {
        let cut = match self.view(offset).locate(offset, false)? {
            Some((pos, _)) => pos,
            None => self.size,
        };
        self.file.set_len(cut).at(&self.path)?;
        self.file.sync_all().at(&self.path)?;
        let base = self.base_offset;
        drop(self);
        Segment::open(dir, base, now_ms, index_interval, true)
    }

    /// First `(offset, timestamp)` in this segment with timestamp `>= ts`.
    pub fn find_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let rel = self.idx.time_floor(ts);
        let pos = u64::from(self.idx.floor_position(rel));
        let mut found: Option<(u64, BatchHeader)> = None;
        scan_until(&self.file, &self.path, pos, self.size, |p, h| {
            if h.max_timestamp >= ts {
                found = Some((p, *h));
                true
            } else {
                false
            }
        })?;
        let Some((p, h)) = found else {
            return Ok(None);
        };
        let mut buf = vec![0u8; h.total_size()];
        self.file.read_exact_at(&mut buf, p).at(&self.path)?;
        match strata_record::record_timestamps(&buf) {
            Ok(recs) => Ok(recs
                .into_iter()
                .find(|(_, t)| *t >= ts)
                .or(Some((h.base_offset, h.max_timestamp)))),
            Err(e) => {
                tracing::warn!(segment = %self.path.display(), error = %e, "by-timestamp lookup falls back to batch granularity");
                Ok(Some((h.base_offset, h.max_timestamp)))
            }
        }
    }

    /// Calls `f` with every batch header in the segment, in order.
    pub fn for_each_header(&self, f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        let mut f = f;
        scan(&self.file, &self.path, 0, self.size, false, |_, h| f(h))?;
        Ok(())
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().at(&self.path)?;
        self.idx.sync()
    }

    /// New handles on the segment's files, to fsync them away from the log
    /// once it is sealed.
    pub fn seal_files(&self) -> Result<crate::seal::SealFiles, LogError> {
        let mut files = vec![(self.try_clone_file()?, self.path.to_path_buf())];
        files.extend(self.idx.try_clone_files()?);
        Ok(crate::seal::SealFiles { files })
    }

    pub fn info(&self, active: bool) -> crate::SegmentInfo {
        crate::SegmentInfo {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size_bytes: self.size,
            max_timestamp: self.max_timestamp,
            sealed: !active,
            path: self.path.to_path_buf(),
        }
    }

    pub fn try_clone_file(&self) -> Result<File, LogError> {
        self.file.try_clone().at(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn delete(self) -> Result<(), LogError> {
        self.idx.delete_files();
        std::fs::remove_file(&self.path).at(&self.path)
    }
}

/// Writes every byte of `parts` at the end of `file` (opened to append).
fn write_all_vectored(file: &File, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    while !parts.is_empty() {
        match (&*file).write_vectored(parts) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Walks batch headers from `start` to `file_len`, calling `f` for each.
/// Returns the end of the last complete (and, if `verify`, CRC-valid) batch.
fn scan(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    verify: bool,
    mut f: impl FnMut(u64, &BatchHeader),
) -> Result<u64, LogError> {
    scan_inner(file, path, start, file_len, verify, |p, h| {
        f(p, h);
        false
    })
}

/// Like [`scan`] without verification, stopping once `f` returns true.
fn scan_until(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    f: impl FnMut(u64, &BatchHeader) -> bool,
) -> Result<u64, LogError> {
    scan_inner(file, path, start, file_len, false, f)
}

fn scan_inner(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    verify: bool,
    mut f: impl FnMut(u64, &BatchHeader) -> bool,
) -> Result<u64, LogError> {
    let mut pos = start;
    let mut chunk = SCAN_CHUNK;
    let mut buf = Vec::new();
    while pos < file_len {
        let want = (chunk as u64).min(file_len - pos) as usize;
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos).at(path)?;
        let mut it = if verify {
            BatchIter::verifying(&buf)
        } else {
            BatchIter::new(&buf)
        };
        for (p, h) in it.by_ref() {
            if f(pos + p as u64, &h) {
                return Ok(pos + p as u64 + h.total_size() as u64);
            }
        }
        let valid = it.valid_len() as u64;
        match it.stop_reason() {
            None => pos += valid,
            Some(BatchError::Truncated { needed, .. })
                if pos + valid + *needed as u64 <= file_len =>
            {
                // A batch straddles the chunk boundary: re-read from it.
                pos += valid;
                chunk = chunk.max(*needed).max(layout::HEADER_SIZE);
            }
            Some(_) => return Ok(pos + valid),
        }
    }
    Ok(pos)
}
