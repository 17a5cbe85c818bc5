//! Cold-tier readers kept between fetches.
//!
//! A consumer reading the cold tier asks, fetch after fetch, for the offset
//! right after the last one it got. Reopening the segment file for each
//! fetch costs more than the fetch decodes (footer, one decompressor per
//! compressed column, the row group decoded again from its start), so the
//! reader ([`ColdCursor`]) is kept under (object key, next offset) and the
//! next fetch at exactly that offset takes it. The reader runs ahead of its
//! consumer ([`ReadAhead`]): threads of its own decode the following chunks
//! (of the fetch size, at most [`READ_AHEAD_MAX`] bytes; a larger fetch
//! takes several), up to [`READ_AHEAD_CHUNKS`] of them, while earlier ones
//! are sent, so decoding (the bottleneck of a cold read) does not wait on
//! the consumer's round trips; one thread decodes Parquet pages, the other
//! rebuilds record batches from them. When a read-ahead has read its whole
//! file, the fetch path starts one for the next file (`prefetch` in
//! `read`).
//!
//! Invariants: a reader is in the map or in use by one fetch, never both
//! (taken out, put back); at most [`MAX_CURSORS`] are kept, the least
//! recently put dropped first (a dropped read-ahead's threads stop at their
//! next chunk). Memory: each kept reader holds up to three Arrow batches
//! (≤ 8192 rows each, and within one row group: ≤ 4 MiB of keys and
//! values), at most [`READ_AHEAD_CHUNKS`] chunks of at most
//! [`READ_AHEAD_MAX`] bytes (up to `MAX_WAITING_CHUNKS` + 1 for fetches
//! larger than a chunk), and, for a file from the cache, the file's bytes
//! (counted in the cache), or for a ranged file up to 8 MiB of row groups
//! its store reads fetched ahead (`strata_cold`'s read-ahead; one row
//! group if larger): about 5 MiB at 1 MiB fetches of 100-byte records,
//! 17 MiB at most (25 MiB ranged); two threads while it reads ahead.

use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use strata_cold::{ColdCursor, ColdError, Decoder};
use tokio::sync::mpsc;

/// The largest chunk a reader reads ahead (Kafka consumers ask for 1 MiB
/// per partition by default; larger fetches take several chunks).
#[cfg(not(test))]
pub(crate) const READ_AHEAD_MAX: usize = 1 << 20;
/// Small in tests, whose cold files are tens of kilobytes, so fetches
/// larger than a chunk are exercised.
#[cfg(test)]
pub(crate) const READ_AHEAD_MAX: usize = 4 << 10;
/// Chunks a reader decodes ahead of a consumer fetching a chunk at a time:
/// one waiting, one being decoded. (Deeper made no measurable difference.)
pub(crate) const READ_AHEAD_CHUNKS: usize = 2;
/// Chunks waiting at most for a consumer of larger fetches: a fetch of up
/// to this many chunks finds them all decoded while the one before it was
/// sent (more would only hold memory).
const MAX_WAITING_CHUNKS: usize = 4;

/// The chunk size a read-ahead reads for fetches of `max_bytes`: the fetch
/// size, or `READ_AHEAD_MAX` for larger fetches (which take several
/// chunks).
pub(crate) fn chunk_size(max_bytes: usize) -> usize {
    max_bytes.min(READ_AHEAD_MAX)
}

/// One chunk read ahead: the rebuilt batches, the fetch size they were
/// read for, where the next chunk starts, and whether the reader stopped
/// after it (end of file or an error).
pub(crate) struct Chunk {
    pub(crate) batches: Result<Vec<BytesMut>, ColdError>,
    pub(crate) max_bytes: usize,
    pub(crate) next_offset: i64,
    pub(crate) last: bool,
}

/// A reader decoding chunks ahead of its consumer on threads of its own.
pub(crate) struct ReadAhead {
    chunks: mpsc::Receiver<Chunk>,
    /// The size of the consumer's last fetch: the size of the next chunk
    /// the thread starts.
    want: Arc<AtomicUsize>,
    /// Set once the thread has read the file's last chunk.
    finished: Arc<AtomicBool>,
    /// Whether [`Self::finished_now`] has said so already.
    told: bool,
}

