use crate::*;
use arrow_schema::{DataType, TimeUnit};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTs,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use proptest::prelude::*;
use strata_record::{decode_batch, encode_batch, BatchIter, DecodedRecord, TimestampType};

mod corrupt;

pub(crate) fn all_records(batches: &[BytesMut]) -> Vec<DecodedRecord> {
    let mut out = Vec::new();
    for b in batches {
        let b = b.clone().freeze();
        for (pos, h) in BatchIter::verifying(&b) {
            out.extend(
                decode_batch(&b.slice(pos..pos + h.total_size()))
                    .unwrap()
                    .records,
            );
        }
    }
    out
}

pub(crate) fn kafka_batch(base: i64, n: i64, c: Compression, ts_type: KTs) -> Bytes {
    kafka_batch_at(base, n, c, ts_type, 1_700_000_000_000, 0)
}

/// [`kafka_batch`] with timestamps from `ts0` and `pad` more bytes of
/// value (values of mostly distinct bytes, so compression keeps them).
pub(crate) fn kafka_batch_at(
    base: i64,
    n: i64,
    c: Compression,
    ts_type: KTs,
    ts0: i64,
    pad: usize,
) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("trace"),
                Some(Bytes::from(format!("t{i}"))),
            );
            headers.insert(StrBytes::from_static_str("empty"), None);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 4,
                producer_id: 9,
                producer_epoch: 1,
                timestamp_type: ts_type,
                offset: base + i,
                sequence: (base + i) as i32,
                timestamp: ts0 + i,
                key: (i % 3 != 0).then(|| Bytes::from(format!("k{i}"))),
                value: (i % 5 != 0).then(|| {
                    let mut v = format!("value-{i}").into_bytes();
                    let mut x = (base + i) as u64 | 1;
                    v.extend((0..pad).map(|_| {
                        // xorshift: cheap bytes zstd cannot shrink.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    }));
                    Bytes::from(v)
                }),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .unwrap();
    buf.freeze()
}

/// An in-memory object store holding `file` as `key`.
pub(crate) async fn store_with(
    key: &str,
    file: &Bytes,
) -> std::sync::Arc<object_store::memory::InMemory> {
    use object_store::ObjectStoreExt;
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    store
        .put(&object_store::path::Path::from(key), file.clone().into())
        .await
        .unwrap();
    store
}

/// A segment file of `count` batches of `per_batch` records, batch `i` at
/// offset `i * stride`, compressed with `c`, in row groups of at most
/// `row_group_rows` rows.
pub(crate) fn file_of(
    count: i64,
    stride: i64,
    per_batch: i64,
    c: Compression,
    row_group_rows: usize,
) -> SegmentFile {
    let batches: Vec<Bytes> = (0..count)
        .map(|i| kafka_batch(i * stride, per_batch, c, KTs::Creation))
        .collect();
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.row_group_rows = row_group_rows;
    write_segment(&segment_of(&batches), &opts).unwrap()
}

pub(crate) fn segment_of(batches: &[Bytes]) -> Bytes {
    let mut s = BytesMut::new();
    for b in batches {
        s.extend_from_slice(b);
    }
    s.freeze()
}

fn strip_epoch(mut v: Vec<DecodedRecord>) -> Vec<DecodedRecord> {
    for r in &mut v {
        r.leader_epoch = 0;
    }
    v
}

#[test]
fn schema_matches_design_exactly() {
    let s = segment_schema();
    let cols: Vec<(&str, DataType, bool)> = s
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(cols[0], ("partition", DataType::Int32, false));
    assert_eq!(cols[1], ("offset", DataType::Int64, false));
    assert_eq!(
        cols[2],
        (
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false
        )
    );
    assert_eq!(cols[3], ("timestamp_type", DataType::Int8, false));
    assert_eq!(cols[4], ("key", DataType::Binary, true));
    assert_eq!(cols[5], ("value", DataType::Binary, true));
    let DataType::List(item) = &cols[6].1 else {
        panic!("headers is a list")
    };
    let DataType::Struct(fields) = item.data_type() else {
        panic!("of structs")
    };
    let hf: Vec<(&str, DataType, bool)> = fields
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        hf,
        vec![
            ("key", DataType::Utf8, false),
            ("value", DataType::Binary, true)
        ]
    );
    assert_eq!(cols[6].0, "headers");
    assert_eq!(cols[7], ("producer_id", DataType::Int64, false));
    assert_eq!(cols[8], ("producer_epoch", DataType::Int16, false));
    assert_eq!(cols[9], ("sequence", DataType::Int32, false));
    assert_eq!(cols.len(), 10);
}

#[test]
fn object_keys_follow_the_design() {
    assert_eq!(
        object_key("lake/", "orders", 3, 100, 199, 7),
        "lake/topics/orders/partition=3/00000000000000000100-00000000000000000199-e7.parquet"
    );
    assert_eq!(
        object_key("", "t", 0, 0, 0, 1),
        "topics/t/partition=0/00000000000000000000-00000000000000000000-e1.parquet"
    );
}

#[test]
fn round_trip_all_codecs_both_timestamp_types() {
    let mut batches = Vec::new();
    let mut base = 0;
    for (i, c) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let ts = if i % 2 == 0 {
            KTs::Creation
        } else {
            KTs::LogAppend
        };
        batches.push(kafka_batch(base, 20, c, ts));
        base += 20;
    }
    let seg = segment_of(&batches);
    let expected: Vec<DecodedRecord> = batches
        .iter()
        .flat_map(|b| decode_batch(b).unwrap().records)
        .collect();
    let file = write_segment(&seg, &WriteOptions::new("t", 2, 4)).unwrap();
    assert_eq!(
        (file.base_offset, file.last_offset, file.record_count),
        (0, 99, 100)
    );
    let back = read_batches(&file.bytes, &ReadOptions::default(), 4).unwrap();
    assert_eq!(strip_epoch(all_records(&back)), strip_epoch(expected));
    assert!(all_records(&back).iter().all(|r| r.leader_epoch == 4));
}

