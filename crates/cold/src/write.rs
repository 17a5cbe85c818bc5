//! Segment → Parquet.

use crate::schema::{header_fields, header_item, segment_schema, FORMAT_VERSION};
use crate::ColdError;
use arrow_array::builder::{
    BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use bytes::{Bytes, BytesMut};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use strata_record::{for_each_record, layout, BatchHeader, BatchIter, RecordView, TimestampType};

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

    fn push(&mut self, partition: i32, h: &BatchHeader, r: &RecordView<'_>) {
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.timestamp.append_value(r.timestamp);
        self.timestamp_type.append_value(match h.timestamp_type() {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => 1,
        });
        self.key.append_option(r.key);
        self.value.append_option(r.value);
        let hs = self.headers.values();
        for (k, v) in r.headers() {
            if let Some(b) = hs.field_builder::<StringBuilder>(0) {
                // Keys are checked as UTF-8 at produce; one stored before
                // that check is made lossy, as Kafka's Java clients read it.
                b.append_value(String::from_utf8_lossy(k));
            }
            if let Some(b) = hs.field_builder::<BinaryBuilder>(1) {
                b.append_option(v);
            }
            hs.append(true);
        }
        self.headers.append(true);
        self.producer_id.append_value(h.producer_id);
        self.producer_epoch.append_value(h.producer_epoch);
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

/// What a finished file covers (the manifest entry's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: i64,
}

/// Converts a sealed segment into one Parquet file incrementally: batches
/// are pushed in chunks (whole batches, in offset order) and each row group
/// goes to `out` as soon as it is full, so memory holds one chunk and one
/// row group, never the whole segment or the whole file. zstd, row groups of
/// at most `row_group_rows` rows and about `row_group_bytes` of keys and
/// values, chunk and page statistics with the page index, and file metadata
/// describing the file.
pub struct SegmentWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    cols: Columns,
    opts: WriteOptions,
    base: i64,
    last: i64,
    count: i64,
    min_ts: i64,
    max_ts: i64,
    leader_epoch: i32,
    group_bytes: usize,
}

/// How the columns are encoded (a choice of this writer; readers follow the
/// file's metadata, so files written before read the same). Keys, values
/// and headers (what the
/// records carry) are zstd-compressed. The other columns are nearly
/// constant or step by one (partition, producer fields, timestamp type;
/// offsets and timestamps, delta-encoded) and take a few bytes per page
/// encoded alone, so they are left uncompressed: a reader then builds no
/// decompressor for them (one per column chunk read; building them was
/// 8 % of a cold read's CPU).
fn writer_properties(opts: &WriteOptions) -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::default());
    let mut b = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)));
    for col in [
        "key",
        "value",
        "headers.list.item.key",
        "headers.list.item.value",
    ] {
        // A nested column's path is its parts, not one dotted name.
        let path = ColumnPath::new(col.split('.').map(String::from).collect());
        b = b.set_column_compression(path, zstd);
    }
    for col in ["offset", "timestamp"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    // Values are mostly distinct (events, log lines): a dictionary of them
    // is built and given up once it reaches its page size, after a reader
    // has to gather through it for the first ~10k rows of every column
    // chunk (18 % of a cold read of such values). zstd still finds repeats.
    // Nor do they get statistics: the min and max of opaque payloads prune
    // nothing, and comparing every value for them was 7 % of an offload of
    // distinct text values (decision 0004). Offsets and timestamps, which
    // readers seek by, and keys keep theirs.
    b.set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_statistics_enabled(ColumnPath::from("value"), EnabledStatistics::None)
        .build()
}

impl<W: Write + Send> SegmentWriter<W> {
    pub fn new(out: W, opts: WriteOptions) -> Result<Self, ColdError> {
        let props = writer_properties(&opts);
        Ok(Self {
            writer: ArrowWriter::try_new(out, segment_schema(), Some(props))?,
            cols: Columns::new(),
            leader_epoch: opts.leader_epoch,
            opts,
            base: i64::MAX,
            last: i64::MIN,
            count: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            group_bytes: 0,
        })
    }

    /// Adds stored batches (back to back, in offset order, after those
    /// already pushed). A torn batch at the end is ignored, as a segment's
    /// readers do.
    pub fn push(&mut self, batches: &Bytes) -> Result<(), ColdError> {
        let from_offset = self.opts.from_offset;
        for (pos, h) in BatchIter::new(batches) {
            if h.last_offset() < from_offset {
                continue;
            }
            // The file covers every offset of the segment from `from_offset`,
            // including the markers and aborted records it leaves out (gaps).
            self.base = self.base.min(h.base_offset.max(from_offset));
            self.last = self.last.max(h.last_offset());
            if h.is_control() || aborted(&h, &self.opts.aborted) {
                continue;
            }
            self.leader_epoch = self.leader_epoch.max(h.partition_leader_epoch);
            // Records are borrowed from the batch (or its decompressed
            // records) straight into the column builders.
            // (BatchIter yields whole batches only; `get` keeps it so.)
            let batch = batches.get(pos..pos + h.total_size()).unwrap_or_default();
            for_each_record(batch, |h, r| {
                if r.offset >= from_offset {
                    self.add(h, &r)?;
                }
                Ok::<(), ColdError>(())
            })?;
        }
        Ok(())
    }