/// Opens the cursor a read-ahead reads (on its thread).
pub(crate) type Opener = Box<dyn FnOnce() -> Result<ColdCursor, ColdError> + Send>;

impl ReadAhead {
    /// Starts reading `cursor` ahead for fetches of `max_bytes`, in chunks
    /// of [`chunk_size`] (then of the size [`Self::next`] was last asked
    /// for).
    pub(crate) fn start(cursor: ColdCursor, max_bytes: usize, batch_records: usize) -> Self {
        Self::open(Box::new(move || Ok(cursor)), max_bytes, batch_records)
    }

    /// Like [`Self::start`], on the cursor `open` returns (called on the
    /// read-ahead's thread; an error is passed on as the only chunk).
    ///
    /// The cursor is split ([`ColdCursor::split`]): one thread decodes
    /// Parquet pages (for a ranged file, waiting on the store through the
    /// runtime), another rebuilds record batches from them, so one
    /// consumer's cold read uses two cores. Both are threads of their own,
    /// not tasks hopping onto the blocking pool for every chunk: the hops cost more
    /// than a third of the throughput. The threads end at the end of the
    /// file, on an error (passed on as the last chunk), or once this is
    /// dropped (at the next chunk).
    pub(crate) fn open(open: Opener, max_bytes: usize, batch_records: usize) -> Self {
        // Chunks wait in the channel (one, or as many as a larger fetch
        // takes, up to `MAX_WAITING_CHUNKS`) while the thread rebuilds the
        // next and then waits to send it.
        let waiting = max_bytes
            .div_ceil(READ_AHEAD_MAX)
            .clamp(READ_AHEAD_CHUNKS - 1, MAX_WAITING_CHUNKS);
        let (tx, chunks) = mpsc::channel(waiting);
        let max_bytes = chunk_size(max_bytes);
        let want = Arc::new(AtomicUsize::new(max_bytes));
        let finished = Arc::new(AtomicBool::new(false));
        let (size, done) = (want.clone(), finished.clone());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let rebuild = move || {
            let mut c = match open() {
                Ok(c) => c,
                Err(e) => {
                    done.store(true, Ordering::Relaxed);
                    let _ = tx.blocking_send(Chunk {
                        batches: Err(e),
                        max_bytes,
                        next_offset: -1,
                        last: true,
                    });
                    return;
                }
            };
            if let Some(d) = c.split() {
                start_decoder(d, runtime);
            }
            loop {
                let max_bytes = size.load(Ordering::Relaxed);
                let batches = c.read_blocking(max_bytes, batch_records);
                let last = batches.is_err() || c.is_exhausted();
                if last {
                    done.store(true, Ordering::Relaxed);
                }
                let chunk = Chunk {
                    batches,
                    max_bytes,
                    next_offset: c.next_offset(),
                    last,
                };
                if tx.blocking_send(chunk).is_err() || last {
                    return;
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("strata-cold-read".into())
            .spawn(rebuild)
        {
            // The channel closes: the next fetch reads afresh.
            tracing::warn!(error = %e, "cannot start a cold read-ahead thread");
        }
        Self {
            chunks,
            want,
            finished,
            told: false,
        }
    }

    /// The next chunk, for a fetch of `max_bytes` (which later chunks are
    /// read for); None if the reader stopped without one. A chunk read for
    /// a larger fetch is the caller's to refuse.
    pub(crate) async fn next(&mut self, max_bytes: usize) -> Option<Chunk> {
        self.want.store(max_bytes, Ordering::Relaxed);
        self.chunks.recv().await
    }

    /// True once, when the reader has read its file's last chunk (the
    /// consumer will soon want the next file).
    pub(crate) fn finished_now(&mut self) -> bool {
        if self.told || !self.finished.load(Ordering::Relaxed) {
            return false;
        }
        self.told = true;
        true
    }
}

/// Runs a split cursor's decoder until the end of its file, an error, or
/// the cursor is dropped, on a thread of its own: decoding a file in
/// memory, or a ranged one, whose reads of the store `runtime` drives
/// (`Handle::block_on`) while the decoding stays on this thread — not on
/// the async workers, where each Arrow batch decoded (0.1–0.4 ms) would
/// hold up every other connection's requests on that worker.
fn start_decoder(d: Decoder, runtime: Option<tokio::runtime::Handle>) {
    let run = move || match runtime {
        Some(rt) if !d.in_memory() => rt.block_on(d.run()),
        // Without a runtime a ranged decoder passes on its error at once.
        _ => d.run_blocking(),
    };
    if let Err(e) = std::thread::Builder::new()
        .name("strata-cold-decode".into())
        .spawn(run)
    {
        // The cursor's next read fails; the fetch reads afresh.
        tracing::warn!(error = %e, "cannot start a cold decoder thread");
    }
}

/// Readers kept at most (about one per consumer reading the cold tier).
pub(crate) const MAX_CURSORS: usize = 8;

#[derive(Default)]
pub(crate) struct Cursors {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (object key, next offset) → (reader, when it was put back).
    map: HashMap<(String, i64), (ReadAhead, u64)>,
    clock: u64,
}

impl Cursors {
    /// The reader of `key` positioned at `offset`, if one is kept.
    pub(crate) fn take(&self, key: &str, offset: i64) -> Option<ReadAhead> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.remove(&(key.to_string(), offset)).map(|(c, _)| c)
    }

    /// Keeps a reader of `key` for the fetch of offset `at`.
    pub(crate) fn put(&self, key: &str, at: i64, kept: ReadAhead) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.clock += 1;
        let now = g.clock;
        if g.map.len() >= MAX_CURSORS {
            let oldest = g
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                g.map.remove(&k);
            }
        }
        g.map.insert((key.to_string(), at), (kept, now));
    }

