//! Parquet → record batches, for Kafka consumers reading the cold tier.

use crate::ColdCursor;
use crate::ColdError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMillisecondType,
};
use arrow_array::{Array, RecordBatch};
use bytes::{Bytes, BytesMut};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use strata_record::{layout, BatchBuilder, BatchFields, TimestampType};

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
/// Fixed-width columns are plain slices: the row loop reads each value
/// where it lies instead of assembling per-row structs. Columns are found
/// by name and type (a reader leaves out what it does not need, see
/// [`read_projection`]); anything else is a schema error.
struct Columns<'a> {
    offset: &'a [i64],
    ts: &'a [i64],
    ts_type: &'a [i8],
    /// None when the reader left the keys out (the row groups have none).
    key: Option<&'a arrow_array::BinaryViewArray>,
    value: &'a arrow_array::BinaryViewArray,
    /// None when the reader left the headers out (the row groups have none).
    headers: Option<Headers<'a>>,
    pid: &'a [i64],
    epoch: &'a [i16],
    seq: &'a [i32],
    /// Whether the whole Arrow batch is one stretch ([`Self::stretch_end`]):
    /// one producer, epoch and timestamp type (and log-append time, if
    /// that is the type) throughout, and no sequences or sequences in
    /// step with the offsets — a topic written without idempotence, or by
    /// one idempotent producer. Then a stretch from any row runs to the
    /// end of the batch, with nothing to compare per row.
    uniform: bool,
}

/// The headers column: row `i`'s headers are entries
/// `offsets[i]..offsets[i + 1]` of `key` and `value`.
struct Headers<'a> {
    offsets: &'a [i32],
    key: &'a arrow_array::StringArray,
    value: &'a arrow_array::BinaryArray,
}

