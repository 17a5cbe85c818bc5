use super::*;
use crate::tests::{all_records, kafka_batch, segment_of, store_with};
use crate::{read_batches, write_segment, WriteOptions};
use kafka_protocol::records::{Compression, TimestampType as KTs};
use object_store::memory::InMemory;
use std::sync::Arc;

/// 20 batches of 37 records with a gap of 3 offsets between batches, in
/// row groups of 100 rows (so reads stop inside Arrow batches and row
/// groups, and ranged reads get one Arrow batch per row group).
fn file() -> Bytes {
    let batches: Vec<Bytes> = (0..20)
        .map(|i| kafka_batch(i * 40, 37, Compression::None, KTs::Creation))
        .collect();
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.row_group_rows = 100;
    write_segment(&segment_of(&batches), &opts).unwrap().bytes
}

/// Records per rebuilt batch: small, so reads stop every few batches.
const BATCH_RECORDS: usize = 10;

/// [`file`], and a store holding it as `k.parquet`.
async fn stored() -> (Bytes, Arc<InMemory>) {
    let file = file();
    let store = store_with("k.parquet", &file).await;
    (file, store)
}

/// Reads `cursor` to its end, checking each read against a fresh read from
/// the same offset; returns every record's offset.
async fn drain(mut cursor: ColdCursor, file: &Bytes, max_bytes: usize) -> Vec<i64> {
    let mut offsets = Vec::new();
    for _ in 0..10_000 {
        let from = cursor.next_offset();
        let got = all_records(&cursor.read(max_bytes, BATCH_RECORDS).await.unwrap());
        if got.is_empty() {
            assert!(cursor.is_exhausted());
            return offsets;
        }
        let fresh = ReadOptions {
            from_offset: from,
            max_bytes,
            batch_records: BATCH_RECORDS,
        };
        let want = all_records(&read_batches(file, &fresh, 1).unwrap());
        let span = |v: &[strata_record::DecodedRecord]| {
            (
                v.len(),
                v.first().map(|r| r.offset),
                v.last().map(|r| r.offset),
            )
        };
        assert_eq!(
            span(&got),
            span(&want),
            "read from {from} with {max_bytes} bytes"
        );
        assert!(
            got == want,
            "read from {from} with {max_bytes} bytes differs"
        );
        assert_eq!(cursor.next_offset(), got[got.len() - 1].offset + 1);
        offsets.extend(got.iter().map(|r| r.offset));
    }
    panic!("cursor did not end");
}

#[tokio::test]
async fn continued_reads_equal_fresh_reads_in_memory_and_ranged() {
    let (file, store) = stored().await;
    let size = file.len() as u64;
    let whole = |from: i64| {
        let o = ReadOptions {
            from_offset: from,
            ..ReadOptions::default()
        };
        all_records(&read_batches(&file, &o, 1).unwrap())
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>()
    };
    // From the start, from inside a batch, and from inside a gap.
    for from in [0, 371, 38] {
        for max_bytes in [200, 700, 5000, 1 << 20] {
            // (1 MiB takes everything in one read; 200 bytes a few records.)
            let mem = ColdCursor::open(file.clone(), from, 1).unwrap();
            assert!(mem.in_memory());
            assert_eq!(drain(mem, &file, max_bytes).await, whole(from));
            let ranged = ColdCursor::open_ranged(
                StoreObject::new(store.clone(), "k.parquet", size),
                from,
                1,
            )
            .await
            .unwrap();
            assert!(!ranged.in_memory());
            assert_eq!(drain(ranged, &file, max_bytes).await, whole(from));
        }
    }
}

