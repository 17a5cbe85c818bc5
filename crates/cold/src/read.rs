//! Parquet → record batches, for Kafka consumers reading the cold tier.

use crate::schema::segment_schema;
use crate::ColdError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::{Bytes, BytesMut};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use strata_record::{encode_batch_into, DecodedRecord, TimestampType};

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

/// The columns of one Arrow batch of a segment file, read row by row so
/// rows before the wanted offset, or past the byte budget, cost nothing.
struct Columns<'a> {
    offset: &'a arrow_array::PrimitiveArray<Int64Type>,
    ts: &'a arrow_array::PrimitiveArray<TimestampMillisecondType>,
    ts_type: &'a arrow_array::PrimitiveArray<Int8Type>,
    key: &'a arrow_array::BinaryArray,
    value: &'a arrow_array::BinaryArray,
    headers: &'a arrow_array::ListArray,
    pid: &'a arrow_array::PrimitiveArray<Int64Type>,
    epoch: &'a arrow_array::PrimitiveArray<Int16Type>,
    seq: &'a arrow_array::PrimitiveArray<Int32Type>,
}

impl<'a> Columns<'a> {
    fn new(rb: &'a RecordBatch) -> Result<Self, ColdError> {
        if rb.schema().fields() != segment_schema().fields() {
            return Err(ColdError::Schema(format!("{:?}", rb.schema())));
        }
        Ok(Self {
            offset: rb.column(1).as_primitive::<Int64Type>(),
            ts: rb.column(2).as_primitive::<TimestampMillisecondType>(),
            ts_type: rb.column(3).as_primitive::<Int8Type>(),
            key: rb.column(4).as_binary::<i32>(),
            value: rb.column(5).as_binary::<i32>(),
            headers: rb.column(6).as_list::<i32>(),
            pid: rb.column(7).as_primitive::<Int64Type>(),
            epoch: rb.column(8).as_primitive::<Int16Type>(),
            seq: rb.column(9).as_primitive::<Int32Type>(),
        })
    }

    fn record(&self, i: usize) -> DecodedRecord {
        let headers = if self.headers.value_length(i) == 0 {
            Vec::new()
        } else {
            let hs = self.headers.value(i);
            let hs = hs.as_struct();
            let hk = hs.column(0).as_string::<i32>();
            let hv = hs.column(1).as_binary::<i32>();
            (0..hs.len())
                .map(|j| {
                    let v = (!hv.is_null(j)).then(|| Bytes::copy_from_slice(hv.value(j)));
                    (hk.value(j).to_string(), v)
                })
                .collect()
        };
        DecodedRecord {
            offset: self.offset.value(i),
            timestamp: self.ts.value(i),
            timestamp_type: if self.ts_type.value(i) == 1 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            key: (!self.key.is_null(i)).then(|| Bytes::copy_from_slice(self.key.value(i))),
            value: (!self.value.is_null(i)).then(|| Bytes::copy_from_slice(self.value.value(i))),
            headers,
            producer_id: self.pid.value(i),
            producer_epoch: self.epoch.value(i),
            sequence: self.seq.value(i),
            leader_epoch: -1,
        }
    }
}