impl<'a> Columns<'a> {
    fn new(rb: &'a RecordBatch) -> Result<Self, ColdError> {
        let bad = || ColdError::Schema(format!("{:?}", rb.schema()));
        let headers = match rb.column_by_name("headers") {
            None => None,
            Some(h) => {
                let list = h.as_list_opt::<i32>().ok_or_else(bad)?;
                let entry = list.values().as_struct_opt().ok_or_else(bad)?;
                let field = |i: usize| entry.columns().get(i).ok_or_else(bad);
                Some(Headers {
                    offsets: list.value_offsets(),
                    key: field(0)?.as_string_opt::<i32>().ok_or_else(bad)?,
                    value: field(1)?.as_binary_opt::<i32>().ok_or_else(bad)?,
                })
            }
        };
        // A fixed-width column's values, if it is there with its type.
        fn values<'b, T: ArrowPrimitiveType>(
            rb: &'b RecordBatch,
            name: &str,
        ) -> Option<&'b [T::Native]> {
            Some(rb.column_by_name(name)?.as_primitive_opt::<T>()?.values())
        }
        let cols = Self {
            offset: values::<Int64Type>(rb, "offset").ok_or_else(bad)?,
            ts: values::<TimestampMillisecondType>(rb, "timestamp").ok_or_else(bad)?,
            ts_type: values::<Int8Type>(rb, "timestamp_type").ok_or_else(bad)?,
            key: match rb.column_by_name("key") {
                None => None,
                Some(k) => Some(k.as_binary_view_opt().ok_or_else(bad)?),
            },
            value: rb
                .column_by_name("value")
                .and_then(|v| v.as_binary_view_opt())
                .ok_or_else(bad)?,
            headers,
            pid: values::<Int64Type>(rb, "producer_id").ok_or_else(bad)?,
            epoch: values::<Int16Type>(rb, "producer_epoch").ok_or_else(bad)?,
            seq: values::<Int32Type>(rb, "sequence").ok_or_else(bad)?,
            uniform: false,
        };
        // (An Arrow batch's columns have its length; the row loop relies
        // on it, so it is checked, not assumed.)
        let rows = rb.num_rows();
        let fixed = [
            cols.offset.len(),
            cols.ts.len(),
            cols.ts_type.len(),
            cols.pid.len(),
            cols.epoch.len(),
            cols.seq.len(),
            cols.value.len(),
        ];
        if fixed.iter().any(|&n| n != rows) || cols.key.is_some_and(|k| k.len() != rows) {
            return Err(bad());
        }
        Ok(Self {
            uniform: cols.one_stretch(),
            ..cols
        })
    }

    /// Whether every row continues the first by [`Self::stretch_end`]'s
    /// rule (so every row the one before it): scans of whole columns,
    /// without early exits, which compile to vector loops.
    fn one_stretch(&self) -> bool {
        let (Some(&ts_type), Some(&seq)) = (self.ts_type.first(), self.seq.first()) else {
            return true;
        };
        let steps_agree = || {
            let step = |(&s, &o): (&i32, &i64)| seq_step(s, o);
            let mut rows = self.seq.iter().zip(self.offset);
            rows.next()
                .map(step)
                .is_none_or(|first| rows.fold(true, |all, row| all & (step(row) == first)))
        };
        all_equal(self.pid)
            && all_equal(self.epoch)
            && all_equal(self.ts_type)
            && (ts_type != 1 || all_equal(self.ts))
            && self
                .seq
                .iter()
                .fold(true, |all, &s| all & ((s < 0) == (seq < 0)))
            && (seq < 0 || steps_agree())
    }

    /// Row `i`'s batch-level fields.
    fn row(&self, i: usize) -> Row {
        Row {
            offset: self.offset[i],
            timestamp: self.ts[i],
            log_append_time: self.ts_type[i] == 1,
            producer_id: self.pid[i],
            producer_epoch: self.epoch[i],
            sequence: self.seq[i],
        }
    }

    /// The end of the stretch of rows from `i` that each continue the row
    /// before ([`Row::continues_with`]): the same producer, epoch and
    /// timestamp type (and log-append time, if that is the type), and no
    /// sequences or sequences in step with the offsets (a sequence less its
    /// offset, in i32 as sequences wrap, the same for every row).
    ///
    /// The same rule as `continues_with`, compared with the stretch's first
    /// row instead of pairwise: building a `Row` per row made the rebuild
    /// a third slower. Debug builds check that the two agree.
    fn stretch_end(&self, i: usize) -> usize {
        let (pid, epoch, seq) = (self.pid[i], self.epoch[i], self.seq[i]);
        let log_append = self.ts_type[i] == 1;
        if self.uniform {
            // Every row continues the one before (what the loop below
            // would find, row by row).
            debug_assert!(
                (i + 1..self.offset.len()).all(|j| self.row(j - 1).continues_with(&self.row(j)))
            );
            return self.offset.len();
        }
        let ts = self.ts[i];
        let step = |k: usize| seq_step(self.seq[k], self.offset[k]);
        let first_step = step(i);
        let mut k = i + 1;
        while k < self.offset.len()
            && self.pid[k] == pid
            && self.epoch[k] == epoch
            && (self.ts_type[k] == 1) == log_append
            && (!log_append || self.ts[k] == ts)
            && (self.seq[k] < 0) == (seq < 0)
            && (seq < 0 || step(k) == first_step)
        {
            k += 1;
        }
        debug_assert!(
            (i + 1..k).all(|j| self.row(j - 1).continues_with(&self.row(j)))
                && (k == self.offset.len() || !self.row(k - 1).continues_with(&self.row(k))),
            "stretch_end and Row::continues_with disagree at rows {i}..{k}"
        );
        k
    }

    fn key(&self, i: usize) -> Option<&'a [u8]> {
        self.key
            .and_then(|k| k.nulls().is_none_or(|n| n.is_valid(i)).then(|| k.value(i)))
    }

    fn value(&self, i: usize) -> Option<&'a [u8]> {
        let valid = self.value.nulls().is_none_or(|n| n.is_valid(i));
        valid.then(|| self.value.value(i))
    }

    /// Row `i`'s headers (most rows have none).
    fn headers(&self, i: usize) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
        let Some(h) = &self.headers else {
            return Vec::new();
        };
        let (from, to) = (h.offsets[i] as usize, h.offsets[i + 1] as usize);
        (from..to)
            .map(|j| {
                let v = h.value.is_valid(j).then(|| h.value.value(j));
                (h.key.value(j).as_bytes(), v)
            })
            .collect()
    }
}

