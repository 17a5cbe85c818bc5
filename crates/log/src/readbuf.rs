//! Read buffers kept between reads.
//!
//! A fetch reads up to a partition's `max_bytes` (1 MiB by default in Kafka
//! clients) into a buffer that lives until the response is written. A fresh
//! buffer of that size costs more than the read itself: the allocator maps
//! new pages for it (a page fault and a page clear for each 4 KiB), safe
//! Rust zeroes it before the read may fill it, and freeing it unmaps the
//! pages again. Profiled during librdkafka's group consume, that was about a
//! third of the broker's CPU, against a sixth for the copy out of the page
//! cache (docs/benchmarks-history.md, session 14; docs/decisions/0008).
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

/// Idle buffers; the process has one ([`POOL`]), tests their own.
pub(crate) struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
}

/// The pool every log read uses.
pub(crate) static POOL: Pool = Pool::new();

impl Pool {
    pub(crate) const fn new() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A poisoned lock only means another thread panicked while pushing
        // or popping; the Vec inside is still valid.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of at least `len` initialised bytes: a kept one if there is
    /// one, else a new (zeroed) one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let kept = if (KEEP_MIN..=KEEP_MAX).contains(&len) {
            self.idle().pop()
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

    /// `buf[..len]` as [`Bytes`] that return `buf` to this pool when dropped.
    pub(crate) fn freeze(&'static self, buf: Vec<u8>, len: usize) -> Bytes {
        if len == 0 {
            self.give_back(buf);
            return Bytes::new();
        }
        Bytes::from_owner(ReadBuf {
            len: len.min(buf.len()),
            buf,
            pool: self,
        })
    }

    /// Keeps `buf` for a later read if there is room and it is of a size
    /// worth keeping; frees it otherwise.
    pub(crate) fn give_back(&self, buf: Vec<u8>) {
        if !(KEEP_MIN..=KEEP_MAX).contains(&buf.capacity()) || buf.len() < KEEP_MIN {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < KEEP {
            idle.push(buf);
        }
    }
}

/// Owns a pooled buffer while [`Bytes`] point into it.
struct ReadBuf {
    buf: Vec<u8>,
    len: usize,
    pool: &'static Pool,
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test has a pool of its own: the process's is shared with every
    // log test running in parallel.

    #[test]
    fn a_buffer_comes_back_to_the_next_read_without_being_zeroed() {
        static P: Pool = Pool::new();
        let mut a = P.take(KEEP_MIN);
        assert_eq!(a.len(), KEEP_MIN);
        let at = a.as_ptr();
        a[..5].copy_from_slice(b"hello");
        a[KEEP_MIN - 1] = 7;
        let bytes = P.freeze(a, 5);
        assert_eq!(&bytes[..], b"hello");
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(P.idle().len(), 0, "a slice keeps the buffer out");
        assert_eq!(&clone[..], b"el");
        drop(clone);
        assert_eq!(P.idle().len(), 1);
        let b = P.take(KEEP_MIN);
        assert_eq!(b.as_ptr(), at, "the same buffer");
        assert_eq!(
            (&b[..5], b[KEEP_MIN - 1]),
            (&b"hello"[..], 7),
            "not zeroed again"
        );
        // A larger read grows a kept buffer: only the new part is zeroed.
        P.give_back(b);
        let c = P.take(KEEP_MIN + KEEP_MIN / 2);
        assert_eq!((&c[..5], c[KEEP_MIN - 1]), (&b"hello"[..], 7));
        assert!(c[KEEP_MIN..].iter().all(|&x| x == 0));
    }

    #[test]
    fn the_pool_keeps_at_most_keep_buffers_of_kept_sizes() {
        static P: Pool = Pool::new();
        let out: Vec<Bytes> = (0..KEEP * 3)
            .map(|_| P.freeze(P.take(KEEP_MIN), 10))
            .collect();
        drop(out);
        assert_eq!(P.idle().len(), KEEP);
        for _ in 0..KEEP {
            drop(P.take(KEEP_MIN));
        }
        assert_eq!(P.idle().len(), 0, "a buffer taken and dropped is freed");

        drop(P.freeze(P.take(KEEP_MAX + 1), KEEP_MAX + 1));
        assert_eq!(P.idle().len(), 0, "an oversized buffer is not kept");
        let small = P.take(100);
        assert_eq!(small.len(), 100, "a small read gets an exact buffer");
        drop(P.freeze(small, 3));
        assert_eq!(P.idle().len(), 0, "nor is a small one");
        assert!(P.freeze(P.take(KEEP_MIN), 0).is_empty());
        assert_eq!(P.idle().len(), 1, "an empty read gives its buffer back");
    }
}