#[test]
fn repeated_and_non_ascii_headers_nulls_and_offset_gaps_survive() {
    let rec = |offset: i64,
               headers: Vec<(&str, Option<&str>)>,
               key: Option<&str>,
               value: Option<&str>| DecodedRecord {
        offset,
        timestamp: 1000 + offset,
        timestamp_type: TimestampType::CreateTime,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| Bytes::from(v.to_string()))))
            .collect(),
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        leader_epoch: 0,
    };
    let records = vec![
        rec(
            5,
            vec![
                ("a", Some("1")),
                ("a", Some("2")),
                ("n", None),
                // Keys are any UTF-8, byte for byte.
                ("ключ-🔑", Some("é")),
            ],
            None,
            Some("x"),
        ),
        rec(6, vec![], Some("k"), None),
        rec(9, vec![], None, None),
    ];
    let seg = encode_batch(&records).freeze();
    let file = write_segment(&seg, &WriteOptions::new("t", 0, 1)).unwrap();
    let back = read_batches(&file.bytes, &ReadOptions::default(), 0).unwrap();
    assert_eq!(all_records(&back), records);
}

#[test]
fn reading_from_an_offset_skips_earlier_rows_and_row_groups() {
    let file = file_of(10, 100, 100, Compression::None, 100);
    let reader = SerializedFileReader::new(file.bytes.clone()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 10);
    let back = read_batches(
        &file.bytes,
        &ReadOptions {
            from_offset: 750,
            ..ReadOptions::default()
        },
        1,
    )
    .unwrap();
    let recs = all_records(&back);
    assert_eq!(recs.first().unwrap().offset, 750);
    assert_eq!(recs.last().unwrap().offset, 999);
    // max_bytes bounds the answer but always gives at least one batch.
    let one = read_batches(
        &file.bytes,
        &ReadOptions {
            from_offset: 0,
            max_bytes: 1,
            batch_records: 10,
        },
        1,
    )
    .unwrap();
    assert_eq!(one.len(), 1);
}