/// The fields of a row that decide whether it can join the batch of the
/// row before: everything a batch carries once, and the row's offset and
/// sequence.
#[derive(Debug, Clone, Copy)]
struct Row {
    offset: i64,
    timestamp: i64,
    log_append_time: bool,
    producer_id: i64,
    producer_epoch: i16,
    sequence: i32,
}

impl Row {
    /// Whether `next` can follow this row in a rebuilt batch: the
    /// batch-level fields agree and sequences, if any, run on with the
    /// offsets.
    fn continues_with(&self, next: &Row) -> bool {
        let (a, b) = (self.sequence, next.sequence);
        self.producer_id == next.producer_id
            && self.producer_epoch == next.producer_epoch
            && self.log_append_time == next.log_append_time
            // A batch's log-append time is one for all its records (the
            // consumer applies its max timestamp to each).
            && (!self.log_append_time || self.timestamp == next.timestamp)
            && (a < 0) == (b < 0)
            && (a < 0 || b == a.wrapping_add((next.offset - self.offset) as i32))
    }

    /// The fields of a batch starting at this row.
    fn batch_fields(&self, leader_epoch: i32) -> BatchFields {
        BatchFields {
            timestamp_type: if self.log_append_time {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.sequence,
            leader_epoch,
        }
    }
}

/// Feeds one Arrow batch's rows from row `start` (those at or past the
/// wanted offset) to the rebuilder. Returns the row it stopped at, not
/// taken, once it has enough bytes; None when every row was taken.
///
/// Each record is encoded into the open batch as it is taken (a batch can
/// span Arrow batches). The rebuilder decides where runs end and when to
/// stop, from the records alone, so which records a read returns, and how
/// they are framed, does not depend on how the reader happened to cut its
/// Arrow batches (in memory and ranged reads cut them differently).
///
/// Rows are taken a stretch at a time: the rows that continue the first
/// one's batch-level fields ([`Columns::stretch_end`]) are compared with
/// the record before only at the stretch's start; within it a run ends
/// only at `batch_records` or the byte budget.
pub(crate) fn push_rows(
    rb: &RecordBatch,
    start: usize,
    out: &mut Rebuilder<'_>,
) -> Result<Option<usize>, ColdError> {
    let cols = Columns::new(rb)?;
    let max_records = out.opts.batch_records.max(1);
    let max_bytes = out.opts.max_bytes;
    let rows = cols.offset.len();
    // Offsets increase, so the rows below the wanted offset come first.
    let start = start.min(rows);
    let mut i = start + cols.offset[start..].partition_point(|&o| o < out.opts.from_offset);
    while i < rows {
        let head = cols.row(i);
        let end = cols.stretch_end(i);
        let mut k = i;
        while k < end {
            // A run also ends once the read has its bytes, so a small
            // fetch gets about what it asked for (at least one record), not
            // a whole run of `batch_records`.
            let fits = if k > i {
                out.run < max_records && out.taken < max_bytes
            } else {
                out.prev.is_none_or(|p| {
                    p.continues_with(&head) && out.run < max_records && out.taken < max_bytes
                })
            };
            if !fits {
                out.close();
                if out.taken >= max_bytes {
                    if k > i {
                        out.prev = Some(cols.row(k - 1));
                    }
                    return Ok(Some(k));
                }
            }
            if cols.headers.is_none() {
                // Record k, and those after it while the run has room and
                // the read wants bytes (the checks above, for each).
                k = out.push_key_values(&cols, k, end);
                continue;
            }
            let (key, value) = (cols.key(k), cols.value(k));
            let headers = cols.headers(k);
            out.taken += record_bytes(key, value)
                + headers
                    .iter()
                    .map(|(k, v)| 2 + k.len() + v.map_or(0, <[u8]>::len))
                    .sum::<usize>();
            out.push(&cols, k, key, value, &headers);
            k += 1;
        }
        out.prev = Some(cols.row(end - 1));
        i = end;
    }
    Ok(None)
}

/// A row's sequence less its offset, in i32 as sequences wrap: the same
/// for every row of a run whose sequences are in step with its offsets.
#[inline]
fn seq_step(sequence: i32, offset: i64) -> i32 {
    sequence.wrapping_sub(offset as i32)
}

/// Whether every value of `s` is its first. Without an early exit: a fold
/// the compiler turns into a vector loop (and the usual batch, one
/// stretch, is scanned to its end either way).
fn all_equal<T: Copy + PartialEq>(s: &[T]) -> bool {
    s.first()
        .is_none_or(|&f| s.iter().fold(true, |all, &x| all & (x == f)))
}

/// About what a record without headers takes in a batch, as a read's byte
/// budget counts it: its key and value plus a few bytes of lengths, deltas
/// and attributes (a header adds its key and value and two bytes).
#[inline]
fn record_bytes(key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
    8 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)
}

