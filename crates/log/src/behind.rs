//! Write-behind and drop-behind of appended log data: the broker keeps only
//! its most recent writes in the OS page cache.
//!
//! An acks=1 append is a copy into the page cache; left alone, the kernel
//! keeps every written page until memory runs short and writes dirty pages
//! back in bursts (its background ratio, or a 30 s expiry). Everything a
//! partition ever wrote then competes with the rest of the machine (and, in a
//! container, with the broker's own memory limit), and the cache must keep
//! growing into pages never used before, which on ballooned VMs costs a host
//! fault per page (docs/benchmarks-history.md, session 6: ~0.5 GB/s
//! against 5 GB/s into recycled pages).
//!
//! Here every segment hands each completed chunk of [`CHUNK_BYTES`] to one
//! worker thread per broker, which keeps the chunks in write order,
//! broker-wide, and advises each twice with `POSIX_FADV_DONTNEED`:
//! - once three quarters of the budget was written after it: on dirty
//!   pages the advice starts their writeback and drops nothing (clean pages
//!   the kernel already wrote back go at once);
//! - once the whole budget was written after it: by then written back, its
//!   pages are dropped, and the next appends reuse them.
//!
//! Chunks are never advised sooner: an fsync (acks=all, `flush.*`) cleans
//! pages, and advice on a just-written clean chunk would drop the very data
//! tail consumers and followers are about to read.
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
    /// Bytes advised once (writeback started), three quarters of the
    /// budget behind the newest.
    pub written_back: AtomicU64,
    /// Bytes advised again (dropped) once the budget behind the newest.
    pub dropped: AtomicU64,
    /// Bytes left to the kernel because the queue was full.
    pub skipped: AtomicU64,
}

#[derive(Clone)]
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
    let mut window = Window::new(budget);
    while let Ok(chunk) = rx.recv() {
        let (write_back, drop) = window.push(chunk);
        for c in write_back {
            if advise(&c) {
                stats.written_back.fetch_add(c.len, Ordering::Relaxed);
            }
        }
        for c in drop {
            if advise(&c) {
                stats.dropped.fetch_add(c.len, Ordering::Relaxed);
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

/// The chunks still cached, oldest first, each with how many bytes had
/// been reported when it was (its end in the broker's write order).
struct Window {
    budget: u64,
    /// Bytes reported so far.
    total: u64,
    chunks: VecDeque<(u64, Chunk)>,
    /// How many chunks at the front were already advised once.
    started: usize,
}

impl Window {
    fn new(budget: u64) -> Self {
        Self {
            budget,
            total: 0,
            chunks: VecDeque::new(),
            started: 0,
        }
    }

    /// Adds the newest chunk; returns the chunks whose writeback is now due
    /// and those now to be dropped (oldest first, each listed once in each,
    /// a chunk's writeback never after its drop).
    fn push(&mut self, chunk: Chunk) -> (Vec<Chunk>, Vec<Chunk>) {
        self.total += chunk.len;
        self.chunks.push_back((self.total, chunk));
        let behind = |end: u64, total: u64| total - end;
        let mut write_back = Vec::new();
        while let Some((end, c)) = self.chunks.get(self.started) {
            if behind(*end, self.total) < self.budget / 4 * 3 {
                break;
            }
            write_back.push(c.clone());
            self.started += 1;
        }
        let mut drop = Vec::new();
        while let Some((end, _)) = self.chunks.front() {
            if behind(*end, self.total) < self.budget {
                break;
            }
            if let Some((_, c)) = self.chunks.pop_front() {
                drop.push(c);
            }
            self.started = self.started.saturating_sub(1);
        }
        (write_back, drop)
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
    fn chunks_are_written_back_at_three_quarters_of_the_budget_and_dropped_at_it() {
        let offsets = |v: Vec<Chunk>| v.iter().map(|c| c.offset).collect::<Vec<_>>();
        let mut w = Window::new(100);
        let steps: Vec<_> = (0..6)
            .map(|i| {
                let (wb, drop) = w.push(chunk(i * 40, 40));
                (offsets(wb), offsets(drop))
            })
            .collect();
        let e: Vec<u64> = Vec::new();
        assert_eq!(
            steps,
            [
                (e.clone(), e.clone()), // chunk 0 has 0 bytes after it
                (e.clone(), e.clone()), // 40
                (vec![0], e.clone()),   // 80: chunk 0 past 75, written back
                (vec![40], vec![0]),    // 120: chunk 0 past 100, dropped
                (vec![80], vec![40]),
                (vec![120], vec![80]),
            ]
        );
        assert_eq!((w.chunks.len(), w.started), (3, 1));
        // One large chunk makes both steps due at once, in order.
        let mut w = Window::new(100);
        assert_eq!(w.push(chunk(0, 10)).0.len(), 0);
        let (wb, drop) = w.push(chunk(10, 200));
        assert_eq!((offsets(wb), offsets(drop)), (vec![0], vec![0]));
        assert_eq!((w.chunks.len(), w.started), (1, 0));
    }
}