#[test]
fn row_groups_are_bounded_by_bytes_as_well_as_rows() {
    let batches: Vec<Bytes> = (0..10)
        .map(|i| kafka_batch(i * 100, 100, Compression::None, KTs::Creation))
        .collect();
    let seg = segment_of(&batches);
    let rows_only = write_segment(&seg, &WriteOptions::new("t", 0, 1)).unwrap();
    let reader = SerializedFileReader::new(rows_only.bytes.clone()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 1);
    let mut opts = WriteOptions::new("t", 0, 1);
    // A tenth of all key and value bytes per group: about ten groups.
    let back = read_batches(&rows_only.bytes, &ReadOptions::default(), 1).unwrap();
    let total: usize = all_records(&back)
        .iter()
        .map(|r| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    opts.row_group_bytes = total / 10;
    let file = write_segment(&seg, &opts).unwrap();
    let reader = SerializedFileReader::new(file.bytes.clone()).unwrap();
    let groups = reader.metadata().num_row_groups();
    assert!((10..=11).contains(&groups), "{groups} row groups");
    let back = read_batches(&file.bytes, &ReadOptions::default(), 1).unwrap();
    assert_eq!(all_records(&back).len(), 1000);
}

#[test]
fn file_metadata_describes_the_segment() {
    let file = write_segment(
        &kafka_batch(40, 10, Compression::Zstd, KTs::Creation),
        &WriteOptions::new("orders", 3, 4),
    )
    .unwrap();
    let reader = SerializedFileReader::new(file.bytes.clone()).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let get = |k: &str| {
        kv.iter()
            .find(|e| e.key == k)
            .and_then(|e| e.value.clone())
            .unwrap()
    };
    assert_eq!(get("strata.format.version"), FORMAT_VERSION);
    assert_eq!(get("strata.topic"), "orders");
    assert_eq!(get("strata.partition"), "3");
    assert_eq!(get("strata.base_offset"), "40");
    assert_eq!(get("strata.last_offset"), "49");
    assert_eq!(get("strata.record_count"), "10");
    assert_eq!(get("strata.min_timestamp"), "1700000000000");
    assert_eq!(get("strata.max_timestamp"), "1700000000009");
    assert_eq!(get("strata.leader_epoch"), "4");
    // Statistics and the page index are written for engines to prune with.
    let rg = reader.metadata().row_group(0);
    assert!(rg.column(1).statistics().is_some());
    assert!(
        rg.column(1).column_index_offset().is_some(),
        "page index written"
    );
    assert!(rg.column(2).statistics().is_some(), "timestamps");
    assert!(rg.column(4).statistics().is_some(), "keys");
    // Values' min and max prune nothing and cost a comparison per value.
    assert_eq!(rg.column(5).column_path().string(), "value");
    assert!(rg.column(5).statistics().is_none());
}

#[test]
fn record_columns_are_zstd_and_the_others_plain_or_delta() {
    use parquet::basic::{Compression as PqCompression, Encoding};
    let file = write_segment(
        &kafka_batch(0, 50, Compression::None, KTs::Creation),
        &WriteOptions::new("t", 0, 1),
    )
    .unwrap();
    let reader = SerializedFileReader::new(file.bytes.clone()).unwrap();
    let rg = reader.metadata().row_group(0);
    let zstd: Vec<String> = rg
        .columns()
        .iter()
        .filter(|c| matches!(c.compression(), PqCompression::ZSTD(_)))
        .map(|c| c.column_path().string())
        .collect();
    assert_eq!(
        zstd,
        [
            "key",
            "value",
            "headers.list.item.key",
            "headers.list.item.value"
        ]
    );
    let encodings = |i: usize| rg.column(i).encodings().collect::<Vec<_>>();
    for (i, name) in [(1, "offset"), (2, "timestamp")] {
        assert_eq!(rg.column(i).column_path().string(), name);
        assert!(
            encodings(i).contains(&Encoding::DELTA_BINARY_PACKED),
            "{name}"
        );
        assert!(!encodings(i).contains(&Encoding::RLE_DICTIONARY), "{name}");
    }
    assert!(!encodings(5).contains(&Encoding::RLE_DICTIONARY), "value");
    assert!(encodings(4).contains(&Encoding::RLE_DICTIONARY), "key");
}

#[test]
fn control_batches_are_not_written() {
    let mut control = encode_batch(&[DecodedRecord {
        offset: 10,
        timestamp: 1,
        timestamp_type: TimestampType::CreateTime,
        key: Some(Bytes::from_static(&[0, 0, 0, 0])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: vec![],
        producer_id: 5,
        producer_epoch: 0,
        sequence: -1,
        leader_epoch: 0,
    }]);
    // Set the control bit and fix the CRC.
    control[22] |= 0x20;
    let crc = strata_record::compute_crc(&control);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let data = kafka_batch(0, 10, Compression::None, KTs::Creation);
    let seg = segment_of(&[data, control.freeze()]);
    let file = write_segment(&seg, &WriteOptions::new("t", 0, 1)).unwrap();
    assert_eq!(file.record_count, 10);
    // The file covers the marker's offset too (a gap in the rows).
    assert_eq!(file.last_offset, 10);
    assert_eq!(decoded_offsets(&file), (0..10).collect::<Vec<_>>());
    let only_control = segment_of(&[]);
    assert!(matches!(
        write_segment(&only_control, &WriteOptions::new("t", 0, 1)),
        Err(ColdError::Empty)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_segments_round_trip(
        sizes in proptest::collection::vec(1i64..30, 1..8),
        codecs in proptest::collection::vec(0usize..5, 8),
        rows_per_group in 1usize..50,
    ) {
        let all = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
        let mut base = 0;
        let mut batches = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            batches.push(kafka_batch(base, *n, all[codecs[i]], KTs::Creation));
            base += n;
        }
        let expected: Vec<DecodedRecord> = batches.iter().flat_map(|b| decode_batch(b).unwrap().records).collect();
        let mut opts = WriteOptions::new("t", 1, 2);
        opts.row_group_rows = rows_per_group;
        let file = write_segment(&segment_of(&batches), &opts).unwrap();
        let back = read_batches(&file.bytes, &ReadOptions::default(), 2).unwrap();
        prop_assert_eq!(strip_epoch(all_records(&back)), strip_epoch(expected));
    }
}

#[tokio::test]
async fn finds_the_first_record_at_or_after_a_timestamp() {
    let file = write_segment(
        &kafka_batch(100, 50, Compression::Snappy, KTs::Creation),
        &WriteOptions::new("t", 0, 1),
    )
    .unwrap();
    let store = store_with("k.parquet", &file.bytes).await;
    let lookup = |ts| {
        let object = StoreObject::new(store.clone(), "k.parquet", file.bytes.len() as u64);
        offset_for_timestamp_ranged(object, ts)
    };
    let base = 1_700_000_000_000;
    assert_eq!(lookup(0).await.unwrap(), Some((100, base)));
    assert_eq!(lookup(base + 17).await.unwrap(), Some((117, base + 17)));
    assert_eq!(lookup(base + 50).await.unwrap(), None);
}

#[tokio::test]
async fn ranged_reads_match_in_memory_reads() {
    let file = file_of(10, 100, 100, Compression::Lz4, 100);
    let store = store_with("k.parquet", &file.bytes).await;
    for from in [0, 450, 999] {
        let ro = ReadOptions {
            from_offset: from,
            max_bytes: 20_000,
            ..ReadOptions::default()
        };
        let ranged = read_batches_ranged(
            StoreObject::new(store.clone(), "k.parquet", file.bytes.len() as u64),
            &ro,
            1,
        )
        .await
        .unwrap();
        let whole = read_batches(&file.bytes, &ro, 1).unwrap();
        assert_eq!(all_records(&ranged), all_records(&whole), "from {from}");
        assert_eq!(all_records(&ranged).first().unwrap().offset, from);
    }
}

#[test]
fn records_below_from_offset_are_left_out() {
    // A new leader's segment [0, 30) when an earlier file already covers
    // offsets up to 14: only 15.. are written, so no offset is in two files.
    let seg = segment_of(&[
        kafka_batch(0, 10, Compression::None, KTs::Creation),
        kafka_batch(10, 10, Compression::Lz4, KTs::Creation),
        kafka_batch(20, 10, Compression::None, KTs::Creation),
    ]);
    let mut opts = WriteOptions::new("t", 0, 4);
    opts.from_offset = 15;
    let f = write_segment(&seg, &opts).unwrap();
    assert_eq!((f.base_offset, f.last_offset, f.record_count), (15, 29, 15));
    let back = read_batches(&f.bytes, &ReadOptions::default(), 4).unwrap();
    let offsets: Vec<i64> = all_records(&back).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (15..30).collect::<Vec<_>>());
}

fn decoded_offsets(file: &SegmentFile) -> Vec<i64> {
    read_batches(&file.bytes, &ReadOptions::default(), 0)
        .unwrap()
        .into_iter()
        .flat_map(|b| strata_record::decode_batch(&b.freeze()).unwrap().records)
        .map(|r| r.offset)
        .collect()
}

/// A transactional batch of `n` records of producer `pid` at `base`.
fn txn_batch(pid: i64, base: i64, n: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}").into_bytes()).collect();
    let recs: Vec<strata_record::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(&v[..]))).collect();
    let mut b = strata_record::build_batch_with(
        0,
        1000,
        strata_record::BatchProducer {
            attributes: strata_record::TRANSACTIONAL_BIT,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
        },
        &recs,
    );
    strata_record::assign_offset_and_epoch(&mut b, base, 0);
    b.freeze()
}