/// Feeds one Arrow batch's rows at or past the wanted offset to the
/// rebuilder; false once it has enough bytes.
fn push_rows(rb: &RecordBatch, out: &mut Rebuilder<'_>) -> Result<bool, ColdError> {
    let cols = Columns::new(rb)?;
    for i in 0..rb.num_rows() {
        if cols.offset.value(i) < out.opts.from_offset {
            continue;
        }
        if !out.push(cols.record(i)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether two records can share a rebuilt batch (batch-level fields agree).
fn same_batch(a: &DecodedRecord, b: &DecodedRecord) -> bool {
    a.producer_id == b.producer_id
        && a.producer_epoch == b.producer_epoch
        && a.timestamp_type == b.timestamp_type
        && (a.sequence < 0) == (b.sequence < 0)
        && (a.sequence < 0 || b.sequence == a.sequence.wrapping_add((b.offset - a.offset) as i32))
}

/// Groups records into rebuilt batches until `max_bytes` is reached. The
/// batches are written one after another into one buffer and split off it,
/// so a caller can join them again without copying (`BytesMut::unsplit`).
struct Rebuilder<'a> {
    opts: &'a ReadOptions,
    leader_epoch: i32,
    buf: BytesMut,
    out: Vec<BytesMut>,
    size: usize,
    pending: Vec<DecodedRecord>,
}

/// Largest buffer reserved up front for one read's rebuilt batches.
const MAX_RESERVE: usize = 2 << 20;

impl<'a> Rebuilder<'a> {
    fn new(opts: &'a ReadOptions, leader_epoch: i32) -> Self {
        Self {
            opts,
            leader_epoch,
            buf: BytesMut::with_capacity(opts.max_bytes.saturating_add(64 << 10).min(MAX_RESERVE)),
            out: Vec::new(),
            size: 0,
            pending: Vec::new(),
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            encode_batch_into(&self.pending, &mut self.buf);
            let b = self.buf.split();
            self.size += b.len();
            self.out.push(b);
            self.pending.clear();
        }
    }

    /// Adds one record (at or past `from_offset`: [`push_rows`] skips the
    /// rows before it); false once enough bytes are rebuilt.
    fn push(&mut self, mut r: DecodedRecord) -> bool {
        r.leader_epoch = self.leader_epoch;
        let fits = self.pending.last().is_none_or(|p| {
            same_batch(p, &r) && self.pending.len() < self.opts.batch_records.max(1)
        });
        if !fits {
            self.flush();
            if self.size >= self.opts.max_bytes {
                return false;
            }
        }
        self.pending.push(r);
        true
    }

    fn finish(mut self) -> Vec<BytesMut> {
        self.flush();
        self.out
    }
}

/// Row groups whose offsets can reach `from_offset` (by their statistics).
fn row_groups_from(md: &parquet::file::metadata::ParquetMetaData, from_offset: i64) -> Vec<usize> {
    md.row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(1).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().is_none_or(|m| *m >= from_offset),
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

/// Rebuilds uncompressed record batches from a segment file held in memory,
/// starting at the batch containing `from_offset`, with `leader_epoch`
/// stamped on each.
pub fn read_batches(
    file: &Bytes,
    opts: &ReadOptions,
    leader_epoch: i32,
) -> Result<Vec<BytesMut>, ColdError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone())?;
    let groups = row_groups_from(builder.metadata(), opts.from_offset);
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(8192)
        .build()?;
    let mut rb_out = Rebuilder::new(opts, leader_epoch);
    for rb in reader {
        if !push_rows(&rb?, &mut rb_out)? {
            break;
        }
    }
    Ok(rb_out.finish())
}

/// Like [`read_batches`], but range-reads the object: the footer, then only
/// the column chunks of the row groups that can hold `from_offset` onward.
// `ParquetObjectReader` is deprecated in parquet 60 in favour of a
// hand-written `AsyncFileReader`; it still does exactly the range reads we
// need. Replacing it is a follow-up.
#[allow(deprecated)]
pub async fn read_batches_ranged(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    key: &str,
    size: u64,
    opts: &ReadOptions,
    leader_epoch: i32,
) -> Result<Vec<BytesMut>, ColdError> {
    use futures::StreamExt;
    use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
    let reader =
        ParquetObjectReader::new(store, object_store::path::Path::from(key)).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let groups = row_groups_from(builder.metadata(), opts.from_offset);
    let mut stream = builder
        .with_row_groups(groups)
        .with_batch_size(8192)
        .build()?;
    let mut rb_out = Rebuilder::new(opts, leader_epoch);
    while let Some(rb) = stream.next().await {
        if !push_rows(&rb?, &mut rb_out)? {
            break;
        }
    }
    Ok(rb_out.finish())
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