    /// Adds one record; writes the row group out once it is full.
    fn add(&mut self, h: &BatchHeader, r: &RecordView<'_>) -> Result<(), ColdError> {
        self.cols.push(self.opts.partition, h, r);
        self.min_ts = self.min_ts.min(r.timestamp);
        self.max_ts = self.max_ts.max(r.timestamp);
        self.count += 1;
        self.group_bytes += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
        if self.cols.rows >= self.opts.row_group_rows.max(1)
            || self.group_bytes >= self.opts.row_group_bytes
        {
            self.writer.write(&self.cols.finish()?)?;
            // Close the row group here even if the row bound was not hit.
            self.writer.flush()?;
            self.group_bytes = 0;
        }
        Ok(())
    }

    /// Writes the last row group and the footer; returns what the file
    /// covers and the output.
    pub fn finish(mut self) -> Result<(SegmentSummary, W), ColdError> {
        let (base, last) = (self.base, self.last);
        if last < base {
            return Err(ColdError::Empty);
        }
        let (min_ts, max_ts) = if self.count == 0 {
            // Only markers and aborted records: an empty file still records
            // that these offsets are settled.
            (-1, -1)
        } else {
            (self.min_ts, self.max_ts)
        };
        if self.cols.rows > 0 {
            self.writer.write(&self.cols.finish()?)?;
        }
        for (k, v) in [
            ("strata.format.version", FORMAT_VERSION.to_string()),
            ("strata.topic", self.opts.topic.clone()),
            ("strata.partition", self.opts.partition.to_string()),
            ("strata.base_offset", base.to_string()),
            ("strata.last_offset", last.to_string()),
            ("strata.min_timestamp", min_ts.to_string()),
            ("strata.max_timestamp", max_ts.to_string()),
            ("strata.record_count", self.count.to_string()),
            ("strata.leader_epoch", self.leader_epoch.to_string()),
        ] {
            self.writer
                .append_key_value_metadata(KeyValue::new(k.to_string(), v));
        }
        let out = self.writer.into_inner()?;
        let summary = SegmentSummary {
            base_offset: base,
            last_offset: last,
            min_timestamp: min_ts,
            max_timestamp: max_ts,
            record_count: self.count,
        };
        Ok((summary, out))
    }
}

/// Converts a sealed segment held in memory into one Parquet file in
/// memory (see [`SegmentWriter`]).
pub fn write_segment(segment: &Bytes, opts: &WriteOptions) -> Result<SegmentFile, ColdError> {
    let mut w = SegmentWriter::new(Vec::new(), opts.clone())?;
    w.push(segment)?;
    let (s, bytes) = w.finish()?;
    Ok(SegmentFile {
        bytes: Bytes::from(bytes),
        base_offset: s.base_offset,
        last_offset: s.last_offset,
        min_timestamp: s.min_timestamp,
        max_timestamp: s.max_timestamp,
        record_count: s.record_count,
    })
}

/// Converts the segment file at `path` into Parquet written to `out`,
/// reading it about `chunk_bytes` of whole batches at a time (more when one
/// batch is larger): memory stays bounded by the chunk and a row group
/// whatever the segment's size.
pub fn write_segment_file<W: Write + Send>(
    path: &Path,
    opts: &WriteOptions,
    out: W,
    chunk_bytes: usize,
) -> Result<(SegmentSummary, W), ColdError> {
    let io = |e: std::io::Error| ColdError::Io(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut w = SegmentWriter::new(out, opts.clone())?;
    let chunk_bytes = chunk_bytes.max(layout::HEADER_SIZE);
    let mut pending = BytesMut::new();
    loop {
        // Read until the chunk is full, or a batch larger than a chunk is
        // whole, or the file ends.
        let want = match BatchHeader::parse_prefix(&pending) {
            // A length past the file's end is corruption, not a reason to
            // allocate it.
            Ok(h) if h.total_size() as u64 > file_len => {
                return Err(ColdError::Io(format!(
                    "{}: a batch claims {} bytes, more than the file holds",
                    path.display(),
                    h.total_size()
                )))
            }
            Ok(h) if h.total_size() > chunk_bytes => h.total_size(),
            _ => chunk_bytes,
        };
        let before = pending.len();
        if before < want {
            pending.resize(want, 0);
            let n = read_full(&mut file, &mut pending[before..]).map_err(io)?;
            pending.truncate(before + n);
        }
        let at_end = pending.len() < want;
        let mut it = BatchIter::new(&pending);
        it.by_ref().for_each(drop);
        let whole = it.valid_len();
        if whole > 0 {
            w.push(&pending.split_to(whole).freeze())?;
        }
        if at_end {
            // Whatever is left is a torn tail, ignored as readers do.
            break;
        }
        if whole == 0 {
            match BatchHeader::parse_prefix(&pending) {
                // The start of a batch larger than a chunk: read the rest.
                Ok(h) if h.total_size() > pending.len() => continue,
                // As long as its first batch claims to be, yet not a whole
                // batch: these bytes are not batches.
                _ => {
                    return Err(ColdError::Io(format!(
                        "{}: unreadable batch at a chunk boundary",
                        path.display()
                    )))
                }
            }
        }
    }
    w.finish()
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