fn marker(pid: i64, at: i64, commit: bool) -> Bytes {
    let mut m = strata_record::build_control_batch(
        pid,
        0,
        strata_record::ControlType::from_commit(commit),
        0,
        1000,
    );
    strata_record::assign_offset_and_epoch(&mut m, at, 0);
    m.freeze()
}

#[test]
fn aborted_transactions_and_markers_are_left_out() {
    // Producer 1 aborts offsets 0..3 (marker at 5), producer 2 commits
    // 3..5 (marker at 6); an all-aborted segment still yields a file.
    let seg = segment_of(&[
        txn_batch(1, 0, 3),
        txn_batch(2, 3, 2),
        marker(1, 5, false),
        marker(2, 6, true),
    ]);
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.aborted = vec![AbortedRange {
        producer_id: 1,
        first_offset: 0,
        last_offset: 5,
    }];
    let file = write_segment(&seg, &opts).unwrap();
    assert_eq!(
        (file.base_offset, file.last_offset, file.record_count),
        (0, 6, 2)
    );
    assert_eq!(decoded_offsets(&file), vec![3, 4]);

    let only_aborted = segment_of(&[txn_batch(1, 0, 3), marker(1, 5, false)]);
    let file = write_segment(&only_aborted, &opts).unwrap();
    assert_eq!(
        (file.base_offset, file.last_offset, file.record_count),
        (0, 5, 0)
    );
    assert!(decoded_offsets(&file).is_empty());
}

