//! Cold-tier readers kept between fetches.
//!
//! A consumer reading the cold tier asks, fetch after fetch, for the offset
//! right after the last one it got. Reopening the segment file for each
//! fetch costs more than the fetch decodes (footer, one decompressor per
//! column, the row group decoded again from its start), so the reader
//! ([`ColdCursor`]) is kept under (object key, next offset) and the next
//! fetch at exactly that offset takes it, often with that fetch's data
//! already read ahead ([`Kept::Reading`]), so decoding the next chunk
//! overlaps sending this one.
//!
//! Invariants: a cursor is in the map or in use by one read, never both
//! (taken out, put back); at most [`MAX_CURSORS`] are kept, the least
//! recently put dropped first (a dropped read-ahead finishes and is freed).
//! A kept cursor holds its Arrow batch, its read-ahead (at most
//! `READ_AHEAD_MAX` bytes) and, for a file from the cache, the file's
//! bytes, so the bound is what bounds the memory this takes.

use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Mutex;
use strata_cold::{ColdCursor, ColdError};
use tokio::task::JoinHandle;

/// A read's outcome with the cursor handed back.
pub(crate) type ReadDone = (ColdCursor, Result<Vec<BytesMut>, ColdError>);

/// A kept reader: idle, or reading the chunk its next fetch will want.
pub(crate) enum Kept {
    Idle(ColdCursor),
    Reading {
        read: JoinHandle<ReadDone>,
        /// The fetch size it reads ahead with; a fetch asking for less
        /// cannot take the result.
        max_bytes: usize,
    },
}

/// One read of `c`, off the calling task: on a blocking thread for a file
/// in memory (CPU only), as a task for a ranged reader (waits on the store).
pub(crate) fn spawn_read(
    mut c: ColdCursor,
    max_bytes: usize,
    batch_records: usize,
) -> JoinHandle<ReadDone> {
    if c.in_memory() {
        tokio::task::spawn_blocking(move || {
            let r = c.read_blocking(max_bytes, batch_records);
            (c, r)
        })
    } else {
        tokio::spawn(async move {
            let r = c.read(max_bytes, batch_records).await;
            (c, r)
        })
    }
}

/// Readers kept at most (about one per consumer reading the cold tier).
pub(crate) const MAX_CURSORS: usize = 16;

#[derive(Default)]
pub(crate) struct Cursors {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (object key, next offset) → (reader, when it was put back).
    map: HashMap<(String, i64), (Kept, u64)>,
    clock: u64,
}

impl Cursors {
    /// The reader of `key` positioned at `offset`, if one is kept.
    pub(crate) fn take(&self, key: &str, offset: i64) -> Option<Kept> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.remove(&(key.to_string(), offset)).map(|(c, _)| c)
    }

    /// Keeps a reader of `key` for the fetch of offset `at`.
    pub(crate) fn put(&self, key: &str, at: i64, kept: Kept) {
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

    fn cursor(from: i64) -> Kept {
        // Any Parquet file will do: these tests only move readers around.
        let seg = strata_record::sample_batch(3, 10, 0).freeze();
        let file = strata_cold::write_segment(&seg, &strata_cold::WriteOptions::new("t", 0, 1))
            .unwrap()
            .bytes;
        Kept::Idle(ColdCursor::open(file, from, 1).unwrap())
    }

    fn at(k: Kept) -> Option<i64> {
        match k {
            Kept::Idle(c) => Some(c.next_offset()),
            Kept::Reading { .. } => None,
        }
    }

    #[test]
    fn a_reader_is_taken_once_at_its_offset_and_the_oldest_goes_first() {
        let c = Cursors::default();
        c.put("a", 1, cursor(1));
        assert!(c.take("a", 2).is_none(), "wrong offset");
        assert!(c.take("b", 1).is_none(), "wrong key");
        assert_eq!(c.take("a", 1).and_then(at), Some(1));
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
    async fn a_read_ahead_hands_back_the_cursor_and_the_next_chunk() {
        let Kept::Idle(c) = cursor(0) else {
            unreachable!()
        };
        let (c, r) = spawn_read(c, 1, 1000).await.unwrap();
        assert!(!r.unwrap().is_empty());
        assert_eq!(c.next_offset(), 3, "past the three records");
    }
}