/// Collects rebuilt batches until `max_bytes` is reached. The batches are
/// written one after another into one buffer and split off it, so a caller
/// can join them again without copying (`BytesMut::unsplit`).
pub(crate) struct Rebuilder<'a> {
    opts: &'a ReadOptions,
    leader_epoch: i32,
    buf: BytesMut,
    out: Vec<BytesMut>,
    /// The batch being written, if a run is open.
    open: Option<BatchBuilder>,
    /// Bytes taken so far, by an estimate that depends only on the records
    /// and where runs begin (not on where Arrow batches cut runs), so the
    /// records a read returns do not either.
    taken: usize,
    /// The last record taken, and how many records its run (the batch it
    /// is in) has.
    prev: Option<Row>,
    run: usize,
}

/// Largest buffer reserved up front for one read's rebuilt batches.
const MAX_RESERVE: usize = 2 << 20;

impl<'a> Rebuilder<'a> {
    pub(crate) fn new(opts: &'a ReadOptions, leader_epoch: i32) -> Self {
        Self {
            opts,
            leader_epoch,
            buf: BytesMut::with_capacity(opts.max_bytes.saturating_add(64 << 10).min(MAX_RESERVE)),
            out: Vec::new(),
            open: None,
            taken: 0,
            prev: None,
            run: 0,
        }
    }

    /// Adds the record of row `i` of `cols` to the open batch.
    fn push(
        &mut self,
        cols: &Columns<'_>,
        i: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let (batch, buf, _) = self.open_at(cols, i);
        batch.push_parts(buf, cols.offset[i], cols.ts[i], key, value, headers);
        self.run += 1;
    }

    /// [`Self::push`] of rows without headers: row `from`, then each row
    /// up to `to` while the run has room and the read has not yet taken
    /// its bytes. Returns the row after the last taken.
    fn push_key_values(&mut self, cols: &Columns<'_>, from: usize, to: usize) -> usize {
        // Most files have no keys and no null values: that shape gets a
        // loop of its own, with nothing to check per row for either.
        if cols.key.is_none() && cols.value.null_count() == 0 {
            let values = cols.value;
            return self.push_rows_with(cols, from, to, |k| (None, Some(values.value(k))));
        }
        self.push_rows_with(cols, from, to, |k| (cols.key(k), cols.value(k)))
    }