#[test]
fn converting_a_segment_file_in_chunks_matches_converting_it_whole() {
    // Batches of different sizes, one larger than the chunk, and a torn
    // tail: every chunk size gives the file the in-memory conversion gives.
    let batches: Vec<Bytes> = [(0, 3), (3, 50), (53, 1), (54, 400), (454, 7)]
        .iter()
        .map(|&(base, n)| kafka_batch(base, n, Compression::None, KTs::Creation))
        .collect();
    let seg = segment_of(&batches);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.log");
    let mut torn = seg.to_vec();
    torn.extend_from_slice(&seg[..40]);
    std::fs::write(&path, &torn).unwrap();
    let opts = WriteOptions::new("t", 0, 1);
    let whole = write_segment(&seg, &opts).unwrap();
    let expected = read_batches(&whole.bytes, &ReadOptions::default(), 1).unwrap();
    for chunk in [61, 100, 1000, 4096, 1 << 20] {
        let (s, out) = write_segment_file(&path, &opts, Vec::new(), chunk).unwrap();
        assert_eq!(
            (s.base_offset, s.last_offset, s.record_count),
            (0, 460, 461),
            "chunk {chunk}"
        );
        let back = read_batches(&Bytes::from(out), &ReadOptions::default(), 1).unwrap();
        assert_eq!(all_records(&back), all_records(&expected), "chunk {chunk}");
    }
}

