//! Cold objects read from the object store, through a cache of what was
//! read.
//!
//! [`ColdCache`] holds, under one byte budget, whole objects (a file the
//! broker just offloaded, or read whole) and the byte ranges the Parquet
//! reader range-read of the others (the footer, and the column chunks of
//! the row groups read). [`StoreObject`] is what the async Parquet reader
//! reads an object through: each range it asks for comes from the cache
//! or, all the missing ones of one request together, from the store, and
//! goes into the cache. So a cold file read again — by another consumer,
//! or the same one starting over — costs no request to the store, whether
//! or not this broker wrote it.
//!
//! Invariant: an object is never changed once written (its key names one
//! upload: offsets and leader epoch), so nothing cached goes stale; what is
//! kept of a deleted object is dropped with it ([`ColdCache::forget`]).

use crate::ahead::{Ahead, FetchFn};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes read from an object's end first for its footer: the footer of a
/// segment file of a few hundred row groups fits, so one request does.
const FOOTER_HINT: usize = 64 << 10;

#[derive(Clone, Hash, PartialEq, Eq)]
enum Key {
    Object(Arc<str>),
    Range(Arc<str>, u64, u64),
}

impl Key {
    fn object(&self) -> &str {
        match self {
            Key::Object(k) | Key::Range(k, _, _) => k,
        }
    }
}

/// Bytes served by a [`ColdCache`], bytes it had to read from the store
/// and the reads that took (one `get_ranges` call each: an object store
/// request per range, or per run of nearby ranges it joins), and bytes of
/// those that readers got from a read-ahead (fetched while they decoded
/// the row group before).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hit_bytes: AtomicU64,
    pub miss_bytes: AtomicU64,
    pub store_reads: AtomicU64,
    pub ahead_bytes: AtomicU64,
}

/// Whole cold objects and ranges of them, bounded by bytes (least
/// recently and least frequently used go first); cheap to clone (the
/// clones share it).
#[derive(Clone)]
pub struct ColdCache {
    entries: moka::sync::Cache<Key, Bytes>,
    stats: Arc<CacheStats>,
}

impl ColdCache {
    /// A cache of at most `max_bytes` bytes.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .weigher(|_k: &Key, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(max_bytes)
                .support_invalidation_closures()
                .build(),
            stats: Arc::default(),
        }
    }

    /// Object `key` whole, if cached.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.entries.get(&Key::Object(key.into()))
    }

    /// Whether object `key` is cached whole.
    pub fn has_object(&self, key: &str) -> bool {
        self.entries.contains_key(&Key::Object(key.into()))
    }

    /// Keeps object `key` whole.
    pub fn insert_object(&self, key: &str, bytes: Bytes) {
        self.entries.insert(Key::Object(key.into()), bytes);
    }

    /// Drops everything kept of object `key` (it is being deleted).
    pub fn forget(&self, key: &str) {
        self.entries.invalidate(&Key::Object(key.into()));
        let key: Arc<str> = key.into();
        // Only fails if closures were not enabled when the cache was built
        // (they are); the ranges would then age out like any other entry.
        let _ = self
            .entries
            .invalidate_entries_if(move |k, _| k.object() == &*key);
    }

    /// What the cache served and what it read from the store so far.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Range `r` of object `key`: kept as read, or a slice of the object
    /// kept whole (so a reader that range-reads an object the cache holds
    /// whole, such as a timestamp lookup, reads nothing from the store).
    fn range(&self, key: &Arc<str>, r: &Range<u64>) -> Option<Bytes> {
        let got = self
            .entries
            .get(&Key::Range(key.clone(), r.start, r.end))
            .or_else(|| {
                let whole = self.entries.get(&Key::Object(key.clone()))?;
                let (start, end) = (usize::try_from(r.start).ok()?, usize::try_from(r.end).ok()?);
                (start <= end && end <= whole.len()).then(|| whole.slice(start..end))
            });
        if let Some(b) = &got {
            self.stats
                .hit_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        got
    }

    /// Keeps range `r` of object `key` (`size` bytes), read from the store;
    /// as the whole object if it is all of it (the footer read of a file
    /// smaller than `FOOTER_HINT`), so the reader's later ranges are
    /// slices of it rather than store reads.
    fn insert_read(&self, key: &Arc<str>, size: u64, r: &Range<u64>, bytes: Bytes) {
        self.stats
            .miss_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let k = if r.start == 0 && r.end == size {
            Key::Object(key.clone())
        } else {
            Key::Range(key.clone(), r.start, r.end)
        };
        self.entries.insert(k, bytes);
    }
}

