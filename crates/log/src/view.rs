//! Reads that run outside the lock guarding their log.
//!
//! [`PartitionLog::prepare_read`](crate::PartitionLog::prepare_read) takes,
//! under the owner's lock, what a read needs of the (at most two) segments
//! that can hold the wanted offset: the file, its size then and where its
//! index says to start. [`LogRead::read`] then does the I/O with no lock
//! held, so an append never waits behind a read from disk (or a 1 MiB copy
//! out of the page cache).
//!
//! Why that is safe:
//! - the bytes of a segment below the size it had when the view was taken
//!   only change by truncation, and a log is truncated only above its high
//!   watermark (a replica joining a new leader), while readers take only
//!   batches below `upper`, at most the high watermark, for consumers;
//! - a truncation that shortens the file during a read leaves the read
//!   fewer bytes: it returns the whole batches it has, never an error;
//! - a segment deleted (retention, reset) during a read is still read
//!   whole: the view holds the open file, and an unlinked file stays
//!   readable while open.

use crate::error::{IoContext, LogError};
use crate::readbuf::POOL;
use crate::ReadResult;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use strata_record::{layout, BatchHeader, BatchIter};

/// Bytes read at a time while walking batch headers to a fetch offset.
const LOCATE_CHUNK: usize = 8 << 10;

/// One segment as a read sees it.
#[derive(Clone)]
pub(crate) struct SegmentView {
    pub(crate) file: Arc<File>,
    pub(crate) path: Arc<Path>,
    /// The segment's size when the view was taken: nothing past it is read.
    pub(crate) size: u64,
    /// Where the walk to the wanted offset starts (a floor index entry).
    pub(crate) from: u64,
}

impl SegmentView {
    /// Whole batches starting with the one containing `offset`, up to
    /// `max_bytes` (at least one batch), stopping before any batch whose
    /// base offset is `>= upper`; `None` if no batch here reaches `offset`
    /// or the first one starts at `upper` or later.
    ///
    /// With `cached_only`, fails with [`LogError::NotCached`] rather than
    /// wait for the disk.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper: i64,
        cached_only: bool,
    ) -> Result<Option<Bytes>, LogError> {
        let Some((pos, first)) = self.locate(offset, cached_only)? else {
            return Ok(None);
        };
        if first.base_offset >= upper {
            return Ok(None);
        }
        let want = (max_bytes.max(first.total_size()) as u64).min(self.size - pos) as usize;
        let mut buf = POOL.take(want);
        let got = match self.read_at(&mut buf[..want], pos, cached_only) {
            Ok(got) => got,
            Err(e) => {
                // Not cached (the caller reads again, off the async
                // workers) or a failed read: the buffer goes back for it.
                POOL.give_back(buf);
                return Err(e);
            }
        };
        let mut end = 0;
        for (p, h) in BatchIter::new(&buf[..got]) {
            if h.base_offset >= upper || (p > 0 && p + h.total_size() > max_bytes) {
                break;
            }
            end = p + h.total_size();
        }
        Ok(Some(POOL.freeze(buf, end)))
    }

    /// The first batch at or after `from` whose last offset is `>= offset`,
    /// walking headers only. `from` is a floor index entry, so the walk
    /// spans about one index interval: it reads small chunks rather than
    /// the batches themselves (which the caller reads once, after).
    pub(crate) fn locate(
        &self,
        offset: i64,
        cached_only: bool,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut buf = vec![0u8; LOCATE_CHUNK];
        let mut pos = self.from;
        while pos + layout::HEADER_SIZE as u64 <= self.size {
            let want = (LOCATE_CHUNK as u64).min(self.size - pos) as usize;
            let n = self.read_at(&mut buf[..want], pos, cached_only)?;
            let mut at = 0usize;
            while at + layout::HEADER_SIZE <= n {
                let h = match BatchHeader::parse_prefix(&buf[at..n]) {
                    Ok(h) => h,
                    // Only complete, validated batches are ever below
                    // `size`; anything else is the end of what we can use.
                    Err(_) => return Ok(None),
                };
                if pos + (at + h.total_size()) as u64 > self.size {
                    return Ok(None);
                }
                if h.last_offset() >= offset {
                    return Ok(Some((pos + at as u64, h)));
                }
                at += h.total_size();
            }
            if n < want {
                // Truncated under this read: what is gone was above `upper`.
                return Ok(None);
            }
            // The next header starts at `pos + at` (possibly past this chunk).
            pos += at as u64;
        }
        Ok(None)
    }

    /// Fills `buf` from `pos` as far as the file goes; how much it read.
    /// With `cached_only`, only from the page cache (`RWF_NOWAIT`):
    /// [`LogError::NotCached`] if part of it would have to come from disk,
    /// so an async caller can move the read to a thread that may block.
    /// Filesystems without `RWF_NOWAIT` read normally.
    fn read_at(&self, buf: &mut [u8], pos: u64, cached_only: bool) -> Result<usize, LogError> {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        let mut done = 0;
        let mut nowait = cached_only;
        while done < buf.len() {
            let at = pos + done as u64;
            let n = if nowait {
                let mut to = [std::io::IoSliceMut::new(&mut buf[done..])];
                match preadv2(&*self.file, &mut to, at, ReadWriteFlags::NOWAIT) {
                    Ok(n) => n,
                    Err(Errno::AGAIN) => return Err(LogError::NotCached),
                    Err(Errno::INTR) => continue,
                    Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
                        nowait = false;
                        continue;
                    }
                    Err(e) => return Err(std::io::Error::from(e)).at(&self.path),
                }
            } else {
                match self.file.read_at(&mut buf[done..], at) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).at(&self.path),
                }
            };
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

/// A read of a log, prepared under the log owner's lock and run without it
/// (see the module docs for why that is safe).
#[derive(Clone)]
pub struct LogRead {
    offset: i64,
    max_bytes: usize,
    upper: i64,
    /// The segment that can hold `offset`, then the next one (where the
    /// read goes on if `offset` is past the first one's last batch).
    segments: Vec<SegmentView>,
}

impl LogRead {
    pub(crate) fn new(
        offset: i64,
        max_bytes: usize,
        upper: i64,
        segments: Vec<SegmentView>,
    ) -> Self {
        Self {
            offset,
            max_bytes,
            upper,
            segments,
        }
    }

    /// Whole batches from the offset, up to `max_bytes` (at least one
    /// batch), below `upper`; empty when there are none. May wait for the
    /// disk.
    pub fn read(&self) -> Result<ReadResult, LogError> {
        self.run(false)
    }

    /// [`Self::read`] from the page cache only: `None` if any of it would
    /// have to come from disk (older than the write-behind budget, or
    /// evicted), for the caller to read again where it may block.
    pub fn read_cached(&self) -> Result<Option<ReadResult>, LogError> {
        match self.run(true) {
            Ok(r) => Ok(Some(r)),
            Err(LogError::NotCached) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn run(&self, cached_only: bool) -> Result<ReadResult, LogError> {
        for seg in &self.segments {
            if let Some(data) = seg.read(self.offset, self.max_bytes, self.upper, cached_only)? {
                return Ok(ReadResult { data });
            }
        }
        Ok(ReadResult { data: Bytes::new() })
    }
}