#[test]
fn a_segment_file_with_a_bogus_batch_length_is_an_error_not_an_allocation() {
    let mut seg = kafka_batch(0, 3, Compression::None, KTs::Creation).to_vec();
    // Claim a 2 GiB batch.
    seg[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.log");
    std::fs::write(&path, &seg).unwrap();
    let err = write_segment_file(&path, &WriteOptions::new("t", 0, 1), Vec::new(), 64)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than the file holds"), "{err}");
    let missing = write_segment_file(
        &dir.path().join("nope"),
        &WriteOptions::new("t", 0, 1),
        Vec::new(),
        64,
    );
    assert!(matches!(missing, Err(ColdError::Io(_))));
}

#[tokio::test]
async fn keys_and_headers_are_decoded_only_where_a_row_group_has_some() {
    // Rows 0..100 with headers, 100..300 without; keys in 200..300 only;
    // 100 rows per row group.
    let rec = |offset: i64| DecodedRecord {
        offset,
        timestamp: 1000 + offset,
        timestamp_type: TimestampType::CreateTime,
        key: (offset >= 200).then(|| Bytes::from(format!("k{offset}"))),
        value: Some(Bytes::from(format!("v{offset}"))),
        headers: if offset < 100 {
            vec![("h".to_string(), Some(Bytes::from(format!("{offset}"))))]
        } else {
            Vec::new()
        },
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        leader_epoch: 1,
    };
    let records: Vec<DecodedRecord> = (0..300).map(rec).collect();
    let seg = encode_batch(&records).freeze();
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.row_group_rows = 100;
    let file = write_segment(&seg, &opts).unwrap();

    // What each read decodes: never the partition column, the key and
    // header columns only when a row group read has a key or a header.
    let reader = SerializedFileReader::new(file.bytes.clone()).unwrap();
    let md = reader.metadata();
    let leaf = |path: &str| {
        let schema = md.file_metadata().schema_descr();
        (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == path)
            .unwrap()
    };
    let (partition, header_key) = (leaf("partition"), leaf("headers.list.item.key"));
    let (key, value) = (leaf("key"), leaf("value"));
    let included = |groups: &[usize]| {
        let m = crate::read::read_projection(md, groups, &Default::default());
        [partition, key, value, header_key].map(|c| m.leaf_included(c))
    };
    // [partition, key, value, header key]
    assert_eq!(included(&[0, 1, 2]), [false, true, true, true]);
    assert_eq!(included(&[0]), [false, false, true, true]);
    assert_eq!(included(&[1]), [false, false, true, false]);
    assert_eq!(included(&[1, 2]), [false, true, true, false]);

    // Either way every record comes back as written, in memory and ranged.
    let store = store_with("h.parquet", &file.bytes).await;
    for from in [0usize, 50, 150, 250] {
        let ro = ReadOptions {
            from_offset: from as i64,
            ..ReadOptions::default()
        };
        let whole = read_batches(&file.bytes, &ro, 1).unwrap();
        assert_eq!(all_records(&whole), records[from..], "from {from}");
        let size = file.bytes.len() as u64;
        let ranged =
            read_batches_ranged(StoreObject::new(store.clone(), "h.parquet", size), &ro, 1)
                .await
                .unwrap();
        assert_eq!(all_records(&ranged), records[from..], "ranged from {from}");
    }
}

/// Whether record `b` can follow `a` in one rebuilt batch: the same
/// producer, epoch and timestamp type, and no sequences or sequences in
/// step with the offsets (what Kafka's batch framing allows).
fn same_run(a: &DecodedRecord, b: &DecodedRecord) -> bool {
    let step = (b.offset - a.offset) as i32;
    a.producer_id == b.producer_id
        && a.producer_epoch == b.producer_epoch
        && a.timestamp_type == b.timestamp_type
        // A batch has one log-append time for all its records.
        && (a.timestamp_type == TimestampType::CreateTime || a.timestamp == b.timestamp)
        && (a.sequence < 0) == (b.sequence < 0)
        && (a.sequence < 0 || b.sequence == a.sequence.wrapping_add(step))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Batches of no producer or one of two (in two epochs), with
    /// sequences in step, jumping or absent, both timestamp types, with
    /// and without keys, headers and values, offset gaps between batches:
    /// read back whole, each run of records that can share a batch is one
    /// rebuilt batch (no more, no fewer); read in small fetches, the
    /// records are the same.
    #[test]
    fn rebuilt_batches_follow_producer_runs(
        batches in proptest::collection::vec(
            (0i64..3, 0i16..2, 0u8..3, any::<bool>(), 0u8..4, 1usize..12, 0i64..3),
            1..12,
        ),
        rows_per_group in 1usize..40,
        fetch_bytes in 1usize..3000,
    ) {
        let mut next = 0i64;
        let mut last_seq = std::collections::HashMap::new();
        let mut segment = Vec::new();
        let mut expected = Vec::new();
        for (i, (pid, epoch, seq_mode, log_append, shape, n, gap)) in batches.into_iter().enumerate() {
            next += gap;
            let (pid, epoch) = if pid == 0 { (-1, -1) } else { (pid, epoch) };
            let base_seq = match seq_mode {
                _ if pid < 0 => -1,
                0 => -1,
                // In step with the producer's last batch (offsets between
                // them counted, so a gap breaks the step unless none).
                1 => last_seq.get(&(pid, epoch)).map_or(0, |&(s, o): &(i32, i64)| s + (next - o) as i32),
                _ => 1000 * (i as i32 + 1),
            };
            let recs: Vec<DecodedRecord> = (0..n)
                .map(|k| DecodedRecord {
                    offset: next + k as i64,
                    // Log-append time is one per batch (the broker's clock
                    // at the append), create time one per record.
                    timestamp: if log_append {
                        1_700_000_000_000 + i as i64
                    } else {
                        1_700_000_000_000 + (k as i64 * 7) % 5
                    },
                    timestamp_type: if log_append { TimestampType::LogAppendTime } else { TimestampType::CreateTime },
                    key: (shape & 1 == 1).then(|| Bytes::from(format!("k{k}"))),
                    value: (k % 4 != 3).then(|| Bytes::from(vec![b'a' + (k % 26) as u8; k * 3])),
                    headers: if shape & 2 == 2 {
                        vec![("h".to_string(), Some(Bytes::from(format!("{i}")))), ("n".to_string(), None)]
                    } else {
                        Vec::new()
                    },
                    producer_id: pid,
                    producer_epoch: epoch,
                    sequence: if base_seq < 0 { -1 } else { base_seq + k as i32 },
                    leader_epoch: 0,
                })
                .collect();
            if base_seq >= 0 {
                last_seq.insert((pid, epoch), (base_seq + n as i32 - 1, next + n as i64 - 1));
            }
            next += n as i64;
            segment.push(encode_batch(&recs).freeze());
            expected.extend(recs);
        }
        let mut opts = WriteOptions::new("t", 0, 1);
        opts.row_group_rows = rows_per_group;
        let file = write_segment(&segment_of(&segment), &opts).unwrap().bytes;

        let whole = ReadOptions { batch_records: usize::MAX, ..ReadOptions::default() };
        let back = read_batches(&file, &whole, 1).unwrap();
        let runs = 1 + expected.windows(2).filter(|w| !same_run(&w[0], &w[1])).count();
        prop_assert_eq!(back.len(), runs);
        prop_assert_eq!(strip_epoch(all_records(&back)), expected.clone());

        // A consumer's small fetches, each from the offset after the last.
        let mut got = Vec::new();
        let mut from = 0;
        for _ in 0..expected.len() + 1 {
            let read = ReadOptions { from_offset: from, max_bytes: fetch_bytes, batch_records: 5 };
            let recs = all_records(&read_batches(&file, &read, 1).unwrap());
            let Some(last) = recs.last() else { break };
            from = last.offset + 1;
            got.extend(recs);
        }
        prop_assert_eq!(strip_epoch(got), expected);
    }
}

#[test]
fn reads_from_any_offset_across_offset_gaps_return_every_record_from_there() {
    // Batches of 100 with 50 offsets missing after each; row groups of 64
    // rows, so most groups span a gap and the rows skipped by statistics
    // are a lower bound.
    let file = file_of(8, 150, 100, Compression::None, 64);
    let all = all_records(&read_batches(&file.bytes, &ReadOptions::default(), 1).unwrap());
    assert_eq!(all.len(), 800);
    for from in (0..1_100).step_by(7) {
        let ro = ReadOptions {
            from_offset: from,
            ..ReadOptions::default()
        };
        let got = all_records(&read_batches(&file.bytes, &ro, 1).unwrap());
        let want: Vec<_> = all.iter().filter(|r| r.offset >= from).cloned().collect();
        assert_eq!(got, want, "from {from}");
    }
}

/// Byte range and rows of the first data page of leaf column `path` in
/// row group `group` of `file`, by its offset index.
fn first_page(file: &Bytes, group: usize, path: &str) -> (std::ops::Range<usize>, i64) {
    use parquet::file::metadata::ParquetMetaDataReader;
    let md = ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
        .parse_and_finish(file)
        .unwrap();
    let col = md
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == path)
        .unwrap();
    let pages = md.page_index_for_row_group(group);
    let locs = pages.page_locations(col).unwrap();
    let next_row = locs.get(1).map_or(i64::MAX, |l| l.first_row_index);
    let start = locs[0].offset as usize;
    (
        start..start + locs[0].compressed_page_size as usize,
        next_row - locs[0].first_row_index,
    )
}