#[tokio::test]
async fn a_ranged_cursor_is_not_read_blocking() {
    let (file, store) = stored().await;
    let mut c = ColdCursor::open_ranged(
        StoreObject::new(store, "k.parquet", file.len() as u64),
        0,
        1,
    )
    .await
    .unwrap();
    assert!(c.read_blocking(1000, 1000).is_err());
    // The in-memory one is.
    let mut m = ColdCursor::open(file, 0, 1).unwrap();
    assert_eq!(all_records(&m.read_blocking(1, 1000).unwrap())[0].offset, 0);
}
#[test]
fn a_small_read_gets_about_what_it_asked_for() {
    // One producer's records run on across all 20 batches, but a read of
    // 700 bytes stops after about that much (at least one record).
    let file = file();
    let mut c = ColdCursor::open(file.clone(), 0, 1).unwrap();
    let got = c.read_blocking(700, 1000).unwrap();
    let bytes: usize = got.iter().map(|b| b.len()).sum();
    let n = all_records(&got).len();
    assert!((1..40).contains(&n), "{n} records");
    assert!(bytes < 2 * 700 + 61, "{bytes} bytes");
    assert_eq!(all_records(&c.read_blocking(1, 1000).unwrap()).len(), 1);
}

/// Runs `d` to its end on a task of its own (a blocking thread for a file
/// in memory).
fn run(d: Decoder) -> tokio::task::JoinHandle<()> {
    if d.in_memory() {
        tokio::task::spawn_blocking(move || d.run_blocking())
    } else {
        tokio::spawn(d.run())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_cursor_reads_what_it_would_have_read_itself() {
    let (file, store) = stored().await;
    let size = file.len() as u64;
    for from in [0, 371, 38] {
        for max_bytes in [200, 5000] {
            let alone = drain(
                ColdCursor::open(file.clone(), from, 1).unwrap(),
                &file,
                max_bytes,
            )
            .await;
            // Split before the first read, and after one (the partly read
            // Arrow batch stays with the cursor).
            for reads_before in [0, 1] {
                let mut mem = ColdCursor::open(file.clone(), from, 1).unwrap();
                let mut ranged = ColdCursor::open_ranged(
                    StoreObject::new(store.clone(), "k.parquet", size),
                    from,
                    1,
                )
                .await
                .unwrap();
                let mut head = Vec::new();
                for _ in 0..reads_before {
                    head = all_records(&mem.read(max_bytes, BATCH_RECORDS).await.unwrap());
                    ranged.read(max_bytes, BATCH_RECORDS).await.unwrap();
                }
                let head: Vec<i64> = head.iter().map(|r| r.offset).collect();
                for mut c in [mem, ranged] {
                    let d = c.split().expect("a direct cursor splits");
                    assert!(c.split().is_none(), "a split cursor does not split again");
                    assert!(c.in_memory(), "reads of a split cursor wait on no I/O");
                    let task = run(d);
                    let mut got = head.clone();
                    got.extend(drain(c, &file, max_bytes).await);
                    assert_eq!(
                        got, alone,
                        "from {from}, {max_bytes} bytes, split after {reads_before}"
                    );
                    task.await.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn a_split_cursor_whose_decoder_stops_early_fails_instead_of_ending() {
    let mut c = ColdCursor::open(file(), 0, 1).unwrap();
    let mut d = c.split().unwrap();
    let step = d.decode_blocking();
    assert!(d.pass(step).await, "one batch passed on");
    drop(d);
    let mut got = 0;
    let err = loop {
        // Small reads: the first ones are served from the batch passed on.
        match c.read(200, BATCH_RECORDS).await {
            Ok(b) if b.is_empty() => panic!("ended quietly after {got} batches"),
            Ok(b) => got += b.len(),
            Err(e) => break e,
        }
    };
    assert!(got > 0, "the batch passed on was read");
    assert!(!c.is_exhausted());
    assert!(err.to_string().contains("decoder stopped"), "{err}");
}

#[test]
fn a_decoded_file_rebuilds_every_row_in_fetches() {
    let d = DecodedFile::decode(file()).unwrap();
    assert_eq!(d.rows(), 20 * 37);
    // 20 batches of 37 records with gaps: the last record is at 19 * 40 + 36.
    let (batches, next) = d.rebuild(200, BATCH_RECORDS).unwrap();
    assert_eq!(next, 19 * 40 + 37);
    // Runs of at most 10 records, and fetches of ~200 bytes end them sooner.
    assert!(batches >= 20 * 37 / BATCH_RECORDS, "{batches}");
    let (whole, _) = d.rebuild(usize::MAX, usize::MAX).unwrap();
    assert_eq!(whole, 1, "one producer, sequences in step with the offsets");
}