    /// Whether a reader of `key` is kept for the fetch of offset `at`.
    pub(crate) fn contains(&self, key: &str, at: i64) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.contains_key(&(key.to_string(), at))
    }

    /// Drops every cursor of `key` (its object is being deleted).
    pub(crate) fn forget(&self, key: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.retain(|(k, _), _| k != key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> bytes::Bytes {
        // Any Parquet file will do: these tests only move readers around.
        let seg = strata_record::sample_batch(3, 10, 0).freeze();
        strata_cold::write_segment(&seg, &strata_cold::WriteOptions::new("t", 0, 1))
            .unwrap()
            .bytes
    }

    fn cursor(from: i64) -> ReadAhead {
        ReadAhead::start(ColdCursor::open(file(), from, 1).unwrap(), 1, 1)
    }

    #[test]
    fn a_reader_is_taken_once_at_its_offset_and_the_oldest_goes_first() {
        let c = Cursors::default();
        c.put("a", 1, cursor(1));
        assert!(c.take("a", 2).is_none(), "wrong offset");
        assert!(c.take("b", 1).is_none(), "wrong key");
        assert!(c.take("a", 1).is_some());
        assert!(c.take("a", 1).is_none(), "taken twice");
        for i in 0..MAX_CURSORS as i64 + 3 {
            c.put("k", i, cursor(i));
        }
        assert_eq!(c.len(), MAX_CURSORS);
        assert!(c.take("k", 0).is_none(), "the oldest were dropped");
        assert!(c.take("k", MAX_CURSORS as i64 + 2).is_some());
        c.forget("k");
        assert_eq!(c.len(), 0);
    }

    #[tokio::test]
    async fn a_read_ahead_reads_chunk_after_chunk_to_the_end() {
        // Three records, one rebuilt batch per chunk at most 1 record each.
        let mut ahead = cursor(0);
        let mut offsets = Vec::new();
        for _ in 0..10 {
            let Some(chunk) = ahead.next(1).await else {
                break;
            };
            let batches = chunk.batches.unwrap();
            offsets.push((batches.len(), chunk.next_offset));
            if chunk.last {
                break;
            }
        }
        assert_eq!(offsets, vec![(1, 1), (1, 2), (1, 3)]);
        assert!(
            ahead.next(1).await.is_none(),
            "the reader stopped at the end"
        );
    }
}