#[tokio::test]
async fn a_read_from_the_middle_of_a_row_group_leaves_the_pages_before_it_unread() {
    // One row group of 3000 records of ~1 KiB: its values in several pages.
    let batches: Vec<Bytes> = (0..30)
        .map(|i| {
            crate::tests::kafka_batch_at(i * 100, 100, Compression::None, KTs::Creation, 0, 1000)
        })
        .collect();
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.row_group_rows = 3000;
    opts.row_group_bytes = 64 << 20;
    let file = write_segment(&segment_of(&batches), &opts).unwrap().bytes;
    let good = all_records(&read_batches(&file, &ReadOptions::default(), 1).unwrap());
    // Garble the body of the values' first page (its header kept): a
    // read that decompresses it fails.
    let (page, rows) = first_page(&file, 0, "value");
    let mut bad = file.to_vec();
    for b in &mut bad[page.end - 64..page.end] {
        *b ^= 0x5a;
    }
    let bad = Bytes::from(bad);
    assert!(
        read_batches(&bad, &ReadOptions::default(), 1).is_err(),
        "the first page is read from the start"
    );
    // From past that page's rows (its first 2048): it is skipped, not read.
    assert_eq!(rows, 2048);
    let ro = ReadOptions {
        from_offset: 2_100,
        ..ReadOptions::default()
    };
    let want: Vec<_> = good.iter().filter(|r| r.offset >= 2_100).cloned().collect();
    assert_eq!(all_records(&read_batches(&bad, &ro, 1).unwrap()), want);
    let store = store_with("k.parquet", &bad).await;
    let object = StoreObject::new(store, "k.parquet", bad.len() as u64);
    assert_eq!(
        all_records(&read_batches_ranged(object, &ro, 1).await.unwrap()),
        want
    );
}