    /// [`Self::push_key_values`] with row `k`'s key and value from
    /// `key_value(k)`.
    #[inline(always)]
    fn push_rows_with<'v>(
        &mut self,
        cols: &Columns<'_>,
        from: usize,
        to: usize,
        key_value: impl Fn(usize) -> (Option<&'v [u8]>, Option<&'v [u8]>),
    ) -> usize {
        let max_bytes = self.opts.max_bytes;
        // The run's room (at least one: the caller closed a full run).
        let room = self
            .opts
            .batch_records
            .max(1)
            .saturating_sub(self.run)
            .max(1);
        let to = to.min(from.saturating_add(room));
        let (batch, buf, mut taken) = self.open_at(cols, from);
        let mut next = from;
        let rows = cols.offset[from..to]
            .iter()
            .zip(&cols.ts[from..to])
            .zip(from..to)
            .map_while(|((&offset, &ts), k)| {
                if k > from && taken >= max_bytes {
                    return None;
                }
                let (key, value) = key_value(k);
                taken += record_bytes(key, value);
                next = k + 1;
                Some((offset, ts, key, value))
            });
        batch.extend_key_values(buf, rows);
        self.taken = taken;
        self.run += next - from;
        next
    }

    /// The open batch, its buffer, and the bytes taken so far, opening a
    /// batch at row `i` of `cols` (with that row's batch-level fields) if
    /// none is open.
    #[inline]
    fn open_at(
        &mut self,
        cols: &Columns<'_>,
        i: usize,
    ) -> (&mut BatchBuilder, &mut BytesMut, usize) {
        let Self {
            open,
            buf,
            taken,
            leader_epoch,
            ..
        } = self;
        let batch = match open {
            Some(b) => b,
            None => {
                *taken += layout::HEADER_SIZE;
                let fields = cols.row(i).batch_fields(*leader_epoch);
                open.insert(BatchBuilder::start(
                    buf,
                    &fields,
                    cols.offset[i],
                    cols.ts[i],
                ))
            }
        };
        (batch, buf, *taken)
    }

    /// Finishes the open batch, if any, and ends the run.
    fn close(&mut self) {
        if let Some(b) = self.open.take() {
            b.finish(&mut self.buf);
            let batch = self.buf.split();
            self.out.push(batch);
        }
        self.run = 0;
    }

    /// The batches, and the offset after the last record taken (None if
    /// nothing was).
    pub(crate) fn finish(mut self) -> (Vec<BytesMut>, Option<i64>) {
        self.close();
        (self.out, self.prev.map(|r| r.offset + 1))
    }
}

/// The columns a cold read decodes: all but `partition` (the file is of one
/// partition) and those `implied` adds without decoding, and not the keys,
/// or the headers, when none of `groups` holds a key, or a header (by the
/// statistics of the key and header-key columns: no minimum, no value).
/// That spares decoding a list per row for the headers, a validity bitmap
/// for the keys, and a zstd compressor and decompressor per column chunk
/// left out.
pub(crate) fn read_projection(
    md: &parquet::file::metadata::ParquetMetaData,
    groups: &[usize],
    implied: &crate::implied::Implied,
) -> ProjectionMask {
    let schema = md.file_metadata().schema_descr();
    // Whether the leaf column at `path` may hold a value in `groups`
    // (missing statistics: it may).
    let has_values = |path: &[&str]| {
        let Some(col) = leaf_index(md, path) else {
            return true;
        };
        groups.iter().any(|&g| {
            md.row_groups()
                .get(g)
                .and_then(|rg| rg.columns().get(col))
                .and_then(|c| c.statistics())
                .is_none_or(|st| st.min_bytes_opt().is_some())
        })
    };
    let has_keys = has_values(&["key"]);
    let has_headers = has_values(&["headers", "list", "item", "key"]);
    let roots = schema.root_schema().get_fields().iter().enumerate();
    ProjectionMask::roots(
        schema,
        roots
            .filter(|(_, f)| match f.name() {
                "partition" => false,
                name if implied.implies(name) => false,
                "key" => has_keys,
                "headers" => has_headers,
                _ => true,
            })
            .map(|(i, _)| i),
    )
}

