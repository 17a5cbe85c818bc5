//! Segment → Parquet.

use crate::schema::{header_fields, header_item, segment_schema, FORMAT_VERSION};
use crate::ColdError;
use arrow_array::builder::{
    BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::sync::Arc;
use strata_record::{decode_batch, BatchIter, DecodedRecord, TimestampType};

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub topic: String,
    pub partition: i32,
    /// The writer's leader epoch (also in the object key).
    pub leader_epoch: i32,
    /// Rows per row group at most: large enough for engines, small enough
    /// that a consumer reading from an offset skips most of the file (a cold
    /// fetch decodes whole row groups).
    pub row_group_rows: usize,
    /// Key and value bytes per row group at most (the same bound for large
    /// records, where the row count alone would allow huge groups).
    pub row_group_bytes: usize,
    /// Records below this offset are left out: they are already in an
    /// earlier file (a new leader's segments can start below what its
    /// predecessor offloaded, since each replica rolls its own segments).
    pub from_offset: i64,
    /// Aborted transactions: their records are left out (only committed
    /// records reach the cold tier; control batches never do).
    pub aborted: Vec<AbortedRange>,
}

/// Records of `producer_id` from `first_offset` to `last_offset` (its abort
/// marker) belong to an aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

fn aborted(h: &strata_record::BatchHeader, ranges: &[AbortedRange]) -> bool {
    h.is_transactional()
        && ranges.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset <= a.last_offset
        })
}

impl WriteOptions {
    pub fn new(topic: impl Into<String>, partition: i32, leader_epoch: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
            leader_epoch,
            row_group_rows: 16 * 1024,
            row_group_bytes: 4 << 20,
            from_offset: 0,
            aborted: Vec::new(),
        }
    }
}

/// A finished Parquet file and what the manifest records about it.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub bytes: Bytes,
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: i64,
}

struct Columns {
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    timestamp_type: Int8Builder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    sequence: Int32Builder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        let header = StructBuilder::new(
            header_fields(),
            vec![
                Box::new(StringBuilder::new()),
                Box::new(BinaryBuilder::new()),
            ],
        );
        Self {
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            timestamp_type: Int8Builder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(header).with_field(header_item()),
            producer_id: Int64Builder::new(),
            producer_epoch: Int16Builder::new(),
            sequence: Int32Builder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, partition: i32, r: &DecodedRecord) {
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.timestamp.append_value(r.timestamp);
        self.timestamp_type.append_value(match r.timestamp_type {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => 1,
        });
        self.key.append_option(r.key.as_deref());
        self.value.append_option(r.value.as_deref());
        let hs = self.headers.values();
        for (k, v) in &r.headers {
            if let Some(b) = hs.field_builder::<StringBuilder>(0) {
                b.append_value(k);
            }
            if let Some(b) = hs.field_builder::<BinaryBuilder>(1) {
                b.append_option(v.as_deref());
            }
            hs.append(true);
        }
        self.headers.append(true);
        self.producer_id.append_value(r.producer_id);
        self.producer_epoch.append_value(r.producer_epoch);
        self.sequence.append_value(r.sequence);
        self.rows += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch, ColdError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.producer_id.finish()),
            Arc::new(self.producer_epoch.finish()),
            Arc::new(self.sequence.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(segment_schema(), cols)?)
    }
}

/// Converts a sealed segment (stored batches back to back, in offset order)
/// into one Parquet file: zstd, row groups of at most `row_group_rows` rows
/// and about `row_group_bytes` of keys and values, chunk and
/// page statistics with the page index, and file metadata describing it.
pub fn write_segment(segment: &Bytes, opts: &WriteOptions) -> Result<SegmentFile, ColdError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), segment_schema(), Some(props))?;
    let mut cols = Columns::new();
    let (mut base, mut last, mut count) = (i64::MAX, i64::MIN, 0i64);
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let mut leader_epoch = opts.leader_epoch;
    let mut group_bytes = 0usize;
    for (pos, h) in BatchIter::new(segment) {
        if h.last_offset() < opts.from_offset {
            continue;
        }
        // The file covers every offset of the segment from `from_offset`,
        // including the markers and aborted records it leaves out (gaps).
        base = base.min(h.base_offset.max(opts.from_offset));
        last = last.max(h.last_offset());
        if h.is_control() || aborted(&h, &opts.aborted) {
            continue;
        }
        let batch = decode_batch(&segment.slice(pos..pos + h.total_size()))?;
        leader_epoch = leader_epoch.max(h.partition_leader_epoch);
        for r in batch
            .records
            .iter()
            .filter(|r| r.offset >= opts.from_offset)
        {
            cols.push(opts.partition, r);
            min_ts = min_ts.min(r.timestamp);
            max_ts = max_ts.max(r.timestamp);
            count += 1;
            group_bytes +=
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            if cols.rows >= opts.row_group_rows.max(1) || group_bytes >= opts.row_group_bytes {
                writer.write(&cols.finish()?)?;
                // Close the row group here even if the row bound was not hit.
                writer.flush()?;
                group_bytes = 0;
            }
        }
    }
    if last < base {
        return Err(ColdError::Empty);
    }
    if count == 0 {
        // Only markers and aborted records: an empty file still records
        // that these offsets are settled.
        (min_ts, max_ts) = (-1, -1);
    }
    if cols.rows > 0 {
        writer.write(&cols.finish()?)?;
    }
    for (k, v) in [
        ("strata.format.version", FORMAT_VERSION.to_string()),
        ("strata.topic", opts.topic.clone()),
        ("strata.partition", opts.partition.to_string()),
        ("strata.base_offset", base.to_string()),
        ("strata.last_offset", last.to_string()),
        ("strata.min_timestamp", min_ts.to_string()),
        ("strata.max_timestamp", max_ts.to_string()),
        ("strata.record_count", count.to_string()),
        ("strata.leader_epoch", leader_epoch.to_string()),
    ] {
        writer.append_key_value_metadata(KeyValue::new(k.to_string(), v));
    }
    let bytes = writer.into_inner()?;
    Ok(SegmentFile {
        bytes: Bytes::from(bytes),
        base_offset: base,
        last_offset: last,
        min_timestamp: min_ts,
        max_timestamp: max_ts,
        record_count: count,
    })
}