/// A read's byte budget counts each rebuilt batch's header as well as its
/// records (8 bytes and the key and value each): a budget that one full
/// batch of 10 uses up gets those 10 records; one byte more and the read
/// opens a second batch, for one record. The same with keys.
#[test]
fn a_reads_byte_budget_counts_batch_headers_and_records() {
    let value = [b'v'; 100];
    for key in [None, Some(&b"key-0000"[..])] {
        let recs: Vec<strata_record::KeyValue<'_>> =
            (0..40).map(|_| (key, Some(&value[..]))).collect();
        let mut batch = strata_record::build_batch(0, 1_700_000_000_000, &recs);
        strata_record::assign_offset_and_epoch(&mut batch, 0, 1);
        let file = write_segment(&batch.freeze(), &WriteOptions::new("t", 0, 1)).unwrap();
        let record = 8 + key.map_or(0, <[u8]>::len) + value.len();
        let full = strata_record::layout::HEADER_SIZE + 10 * record;
        for (max_bytes, want) in [(full - 1, 10), (full, 10), (full + 1, 11)] {
            let ro = ReadOptions {
                max_bytes,
                batch_records: 10,
                ..ReadOptions::default()
            };
            let got = read_batches(&file.bytes, &ro, 1).unwrap();
            assert_eq!(
                all_records(&got).len(),
                want,
                "key {key:?}, budget {max_bytes}"
            );
            assert_eq!(got.len(), want.div_ceil(10));
        }
    }
}