/// Where a column chunk lies in its file, by the footer: from its
/// dictionary page (or first data page, without one) for its compressed
/// size; `None` if either is negative. The parquet crate's own
/// `byte_range` asserts that they are not, a panic on a corrupt footer.
pub(crate) fn chunk_range(
    c: &parquet::file::metadata::ColumnChunkMetaData,
) -> Option<std::ops::Range<u64>> {
    let start = u64::try_from(chunk_start(c)).ok()?;
    let len = u64::try_from(c.compressed_size()).ok()?;
    Some(start..start.checked_add(len)?)
}

/// Where the footer says a column chunk starts: its dictionary page, or
/// its first data page without one.
fn chunk_start(c: &parquet::file::metadata::ColumnChunkMetaData) -> i64 {
    c.dictionary_page_offset().unwrap_or(c.data_page_offset())
}

/// Checks what a reader built on `md` takes on trust, before one is: that
/// every column chunk lies within the file's `len` bytes (the parquet
/// crate asserts a chunk's offsets are not negative: a panic on a corrupt
/// footer), and that the row groups' row counts are not negative and add
/// up (the reader sums them). A file that fails is refused whole.
pub(crate) fn check_chunks(md: &ParquetMetaData, len: u64) -> Result<(), String> {
    let mut rows: i64 = 0;
    for (g, rg) in md.row_groups().iter().enumerate() {
        rows = (rg.num_rows() >= 0)
            .then(|| rows.checked_add(rg.num_rows()))
            .flatten()
            .ok_or_else(|| format!("row group {g} counts {} rows", rg.num_rows()))?;
        for (i, c) in rg.columns().iter().enumerate() {
            match chunk_range(c) {
                Some(r) if r.end <= len => {}
                _ => {
                    return Err(format!(
                        "column chunk {i} of row group {g} lies outside the file's {len} bytes \
                         (offset {}, {} bytes)",
                        chunk_start(c),
                        c.compressed_size()
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The index of the leaf column at `path` (its name's parts) in `md`'s
/// schema.
pub(crate) fn leaf_index(
    md: &parquet::file::metadata::ParquetMetaData,
    path: &[&str],
) -> Option<usize> {
    md.file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == path)
}

/// The offset and timestamp columns' leaf indexes in the segment schema.
pub(crate) const OFFSET_COLUMN: usize = 1;
pub(crate) const TIMESTAMP_COLUMN: usize = 2;

/// Row groups whose offsets can reach `from_offset` (by their statistics).
pub(crate) fn row_groups_from(
    md: &parquet::file::metadata::ParquetMetaData,
    from_offset: i64,
) -> Vec<usize> {
    row_groups_reaching(md, OFFSET_COLUMN, from_offset)
}

/// Row groups whose largest value of the int64 leaf column `column` is at
/// least `value` by their statistics (all of those without them).
pub(crate) fn row_groups_reaching(
    md: &parquet::file::metadata::ParquetMetaData,
    column: usize,
    value: i64,
) -> Vec<usize> {
    md.row_groups()
        .iter()
        .enumerate()
        .filter(
            |(_, rg)| match rg.columns().get(column).and_then(|c| c.statistics()) {
                Some(Statistics::Int64(s)) => s.max_opt().is_none_or(|m| *m >= value),
                _ => true,
            },
        )
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
    ColdCursor::open(file.clone(), opts.from_offset, leader_epoch)?
        .read_blocking(opts.max_bytes, opts.batch_records)
}

/// Like [`read_batches`], but range-reads `object`: the footer, then only
/// the column chunks of the row groups that can hold `from_offset` onward.
pub async fn read_batches_ranged(
    object: crate::StoreObject,
    opts: &ReadOptions,
    leader_epoch: i32,
) -> Result<Vec<BytesMut>, ColdError> {
    ColdCursor::open_ranged(object, opts.from_offset, leader_epoch)
        .await?
        .read(opts.max_bytes, opts.batch_records)
        .await
}
