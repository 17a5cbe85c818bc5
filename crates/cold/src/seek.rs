//! Seeking a segment file by timestamp (ListOffsets with a timestamp).
//!
//! Timestamps need not grow with offsets (producers set create times), but
//! a row group whose largest timestamp is `>= ts` holds a record at or
//! after `ts`, and none before it does. So the first such row group, by
//! its statistics, holds the answer: a lookup reads the footer and that
//! one row group's offset and timestamp columns, never the whole file
//! (only a row group without statistics is read to find out).

use crate::read::{row_groups_reaching, OFFSET_COLUMN, TIMESTAMP_COLUMN};
use crate::{ColdError, StoreObject};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::RecordBatch;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;

/// The first record (in offset order) with a timestamp `>= ts`,
/// `(offset, timestamp)`, range-reading `object`: its footer, then the
/// offset and timestamp columns of the row groups whose statistics say
/// they can hold it, one at a time until it is found (each through the
/// object's cache, if it has one: a file cached whole is read in memory).
/// A file without those columns where the segment schema has them is a
/// schema error.
pub async fn offset_for_timestamp_ranged(
    object: StoreObject,
    ts: i64,
) -> Result<Option<(i64, i64)>, ColdError> {
    let builder = ParquetRecordBatchStreamBuilder::new(object).await?;
    let leaves = builder.parquet_schema().columns();
    let named = |i: usize, name: &str| leaves.get(i).is_some_and(|c| c.path().string() == name);
    if !(named(OFFSET_COLUMN, "offset") && named(TIMESTAMP_COLUMN, "timestamp")) {
        return Err(ColdError::Schema(
            "no offset and timestamp columns where the segment schema has them".into(),
        ));
    }
    let groups = row_groups_reaching(builder.metadata(), TIMESTAMP_COLUMN, ts);
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [OFFSET_COLUMN, TIMESTAMP_COLUMN]);
    let mut stream = builder
        .with_row_groups(groups)
        .with_projection(mask)
        .build()?;
    loop {
        let rb = match crate::cursor::next_guarded_async(&mut stream).await {
            Ok(Some(rb)) => rb?,
            Ok(None) => break,
            Err(crate::cursor::Panicked) => return Err(crate::cursor::decoder_panicked()),
        };
        if let Some(found) = first_at_or_after(&rb, ts)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The first row of `rb` (offset, timestamp columns) with a timestamp
/// `>= ts`.
fn first_at_or_after(rb: &RecordBatch, ts: i64) -> Result<Option<(i64, i64)>, ColdError> {
    let bad = || ColdError::Schema("no offset and timestamp columns of the right types".into());
    let offsets = rb
        .columns()
        .first()
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(bad)?
        .values();
    let times = rb
        .columns()
        .get(1)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(bad)?
        .values();
    Ok(times
        .iter()
        .zip(offsets.iter())
        .find(|(&t, _)| t >= ts)
        .map(|(&t, &o)| (o, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{all_records, kafka_batch_at, segment_of, store_with};
    use crate::{read_batches, write_segment, ColdCache, ReadOptions, WriteOptions};
    use bytes::Bytes;
    use kafka_protocol::records::{Compression, TimestampType};
    use std::sync::atomic::Ordering;

    const T0: i64 = 1_700_000_000_000;

    /// A file of 40 row groups of 250 records of ~200 B, each group's
    /// timestamps a second after the group before, except group 7's,
    /// which go back to the first group's (producers set create times).
    fn file() -> Bytes {
        let batches: Vec<Bytes> = (0..40)
            .map(|g| {
                let ts0 = if g == 7 { T0 + 100 } else { T0 + g * 1000 };
                kafka_batch_at(
                    g * 250,
                    250,
                    Compression::None,
                    TimestampType::Creation,
                    ts0,
                    200,
                )
            })
            .collect();
        let mut opts = WriteOptions::new("t", 0, 1);
        opts.row_group_rows = 250;
        write_segment(&segment_of(&batches), &opts).unwrap().bytes
    }

    /// The answer by brute force: every record read back.
    fn expected(file: &Bytes, ts: i64) -> Option<(i64, i64)> {
        all_records(&read_batches(file, &ReadOptions::default(), 1).unwrap())
            .into_iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| (r.offset, r.timestamp))
    }

    #[tokio::test]
    async fn a_lookup_reads_the_footer_and_one_row_group_and_finds_what_a_scan_finds() {
        let file = file();
        assert!(file.len() > 1 << 20, "{} bytes", file.len());
        let store = store_with("k.parquet", &file).await;
        for ts in [
            0,
            T0,
            T0 + 99,
            T0 + 150,
            T0 + 5017,
            T0 + 6999,
            T0 + 39_249,
            T0 + 39_250,
        ] {
            let cache = ColdCache::new(64 << 20);
            let object = StoreObject::new(store.clone(), "k.parquet", file.len() as u64)
                .cached(cache.clone());
            let got = offset_for_timestamp_ranged(object, ts).await.unwrap();
            assert_eq!(got, expected(&file, ts), "ts {ts}");
            // The 64 KiB footer read, and one row group's offsets and
            // timestamps (none if no group has the timestamp): not the
            // ~1 MiB of values, nor the row groups before.
            let stats = cache.stats();
            let read = stats.miss_bytes.load(Ordering::Relaxed);
            assert!(
                read < 128 << 10,
                "ts {ts}: {read} bytes read of {}",
                file.len()
            );
            let requests = stats.store_reads.load(Ordering::Relaxed);
            assert_eq!(requests, if got.is_some() { 2 } else { 1 }, "ts {ts}");
        }
    }

    #[tokio::test]
    async fn a_file_of_another_schema_is_an_error_not_a_panic() {
        use arrow_array::{Int32Array, RecordBatch};
        use std::sync::Arc;
        let rb = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int32Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        let file = Bytes::from(buf);
        let store = store_with("x.parquet", &file).await;
        let object = StoreObject::new(store, "x.parquet", file.len() as u64);
        assert!(offset_for_timestamp_ranged(object, 0).await.is_err());
    }

    #[tokio::test]
    async fn a_lookup_in_an_object_cached_whole_reads_nothing_from_the_store() {
        let file = file();
        let store = store_with("k.parquet", &file).await;
        let cache = ColdCache::new(64 << 20);
        cache.insert_object("k.parquet", file.clone());
        // Deleted from the store: only the cache can answer.
        object_store::ObjectStoreExt::delete(&*store, &"k.parquet".into())
            .await
            .unwrap();
        let object = StoreObject::new(store, "k.parquet", file.len() as u64).cached(cache.clone());
        let got = offset_for_timestamp_ranged(object, T0 + 5017)
            .await
            .unwrap();
        assert_eq!(got, Some((5 * 250 + 17, T0 + 5017)));
        assert_eq!(cache.stats().miss_bytes.load(Ordering::Relaxed), 0);
    }
}
