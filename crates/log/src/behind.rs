//! Write-behind and drop-behind of appended log data: the broker keeps only
//! its most recent writes in the OS page cache.
//!
//! An acks=1 append is a copy into the page cache; left alone, the kernel
//! keeps every written page until memory runs short and writes dirty pages
//! back in bursts (its background ratio, or a 30 s expiry). Everything a
//! partition ever wrote then competes with the rest of the machine (and, in a
//! container, with the broker's own memory limit), and the cache must keep
//! growing into pages never used before, which on ballooned VMs costs a host
//! fault per page (docs/benchmarks.md, session 6: ~0.5 GB/s against 5 GB/s
//! into recycled pages).
//!
//! Here every segment hands each completed chunk of [`CHUNK_BYTES`] to one
//! worker thread per broker, which
//! - starts that chunk's writeback at once (`POSIX_FADV_DONTNEED` on dirty
//!   pages starts asynchronous writeback and drops nothing), so dirty data
//!   stays near a chunk per partition instead of piling up; and
//! - once more than the budget of chunks sits behind it, broker-wide and in
//!   write order, advises the oldest again: by then written back, its pages
//!   are dropped and the next appends reuse them.
//!
//! Invariants: nothing here affects what a read returns (only where it is
//! served from) or durability (fsync stays with `flush.*` and acks=all);
//! appends never wait for the worker (a full queue skips a chunk, left to the
//! kernel as before); the worker holds segments weakly, so a deleted segment
//! is neither kept open nor advised.

use std::collections::VecDeque;
use std::fs::File;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

/// Bytes handed to the worker at a time.
pub const CHUNK_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 8 << 20 };
/// Chunks that may wait for the worker before appends skip theirs.
const QUEUE_DEPTH: usize = 256;

/// The handle segments report written chunks to; cheap to clone. The worker
/// thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct WriteBehind {
    tx: SyncSender<Chunk>,
    stats: Arc<Stats>,
}

/// What the worker has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes whose writeback was started.
    pub written_back: AtomicU64,
    /// Bytes advised out of the page cache once past the budget.
    pub dropped: AtomicU64,
    /// Bytes left to the kernel because the queue was full.
    pub skipped: AtomicU64,
}

struct Chunk {
    file: Weak<File>,
    offset: u64,
    len: u64,
}

impl WriteBehind {
    /// Starts the worker keeping about `budget_bytes` of recent writes
    /// cached. Fails only if the thread cannot be spawned.
    pub fn start(budget_bytes: u64) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let stats = Arc::new(Stats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("strata-writeback".into())
            .spawn(move || run(rx, budget_bytes, &worker_stats))?;
        Ok(Self { tx, stats })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Reports `len` bytes at `offset` of `file` as written. Never blocks.
    pub(crate) fn written(&self, file: &Arc<File>, offset: u64, len: u64) {
        let chunk = Chunk {
            file: Arc::downgrade(file),
            offset,
            len,
        };
        match self.tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => {
                self.stats.skipped.fetch_add(c.len, Ordering::Relaxed);
            }
        }
    }
}

fn run(rx: Receiver<Chunk>, budget: u64, stats: &Stats) {
    let mut behind = Window::new(budget);
    while let Ok(chunk) = rx.recv() {
        if advise(&chunk) {
            stats.written_back.fetch_add(chunk.len, Ordering::Relaxed);
        }
        for old in behind.push(chunk) {
            if advise(&old) {
                stats.dropped.fetch_add(old.len, Ordering::Relaxed);
            }
        }
    }
}

/// `POSIX_FADV_DONTNEED` on a chunk whose segment is still open: starts
/// writeback of its dirty pages and drops its clean ones. False if the
/// segment is gone or the kernel refused (logged; nothing depends on it).
fn advise(c: &Chunk) -> bool {
    let (Some(file), Some(len)) = (c.file.upgrade(), NonZeroU64::new(c.len)) else {
        return false;
    };
    match rustix::fs::fadvise(&*file, c.offset, Some(len), rustix::fs::Advice::DontNeed) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, offset = c.offset, "page cache advice refused");
            false
        }
    }
}

/// The chunks still cached, oldest first, and their total size.
struct Window {
    budget: u64,
    cached: u64,
    chunks: VecDeque<Chunk>,
}

impl Window {
    fn new(budget: u64) -> Self {
        Self {
            budget,
            cached: 0,
            chunks: VecDeque::new(),
        }
    }

    /// Adds the newest chunk; returns the oldest ones that no longer fit.
    fn push(&mut self, chunk: Chunk) -> Vec<Chunk> {
        self.cached += chunk.len;
        self.chunks.push_back(chunk);
        let mut out = Vec::new();
        while self.cached > self.budget {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.cached -= old.len;
            out.push(old);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, len: u64) -> Chunk {
        Chunk {
            file: Weak::new(),
            offset,
            len,
        }
    }

    #[test]
    fn the_window_gives_back_the_oldest_chunks_past_its_budget() {
        let mut w = Window::new(100);
        assert!(w.push(chunk(0, 40)).is_empty());
        assert!(w.push(chunk(40, 40)).is_empty());
        let out = w.push(chunk(80, 40));
        assert_eq!(out.iter().map(|c| c.offset).collect::<Vec<_>>(), [0]);
        let out = w.push(chunk(120, 100));
        assert_eq!(out.iter().map(|c| c.offset).collect::<Vec<_>>(), [40, 80]);
        assert_eq!(w.cached, 100);
        // A zero budget keeps nothing.
        let mut none = Window::new(0);
        assert_eq!(none.push(chunk(0, 1)).len(), 1);
        assert_eq!(none.cached, 0);
    }
}
