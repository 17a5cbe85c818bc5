use super::*;
use crate::tests::{all_records, store_with};
use crate::{
    read_batches, read_batches_ranged, write_segment, ReadOptions, StoreObject, WriteOptions,
};
use bytes::Bytes;
use parquet::file::reader::{FileReader, SerializedFileReader};
use strata_record::{encode_batch, DecodedRecord, TimestampType};

/// 300 records in row groups of 100 rows: rows 0..150 with no producer,
/// rows 150..300 of producer 7 (epoch 0, sequences in step with the
/// offsets); offsets run on by one except for a gap of 5 before row 100
/// (between the first two row groups) and after row 250 (inside the
/// third).
fn records() -> Vec<DecodedRecord> {
    (0..300)
        .map(|row: i64| {
            let producer = row >= 150;
            let offset = row + if row >= 100 { 5 } else { 0 } + if row > 250 { 5 } else { 0 };
            DecodedRecord {
                offset,
                timestamp: 1_700_000_000_000 + row,
                timestamp_type: TimestampType::CreateTime,
                key: None,
                value: Some(Bytes::from(format!("v{row}"))),
                headers: Vec::new(),
                producer_id: if producer { 7 } else { -1 },
                producer_epoch: if producer { 0 } else { -1 },
                sequence: if producer { (offset - 150) as i32 } else { -1 },
                leader_epoch: 1,
            }
        })
        .collect()
}

fn file(records: &[DecodedRecord]) -> Bytes {
    // One batch per producer and stretch of offsets without a gap.
    let mut seg = bytes::BytesMut::new();
    for run in records.chunk_by(|a, b| a.producer_id == b.producer_id && b.offset == a.offset + 1) {
        seg.extend_from_slice(&encode_batch(run));
    }
    let mut opts = WriteOptions::new("t", 0, 1);
    opts.row_group_rows = 100;
    write_segment(&seg.freeze(), &opts).unwrap().bytes
}

#[test]
fn columns_the_statistics_state_are_implied_not_decoded() {
    let file = file(&records());
    let reader = SerializedFileReader::new(file.clone()).unwrap();
    let md = reader.metadata();
    assert_eq!(md.num_row_groups(), 3);
    // The top-level columns a read of `groups` (skipping `skip` rows)
    // leaves undecoded, of offset, timestamp_type, producer_id,
    // producer_epoch, sequence; and the offset it counts from.
    let names = [
        "offset",
        "timestamp_type",
        "producer_id",
        "producer_epoch",
        "sequence",
    ];
    let implied = |groups: &[usize], skip: usize| {
        let i = Implied::plan(md, groups, skip);
        let mask = crate::read::read_projection(md, groups, &i);
        for name in names {
            // What is implied is what the read leaves out.
            let col = leaf(md, name).unwrap();
            assert_eq!(
                mask.leaf_included(col),
                !i.implies(name),
                "{name} in {groups:?}"
            );
        }
        (names.map(|n| i.implies(n)), i.next_offset)
    };
    // Rows 0..100: no producer, no gap: all of them.
    assert_eq!(implied(&[0], 0), ([true; 5], Some(0)));
    assert_eq!(implied(&[0], 40), ([true; 5], Some(40)));
    // Rows 100..200: no producer, then producer 7: only the timestamp
    // type is one value; the offsets run on, but not on from row group 0.
    let mixed = [true, true, false, false, false];
    assert_eq!(implied(&[1], 0), (mixed, Some(105)));
    assert_eq!(
        implied(&[0, 1], 0),
        ([false, true, false, false, false], None)
    );
    // Rows 200..300: producer 7 throughout, sequences that step, and an
    // offset gap.
    let producer = [false, true, true, true, false];
    assert_eq!(implied(&[2], 0), (producer, None));
    assert_eq!(
        implied(&[1, 2], 0),
        ([false, true, false, false, false], None)
    );
    // No row groups: nothing.
    assert_eq!(implied(&[], 0), ([false; 5], None));
}

#[test]
fn row_groups_imply_offsets_only_when_each_follows_on_from_the_one_before() {
    // Groups 0 and 1 each run on by one, but 1 does not start where 0
    // ends (nor 0 where 1 ends).
    let file = file(&records());
    let reader = SerializedFileReader::new(file.clone()).unwrap();
    let md = reader.metadata();
    let rgs: Vec<_> = md.row_groups().iter().collect();
    let col = leaf(md, "offset").unwrap();
    assert_eq!(dense_from(&rgs[..1], col), Some(0));
    assert_eq!(dense_from(&rgs[1..2], col), Some(105));
    assert_eq!(dense_from(&rgs[..2], col), None);
    assert_eq!(dense_from(&[rgs[1], rgs[0]], col), None);
    // One value in each of groups 0 and 2, but not the same one.
    let pid = leaf(md, "producer_id").unwrap();
    assert_eq!(constant(&rgs[..1], pid), Some(-1));
    assert_eq!(constant(&rgs[2..], pid), Some(7));
    assert_eq!(constant(&[rgs[0], rgs[2]], pid), None);
}

#[tokio::test]
async fn reads_with_implied_columns_return_every_record_as_written() {
    let records = records();
    let file = file(&records);
    let store = store_with("i.parquet", &file).await;
    for from in [0usize, 1, 40, 99, 100, 149, 150, 199, 200, 250, 251, 299] {
        let offset = records[from].offset;
        for max_bytes in [1, 500, usize::MAX] {
            let ro = ReadOptions {
                from_offset: offset,
                max_bytes,
                batch_records: 7,
            };
            let got = all_records(&read_batches(&file, &ro, 1).unwrap());
            assert!(!got.is_empty());
            assert_eq!(
                got,
                records[from..from + got.len()],
                "from {offset}, {max_bytes} B"
            );
            let object = StoreObject::new(store.clone(), "i.parquet", file.len() as u64);
            let ranged = all_records(&read_batches_ranged(object, &ro, 1).await.unwrap());
            assert_eq!(ranged, got, "ranged from {offset}, {max_bytes} B");
        }
    }
}

#[test]
fn a_batch_longer_than_the_shared_array_gets_a_longer_one() {
    // (The reader's batches are never longer; apply stays correct anyway.)
    let field = Arc::new(
        read_schema()
            .field_with_name("producer_id")
            .unwrap()
            .clone(),
    );
    let mut i = Implied {
        constants: vec![(field, -1, repeated(&DataType::Int64, -1, 2).unwrap())],
        next_offset: Some(10),
        schema: None,
    };
    let ts = Arc::new(Int64Array::from_iter_values(0..5)) as ArrayRef;
    let rb = RecordBatch::try_from_iter([("ts", ts)]).unwrap();
    let out = i.apply(rb).unwrap();
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let col = |n: &str| {
        out.column_by_name(n)
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    };
    assert_eq!(col("producer_id"), vec![-1; 5]);
    assert_eq!(col("offset"), vec![10, 11, 12, 13, 14]);
    assert_eq!(i.next_offset, Some(15));
}