/// An object in the store, as the async Parquet reader reads it: ranges
/// through a [`ColdCache`] if it has one.
#[derive(Clone)]
pub struct StoreObject {
    store: Arc<dyn ObjectStore>,
    path: Path,
    key: Arc<str>,
    size: u64,
    cache: Option<ColdCache>,
    /// Fetches row groups ahead of a ranged cursor (see `ahead`).
    ahead: Option<Arc<Ahead>>,
}

impl StoreObject {
    /// Object `key` of `size` bytes in `store`, read without a cache.
    pub fn new(store: Arc<dyn ObjectStore>, key: &str, size: u64) -> Self {
        Self {
            store,
            path: Path::from(key),
            key: key.into(),
            size,
            cache: None,
            ahead: None,
        }
    }

    /// The same, with its ranges read through `cache`.
    pub fn cached(mut self, cache: ColdCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The same, fetching row groups ahead of its reader once the plan
    /// returned is given the ranges the reader will ask for.
    pub(crate) fn with_read_ahead(mut self) -> (Self, Arc<Ahead>) {
        let plain = StoreObject {
            ahead: None,
            ..self.clone()
        };
        let fetch: FetchFn = Box::new(move |ranges| {
            let o = plain.clone();
            async move { o.fetch_through_cache(ranges).await.ok() }.boxed()
        });
        let ahead = Arc::new(Ahead::new(fetch));
        self.ahead = Some(ahead.clone());
        (self, ahead)
    }

    /// `ranges` of the object, in order: from the read-ahead if it fetched
    /// them, else [`Self::fetch_through_cache`].
    async fn fetch(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>, ParquetError> {
        if let Some(ahead) = &self.ahead {
            if let Some(got) = ahead.take(&ranges).await {
                if let Some(c) = &self.cache {
                    let n: usize = got.iter().map(Bytes::len).sum();
                    c.stats.ahead_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                return Ok(got);
            }
        }
        self.fetch_through_cache(ranges).await
    }

    /// `ranges` of the object, in order: those cached from the cache, the
    /// others from the store in one call (which joins nearby ranges into
    /// fewer requests).
    async fn fetch_through_cache(
        &self,
        ranges: Vec<Range<u64>>,
    ) -> Result<Vec<Bytes>, ParquetError> {
        let mut got: Vec<Option<Bytes>> = match &self.cache {
            Some(c) => ranges.iter().map(|r| c.range(&self.key, r)).collect(),
            None => vec![None; ranges.len()],
        };
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        if !missing.is_empty() {
            if let Some(c) = &self.cache {
                c.stats.store_reads.fetch_add(1, Ordering::Relaxed);
            }
            let mut read = self
                .store
                .get_ranges(&self.path, &missing)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?
                .into_iter();
            for (r, slot) in ranges.iter().zip(got.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let Some(bytes) = read.next() else { break };
                if let Some(c) = &self.cache {
                    c.insert_read(&self.key, self.size, r, bytes.clone());
                }
                *slot = Some(bytes);
            }
        }
        got.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
            ParquetError::General(format!(
                "the store returned fewer ranges of {} than asked for",
                self.key
            ))
        })
    }
}

impl AsyncFileReader for StoreObject {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let key = self.key.clone();
            self.fetch(vec![range]).await?.pop().ok_or_else(|| {
                ParquetError::General(format!("the store returned no range of {key}"))
            })
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.fetch(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            crate::read::check_chunks(&metadata, size).map_err(ParquetError::General)?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{all_records, file_of, store_with};
    use crate::{read_batches, read_batches_ranged, ReadOptions};
    use kafka_protocol::records::Compression;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    /// A file of 400 records in row groups of 100, stored as `k.parquet`.
    async fn stored() -> (Bytes, Arc<InMemory>) {
        let file = file_of(10, 40, 40, Compression::None, 100).bytes;
        let store = store_with("k.parquet", &file).await;
        (file, store)
    }

    #[tokio::test]
    async fn a_file_smaller_than_the_footer_read_is_read_from_the_store_once() {
        let (file, store) = stored().await;
        assert!(file.len() < FOOTER_HINT, "{} bytes", file.len());
        let cache = ColdCache::new(64 << 20);
        let object = StoreObject::new(store, "k.parquet", file.len() as u64).cached(cache.clone());
        let opts = ReadOptions::default();
        let got = read_batches_ranged(object, &opts, 1).await.unwrap();
        assert_eq!(all_records(&got).len(), 400);
        let stats = cache.stats();
        // The footer read took the whole file; the row groups came from it.
        assert_eq!(stats.store_reads.load(Ordering::Relaxed), 1);
        assert_eq!(stats.miss_bytes.load(Ordering::Relaxed), file.len() as u64);
        assert!(cache.has_object("k.parquet"));
    }

    #[tokio::test]
    async fn a_ranged_read_again_comes_from_the_cache_and_forget_drops_it() {
        let (file, store) = stored().await;
        let cache = ColdCache::new(64 << 20);
        let object =
            StoreObject::new(store.clone(), "k.parquet", file.len() as u64).cached(cache.clone());
        let opts = ReadOptions {
            from_offset: 150,
            ..ReadOptions::default()
        };
        let want = all_records(&read_batches(&file, &opts, 1).unwrap());
        assert_eq!(want.first().map(|r| r.offset), Some(150));

        let first = read_batches_ranged(object.clone(), &opts, 1).await.unwrap();
        assert_eq!(all_records(&first), want);
        let read = cache.stats().miss_bytes.load(Ordering::Relaxed);
        assert!(read > 0, "the first read went to the store");

        // Gone from the store, still readable: nothing comes from it.
        store.delete(&Path::from("k.parquet")).await.unwrap();
        let again = read_batches_ranged(object.clone(), &opts, 1).await.unwrap();
        assert_eq!(all_records(&again), want);
        assert_eq!(cache.stats().miss_bytes.load(Ordering::Relaxed), read);
        assert!(cache.stats().hit_bytes.load(Ordering::Relaxed) >= read);

        // Forgotten: the next read needs the store, where it is gone.
        cache.forget("k.parquet");
        assert!(read_batches_ranged(object, &opts, 1).await.is_err());
    }

    #[tokio::test]
    async fn without_a_cache_every_read_goes_to_the_store() {
        let (file, store) = stored().await;
        let object = StoreObject::new(store.clone(), "k.parquet", file.len() as u64);
        let opts = ReadOptions::default();
        let got = read_batches_ranged(object.clone(), &opts, 1).await.unwrap();
        assert_eq!(
            all_records(&got),
            all_records(&read_batches(&file, &opts, 1).unwrap())
        );
        store.delete(&Path::from("k.parquet")).await.unwrap();
        assert!(read_batches_ranged(object, &opts, 1).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ranged_cursor_gets_row_groups_fetched_ahead_of_it() {
        let (file, store) = stored().await;
        let cache = ColdCache::new(64 << 20);
        let object = StoreObject::new(store, "k.parquet", file.len() as u64).cached(cache.clone());
        for from in [0, 150] {
            let mut c = crate::ColdCursor::open_ranged(object.clone(), from, 1)
                .await
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..100 {
                let b = c.read(2_000, 1000).await.unwrap();
                if b.is_empty() {
                    break;
                }
                got.extend(all_records(&b));
            }
            let opts = ReadOptions {
                from_offset: from,
                max_bytes: 1 << 30,
                ..ReadOptions::default()
            };
            assert_eq!(got, all_records(&read_batches(&file, &opts, 1).unwrap()));
        }
        // Four row groups from 0, three from 150: each after a read's
        // first came from the read-ahead (which reads through the cache).
        assert!(cache.stats().ahead_bytes.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn whole_objects_are_kept_and_forgotten() {
        let cache = ColdCache::new(1 << 20);
        assert!(cache.object("a").is_none() && !cache.has_object("a"));
        cache.insert_object("a", Bytes::from_static(b"file"));
        assert_eq!(cache.object("a").as_deref(), Some(&b"file"[..]));
        assert!(cache.has_object("a"));
        cache.forget("a");
        assert!(cache.object("a").is_none() && !cache.has_object("a"));
    }
}
