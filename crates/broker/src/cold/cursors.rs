//! Cold-tier readers kept between fetches.
//!
//! A consumer reading the cold tier asks, fetch after fetch, for the offset
//! right after the last one it got. Reopening the segment file for each
//! fetch costs more than the fetch decodes (footer, one decompressor per
//! column, the row group decoded again from its start), so the reader
//! ([`ColdCursor`]) is kept under (object key, next offset) and the next
//! fetch at exactly that offset takes it.
//!
//! Invariants: a cursor is in the map or in use by one fetch, never both
//! (taken out, put back); at most [`MAX_CURSORS`] are kept, the least
//! recently put dropped first. A kept cursor holds its Arrow batch and, for
//! a file from the cache, the file's bytes, so the bound is what bounds the
//! memory this takes.

use std::collections::HashMap;
use std::sync::Mutex;
use strata_cold::ColdCursor;

/// Readers kept at most (about one per consumer reading the cold tier).
pub(crate) const MAX_CURSORS: usize = 16;

#[derive(Default)]
pub(crate) struct Cursors {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (object key, next offset) → (cursor, when it was put back).
    map: HashMap<(String, i64), (ColdCursor, u64)>,
    clock: u64,
}

impl Cursors {
    /// The cursor of `key` positioned at `offset`, if one is kept.
    pub(crate) fn take(&self, key: &str, offset: i64) -> Option<ColdCursor> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.remove(&(key.to_string(), offset)).map(|(c, _)| c)
    }

    /// Keeps `cursor` for the fetch of its next offset.
    pub(crate) fn put(&self, key: &str, cursor: ColdCursor) {
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
        g.map
            .insert((key.to_string(), cursor.next_offset()), (cursor, now));
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

    fn cursor(from: i64) -> ColdCursor {
        // Any Parquet file will do: these tests only move cursors around.
        let seg = strata_record::sample_batch(3, 10, 0).freeze();
        let file = strata_cold::write_segment(&seg, &strata_cold::WriteOptions::new("t", 0, 1))
            .unwrap()
            .bytes;
        ColdCursor::open(file, from, 1).unwrap()
    }

    #[test]
    fn a_cursor_is_taken_once_at_its_next_offset_and_the_oldest_goes_first() {
        let c = Cursors::default();
        c.put("a", cursor(1));
        assert!(c.take("a", 2).is_none(), "wrong offset");
        assert!(c.take("b", 1).is_none(), "wrong key");
        assert_eq!(c.take("a", 1).map(|c| c.next_offset()), Some(1));
        assert!(c.take("a", 1).is_none(), "taken twice");
        for i in 0..MAX_CURSORS as i64 + 3 {
            c.put("k", cursor(i));
        }
        assert_eq!(c.len(), MAX_CURSORS);
        assert!(c.take("k", 0).is_none(), "the oldest were dropped");
        assert!(c.take("k", MAX_CURSORS as i64 + 2).is_some());
        c.forget("k");
        assert_eq!(c.len(), 0);
    }
}
