//! Read buffers kept between reads.
//!
//! A fetch reads up to a partition's `max_bytes` (1 MiB by default in Kafka
//! clients) into a buffer that lives until the response is written. A fresh
//! buffer of that size costs more than the read itself: the allocator maps
//! new pages for it (a page fault and a page clear for each 4 KiB), safe
//! Rust zeroes it before the read may fill it, and freeing it unmaps the
//! pages again. Profiled during librdkafka's group consume, that was about a
//! third of the broker's CPU, against a sixth for the copy out of the page
//! cache (docs/benchmarks.md, session 14; docs/decisions/0008).
//!
//! So a read takes a buffer from a small process-wide pool, and the
//! [`Bytes`] it returns gives the buffer back when its last clone is
//! dropped (`Bytes::from_owner`). A kept buffer stays initialised (its
//! `Vec` length never shrinks), so reading into it again needs no zeroing.
//!
//! Reads under [`KEEP_MIN`] (a tail consumer's few records) allocate
//! their own exact buffer: small allocations come from the allocator's
//! heap without fresh pages, and a kept megabyte should not sit behind a
//! response of a few hundred bytes to a slow client.
//!
//! Invariants: at most [`KEEP`] buffers are idle at once, each of
//! [`KEEP_MIN`]..=[`KEEP_MAX`] bytes (others are freed when dropped), so
//! idle buffers hold at most `KEEP * KEEP_MAX` bytes; a buffer is in the
//! pool or owned by exactly one [`ReadBuf`], never both.

use bytes::Bytes;
use std::sync::Mutex;

/// How many idle buffers the pool keeps: one per partition of a typical
/// multi-partition fetch in flight, and no more.
pub(crate) const KEEP: usize = 4;
/// Reads smaller than this neither take nor give back a kept buffer.
pub(crate) const KEEP_MIN: usize = 64 << 10;
/// Buffers above this capacity are not kept (a fetch with an unusually
/// large `max_bytes`, or a single oversized batch).
pub(crate) const KEEP_MAX: usize = 2 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of at least `len` initialised bytes: a kept one if there is
/// one, else a new (zeroed) one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let kept = if (KEEP_MIN..=KEEP_MAX).contains(&len) {
        // A poisoned lock only means another thread panicked while pushing
        // or popping; the Vec inside is still valid.
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.pop()
    } else {
        None
    };
    let mut buf = kept.unwrap_or_default();
    if buf.len() < len {
        // Zeroes only the part never initialised before.
        buf.resize(len, 0);
    }
    buf
}

/// `buf[..len]` as [`Bytes`] that return `buf` to the pool when dropped.
pub(crate) fn freeze(buf: Vec<u8>, len: usize) -> Bytes {
    if len == 0 {
        give_back(buf);
        return Bytes::new();
    }
    Bytes::from_owner(ReadBuf {
        len: len.min(buf.len()),
        buf,
    })
}

/// Keeps `buf` for a later read if the pool has room and it is of a size
/// worth keeping; frees it otherwise.
pub(crate) fn give_back(buf: Vec<u8>) {
    if !(KEEP_MIN..=KEEP_MAX).contains(&buf.capacity()) || buf.len() < KEEP_MIN {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < KEEP {
        pool.push(buf);
    }
}

/// Owns a pooled buffer while [`Bytes`] point into it.
struct ReadBuf {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

/// How many buffers are idle in the pool (tests).
#[cfg(test)]
pub(crate) fn idle() -> usize {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is process-wide: these tests and the log's other tests take
    // and return buffers concurrently, so counts are only checked as bounds.
    #[test]
    fn buffers_come_back_initialised_and_the_pool_stays_bounded() {
        let mut a = take(KEEP_MIN);
        assert!(a.len() >= KEEP_MIN);
        a[..5].copy_from_slice(b"hello");
        let bytes = freeze(a, 5);
        assert_eq!(&bytes[..], b"hello");
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&clone[..], b"el", "a slice keeps the buffer alive");
        drop(clone);
        assert!(idle() <= KEEP);

        // Many buffers out at once: only KEEP come back.
        let out: Vec<Bytes> = (0..KEEP * 3).map(|_| freeze(take(KEEP_MIN), 10)).collect();
        drop(out);
        assert!(idle() <= KEEP);

        // An oversized buffer is never kept.
        let big = freeze(take(KEEP_MAX + 1), KEEP_MAX + 1);
        assert_eq!(big.len(), KEEP_MAX + 1);
        drop(big);
        let pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(pool
            .iter()
            .all(|b| (KEEP_MIN..=KEEP_MAX).contains(&b.capacity()) && b.len() >= KEEP_MIN));
        assert!(pool.len() <= KEEP);
    }

    #[test]
    fn an_empty_read_is_empty_bytes_and_a_small_one_its_own_buffer() {
        let b = freeze(take(KEEP_MIN), 0);
        assert!(b.is_empty());
        let small = take(100);
        assert_eq!(small.len(), 100, "a small read gets an exact buffer");
        let b = freeze(small, 3);
        assert_eq!(b.len(), 3);
    }
}
