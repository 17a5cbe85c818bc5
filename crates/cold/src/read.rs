//! Parquet → record batches, for Kafka consumers reading the cold tier.

use crate::schema::segment_schema;
use crate::ColdError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::{Bytes, BytesMut};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use strata_record::{encode_batch, DecodedRecord, TimestampType};

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// First offset wanted; earlier rows are skipped (whole row groups by
    /// their offset statistics).
    pub from_offset: i64,
    /// Stop after roughly this many bytes of rebuilt batches (at least one).
    pub max_bytes: usize,
    /// Records per rebuilt batch at most.
    pub batch_records: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            from_offset: 0,
            max_bytes: usize::MAX,
            batch_records: 1000,
        }
    }
}

fn records(rb: &RecordBatch) -> Result<Vec<DecodedRecord>, ColdError> {
    if rb.schema().fields() != segment_schema().fields() {
        return Err(ColdError::Schema(format!("{:?}", rb.schema())));
    }
    let offset = rb.column(1).as_primitive::<Int64Type>();
    let ts = rb.column(2).as_primitive::<TimestampMillisecondType>();
    let ts_type = rb.column(3).as_primitive::<Int8Type>();
    let key = rb.column(4).as_binary::<i32>();
    let value = rb.column(5).as_binary::<i32>();
    let headers = rb.column(6).as_list::<i32>();
    let pid = rb.column(7).as_primitive::<Int64Type>();
    let epoch = rb.column(8).as_primitive::<Int16Type>();
    let seq = rb.column(9).as_primitive::<Int32Type>();
    let _ = rb.column(0).as_primitive::<Int32Type>();
    let mut out = Vec::with_capacity(rb.num_rows());
    for i in 0..rb.num_rows() {
        let hs = headers.value(i);
        let hs = hs.as_struct();
        let hk = hs.column(0).as_string::<i32>();
        let hv = hs.column(1).as_binary::<i32>();
        let headers = (0..hs.len())
            .map(|j| {
                let v = (!hv.is_null(j)).then(|| Bytes::copy_from_slice(hv.value(j)));
                (hk.value(j).to_string(), v)
            })
            .collect();
        out.push(DecodedRecord {
            offset: offset.value(i),
            timestamp: ts.value(i),
            timestamp_type: if ts_type.value(i) == 1 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            key: (!key.is_null(i)).then(|| Bytes::copy_from_slice(key.value(i))),
            value: (!value.is_null(i)).then(|| Bytes::copy_from_slice(value.value(i))),
            headers,
            producer_id: pid.value(i),
            producer_epoch: epoch.value(i),
            sequence: seq.value(i),
            leader_epoch: -1,
        });
    }
    Ok(out)
}

/// Whether two records can share a rebuilt batch (batch-level fields agree).
fn same_batch(a: &DecodedRecord, b: &DecodedRecord) -> bool {
    a.producer_id == b.producer_id
        && a.producer_epoch == b.producer_epoch
        && a.timestamp_type == b.timestamp_type
        && (a.sequence < 0) == (b.sequence < 0)
        && (a.sequence < 0 || b.sequence == a.sequence.wrapping_add((b.offset - a.offset) as i32))
}

/// Rebuilds uncompressed record batches from a segment file, starting at the
/// batch containing `from_offset`, with `leader_epoch` stamped on each.
pub fn read_batches(
    file: &Bytes,
    opts: &ReadOptions,
    leader_epoch: i32,
) -> Result<Vec<BytesMut>, ColdError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone())?;
    // Skip row groups that end before the wanted offset.
    let groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(1).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().is_none_or(|m| *m >= opts.from_offset),
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(8192)
        .build()?;
    let mut out = Vec::new();
    let mut size = 0usize;
    let mut pending: Vec<DecodedRecord> = Vec::new();
    let flush = |pending: &mut Vec<DecodedRecord>, out: &mut Vec<BytesMut>, size: &mut usize| {
        if !pending.is_empty() {
            let b = encode_batch(pending);
            *size += b.len();
            out.push(b);
            pending.clear();
        }
    };
    for rb in reader {
        for mut r in records(&rb?)? {
            if r.offset < opts.from_offset {
                continue;
            }
            r.leader_epoch = leader_epoch;
            let fits = pending
                .last()
                .is_none_or(|p| same_batch(p, &r) && pending.len() < opts.batch_records.max(1));
            if !fits {
                flush(&mut pending, &mut out, &mut size);
                if size >= opts.max_bytes {
                    return Ok(out);
                }
            }
            pending.push(r);
        }
    }
    flush(&mut pending, &mut out, &mut size);
    Ok(out)
}

/// The first record (in offset order) with a timestamp `>= ts`, reading
/// only the offset and timestamp columns.
pub fn offset_for_timestamp(file: &Bytes, ts: i64) -> Result<Option<(i64, i64)>, ColdError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone())?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [1, 2]);
    let reader = builder.with_projection(mask).build()?;
    for rb in reader {
        let rb = rb?;
        let offsets = rb.column(0).as_primitive::<Int64Type>();
        let times = rb.column(1).as_primitive::<TimestampMillisecondType>();
        for i in 0..rb.num_rows() {
            if times.value(i) >= ts {
                return Ok(Some((offsets.value(i), times.value(i))));
            }
        }
    }
    Ok(None)
}
