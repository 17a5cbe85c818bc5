//! A cold read that can be continued: the Parquet reader of one segment
//! file, positioned after the last record it returned.
//!
//! Opening a reader costs more than a consumer's fetch usually decodes:
//! the footer is parsed, a decompressor is set up per column, and the pages
//! holding the wanted offset are decompressed and decoded from their start
//! (the pages before them in the row group are skipped, see [`Selection`]).
//! A consumer reading the cold tier asks for the offset right after its
//! last fetch, so the broker keeps the cursor and the next fetch goes on
//! from the rows already decoded.
//!
//! A read is two kinds of work: decoding Parquet pages into Arrow batches,
//! and rebuilding record batches from their rows (each about half). A
//! cursor can hand the first to a [`Decoder`] ([`ColdCursor::split`]) that
//! the caller runs on another thread, so one consumer's read uses two cores.
//!
//! Invariant: a read returns exactly what a fresh read from
//! [`ColdCursor::next_offset`] would (the same records), so keeping a
//! cursor, or splitting it, is only ever an optimisation. A split cursor
//! ends only when its decoder says the file ended: a decoder that stops
//! without saying so (dropped, failed) is an error, never an early end of
//! the file.

use crate::implied::Implied;
use crate::read::{
    check_chunks, chunk_range, push_rows, read_projection, row_groups_from, Rebuilder,
    OFFSET_COLUMN,
};
use crate::schema::read_schema;
use crate::store::StoreObject;
use crate::{ColdError, ReadOptions};
use arrow_array::RecordBatch;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{
    ArrowReaderBuilder, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use tokio::sync::mpsc;

/// How cursors decode a file: with [`read_schema`]'s value views.
fn read_options() -> ArrowReaderOptions {
    ArrowReaderOptions::new().with_schema(read_schema())
}

/// A reader of `file`, held in memory, once its footer checks out
/// ([`check_chunks`]; a ranged reader's is checked where the store loads
/// it).
fn memory_reader(file: Bytes) -> Result<ParquetRecordBatchReaderBuilder<Bytes>, ColdError> {
    let len = file.len() as u64;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, read_options())?;
    check_chunks(builder.metadata(), len).map_err(ColdError::Corrupt)?;
    Ok(builder)
}

/// Rows per decoded Arrow batch.
pub(crate) const ARROW_BATCH_ROWS: usize = 8192;

/// What a cursor at `from_offset` reads of a file (in memory or ranged):
/// the row groups that can hold it onward (by their offset statistics),
/// the columns it needs (not those their statistics imply, see
/// [`Implied`]), and the rows: all but those of the first row group that
/// are surely below `from_offset` ([`rows_below`]). The reader skips
/// those, and a page holding only such rows whole, unread (a consumer
/// starting in the middle of a row group does not decompress the pages
/// before its offset).
struct Selection {
    groups: Vec<usize>,
    columns: ProjectionMask,
    rows: Option<RowSelection>,
    implied: Implied,
}

fn selection(md: &ParquetMetaData, from_offset: i64) -> Selection {
    let groups = row_groups_from(md, from_offset);
    let skip = groups
        .first()
        .and_then(|&g| md.row_groups().get(g))
        .map_or(0, |rg| rows_below(rg, from_offset));
    let implied = Implied::plan(md, &groups, skip);
    let columns = read_projection(md, &groups, &implied);
    let total: i64 = groups
        .iter()
        .filter_map(|&g| md.row_groups().get(g))
        .fold(0i64, |t, rg| t.saturating_add(rg.num_rows()));
    let rows = (skip > 0).then(|| {
        let rest = usize::try_from(total).unwrap_or(0).saturating_sub(skip);
        RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(rest)])
    });
    Selection {
        groups,
        columns,
        rows,
        implied,
    }
}

/// Rows at the start of row group `rg` whose offsets are surely below
/// `from_offset`, by the group's statistics alone: offsets strictly
/// increase, so of `n` rows with largest offset `max`, row `r` holds at
/// most `max - (n - 1 - r)` (exactly that when no offset is missing, the
/// usual case). Rows past these that are still below `from_offset` are
/// decoded and passed over as before.
fn rows_below(rg: &RowGroupMetaData, from_offset: i64) -> usize {
    let n = rg.num_rows();
    let max = match rg.columns().get(OFFSET_COLUMN).and_then(|c| c.statistics()) {
        Some(Statistics::Int64(s)) => s.max_opt().copied(),
        _ => None,
    };
    let Some(max) = max else { return 0 };
    let lowest_first = max.saturating_sub(n.saturating_sub(1));
    usize::try_from(from_offset.saturating_sub(lowest_first).clamp(0, n.max(0))).unwrap_or(0)
}

/// Reads what a cursor at `from_offset` reads ([`selection`]).
fn select_from<T>(
    builder: ArrowReaderBuilder<T>,
    from_offset: i64,
) -> (ArrowReaderBuilder<T>, Implied) {
    let sel = selection(builder.metadata(), from_offset);
    select(builder, sel)
}

/// Reads what `sel` selects, in Arrow batches of `ARROW_BATCH_ROWS`; and
/// the columns to add to each batch the reader returns.
fn select<T>(builder: ArrowReaderBuilder<T>, sel: Selection) -> (ArrowReaderBuilder<T>, Implied) {
    let builder = builder
        .with_row_groups(sel.groups)
        .with_projection(sel.columns)
        .with_batch_size(ARROW_BATCH_ROWS);
    let builder = match sel.rows {
        Some(rows) => builder.with_row_selection(rows),
        None => builder,
    };
    (builder, sel.implied)
}

/// The ranges the async reader asks for, row group by row group, to read
/// `columns` of `groups`: each leaf column's chunk, in leaf order.
fn chunk_ranges(
    md: &ParquetMetaData,
    groups: &[usize],
    columns: &ProjectionMask,
) -> Vec<Vec<std::ops::Range<u64>>> {
    groups
        .iter()
        .filter_map(|&g| md.row_groups().get(g))
        .map(|rg| {
            (0..rg.num_columns())
                .filter(|&i| columns.leaf_included(i))
                .filter_map(|i| rg.columns().get(i).and_then(chunk_range))
                .collect()
        })
        .collect()
}

/// A file's Arrow batches: decoded from `from`, with the columns the
/// reader left undecoded added ([`Implied`]).
struct Rows {
    from: Origin,
    implied: Implied,
    /// Set once the decoder panicked ([`Panicked`]).
    failed: bool,
}

/// Where a file's Arrow batches are decoded from.
enum Origin {
    /// A file held in memory (the broker's cold cache).
    Memory(ParquetRecordBatchReader),
    /// An object range-read from the store, row group by row group.
    Ranged(ParquetRecordBatchStream<StoreObject>),
}

impl Rows {
    fn memory(
        (builder, implied): (ParquetRecordBatchReaderBuilder<Bytes>, Implied),
    ) -> Result<Self, ColdError> {
        Ok(Self {
            from: Origin::Memory(builder.build()?),
            implied,
            failed: false,
        })
    }

    fn in_memory(&self) -> bool {
        matches!(self.from, Origin::Memory(_))
    }

    async fn next(&mut self) -> Option<Result<RecordBatch, ColdError>> {
        if self.failed {
            return Some(Err(decoder_panicked()));
        }
        let b = match &mut self.from {
            Origin::Memory(r) => next_guarded(r),
            Origin::Ranged(s) => next_guarded_async(s).await,
        };
        self.implied_on(b)
    }

    /// [`Self::next`] of a file in memory; an error for a ranged file
    /// (its reads wait on the store).
    fn next_blocking(&mut self) -> Option<Result<RecordBatch, ColdError>> {
        if self.failed {
            return Some(Err(decoder_panicked()));
        }
        let b = match &mut self.from {
            Origin::Memory(r) => next_guarded(r),
            Origin::Ranged(_) => {
                return Some(Err(ColdError::Io(
                    "a ranged cold decoder cannot decode without an async runtime".into(),
                )))
            }
        };
        self.implied_on(b)
    }

    /// A decoded batch with the implied columns added; a decoder that
    /// panicked is not asked again.
    fn implied_on(&mut self, b: Guarded) -> Option<Result<RecordBatch, ColdError>> {
        match b {
            Ok(b) => Some(b?.and_then(|b| self.implied.apply(b))),
            Err(Panicked) => {
                self.failed = true;
                Some(Err(decoder_panicked()))
            }
        }
    }
}

/// The parquet crate asserts, rather than fails, on some corrupt pages (a
/// bit width past 64, a run longer than its buffer): one corrupt object
/// must cost its read, not the thread or task decoding it (a broker's
/// connection, or a decoding thread a cursor waits on). A reader that
/// panicked is left mid-page and is not asked again: its error is its
/// last item.
pub(crate) struct Panicked;

/// A reader's next batch, or that its decoder panicked.
pub(crate) type Guarded = Result<Option<Result<RecordBatch, ColdError>>, Panicked>;

pub(crate) fn decoder_panicked() -> ColdError {
    ColdError::Corrupt("the Parquet decoder gave up on a corrupt page".into())
}

/// The next batch of a file in memory.
fn next_guarded(r: &mut ParquetRecordBatchReader) -> Guarded {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.next()))
        .map(|b| b.map(|b| b.map_err(ColdError::from)))
        .map_err(|_| Panicked)
}

/// The next batch of a ranged read (or a seek's).
pub(crate) async fn next_guarded_async<T>(s: &mut ParquetRecordBatchStream<T>) -> Guarded
where
    T: parquet::arrow::async_reader::AsyncFileReader + Unpin + Send + 'static,
{
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(s.next())
        .catch_unwind()
        .await
        .map(|b| b.map(|b| b.map_err(ColdError::from)))
        .map_err(|_| Panicked)
}

enum Source {
    /// The cursor decodes itself.
    Direct(Box<Rows>),
    /// A [`Decoder`] decodes elsewhere and passes the batches on.
    Split(mpsc::Receiver<Decoded>),
}

/// What a [`Decoder`] passes to its cursor.
enum Decoded {
    Batch(Result<RecordBatch, ColdError>),
    /// The file has no more rows.
    End,
}

/// One step of a [`Decoder`]: a decoded Arrow batch, an error, or the end
/// of the file, to be passed to the cursor with [`Decoder::pass`].
struct Step(Decoded);

/// The decoding half of a split cursor ([`ColdCursor::split`]): decodes
/// the file's Arrow batches and passes them to the cursor one at a time
/// (one waiting for the cursor at most), run by the caller: on a thread of
/// its own for a file in memory ([`Decoder::run_blocking`]: decoding only
/// computes), as a task for a ranged one ([`Decoder::run`]).
#[must_use = "the split cursor waits for batches from its decoder"]
pub struct Decoder {
    rows: Rows,
    tx: mpsc::Sender<Decoded>,
}

impl Decoder {
    /// Whether the file is in memory (run with [`Self::run_blocking`]).
    pub fn in_memory(&self) -> bool {
        self.rows.in_memory()
    }

    /// Decodes the next Arrow batch, waiting on the store for a ranged file.
    async fn decode(&mut self) -> Step {
        Self::step(self.rows.next().await)
    }

    /// Decodes the next Arrow batch of a file in memory; an error for a
    /// ranged file (its reads wait on the store).
    fn decode_blocking(&mut self) -> Step {
        Self::step(self.rows.next_blocking())
    }

    fn step(next: Option<Result<RecordBatch, ColdError>>) -> Step {
        Step(match next {
            Some(b) => Decoded::Batch(b),
            None => Decoded::End,
        })
    }

    /// [`Self::pass`] from a thread of the caller's own, outside any async
    /// runtime (it blocks the thread; within a runtime it would panic).
    fn pass_blocking(&mut self, step: Step) -> bool {
        let more = matches!(step.0, Decoded::Batch(Ok(_)));
        self.tx.blocking_send(step.0).is_ok() && more
    }

    /// Decodes and passes batches on until there is nothing more to do
    /// (see [`Self::pass`]).
    pub async fn run(mut self) {
        loop {
            let step = self.decode().await;
            if !self.pass(step).await {
                return;
            }
        }
    }

    /// [`Self::run`] for a file in memory, on a thread of the caller's own
    /// outside any async runtime (it blocks the thread).
    pub fn run_blocking(mut self) {
        loop {
            let step = self.decode_blocking();
            if !self.pass_blocking(step) {
                return;
            }
        }
    }

    /// Passes a step to the cursor, waiting while it has one it has not
    /// taken. False once there is nothing more to do: the end of the file
    /// or an error was passed, or the cursor is gone.
    async fn pass(&mut self, step: Step) -> bool {
        let more = matches!(step.0, Decoded::Batch(Ok(_)));
        self.tx.send(step.0).await.is_ok() && more
    }
}

/// An open reader of one segment file; see the module docs.
pub struct ColdCursor {
    source: Source,
    /// The Arrow batch the last read stopped in, and the first row of it
    /// not yet returned.
    rest: Option<(RecordBatch, usize)>,
    next_offset: i64,
    leader_epoch: i32,
    exhausted: bool,
}

impl ColdCursor {
    /// A cursor over a file held in memory, at `from_offset`.
    pub fn open(file: Bytes, from_offset: i64, leader_epoch: i32) -> Result<Self, ColdError> {
        let builder = memory_reader(file)?;
        let rows = Rows::memory(select_from(builder, from_offset))?;
        Ok(Self::new(
            Source::Direct(Box::new(rows)),
            from_offset,
            leader_epoch,
        ))
    }

    /// A cursor that range-reads `object`: the footer, then only the
    /// column chunks of the row groups that can hold `from_offset` onward
    /// (each from the object's cache, if it has one and holds it).
    pub async fn open_ranged(
        object: StoreObject,
        from_offset: i64,
        leader_epoch: i32,
    ) -> Result<Self, ColdError> {
        use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
        let (object, ahead) = object.with_read_ahead();
        let builder =
            ParquetRecordBatchStreamBuilder::new_with_options(object, read_options()).await?;
        let sel = selection(builder.metadata(), from_offset);
        // With no offset index loaded the reader asks for whole column
        // chunks, with or without a row selection.
        ahead.plan(chunk_ranges(builder.metadata(), &sel.groups, &sel.columns));
        let (builder, implied) = select(builder, sel);
        let rows = Rows {
            from: Origin::Ranged(builder.build()?),
            implied,
            failed: false,
        };
        Ok(Self::new(
            Source::Direct(Box::new(rows)),
            from_offset,
            leader_epoch,
        ))
    }

    fn new(source: Source, from_offset: i64, leader_epoch: i32) -> Self {
        Self {
            source,
            rest: None,
            next_offset: from_offset,
            leader_epoch,
            exhausted: false,
        }
    }

    /// Where the next read starts: after the last record returned.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Whether the file has nothing past [`Self::next_offset`].
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// Whether reads decode a file held in memory (CPU only, no I/O), or
    /// take batches from a decoder, so a caller may run them on a blocking
    /// thread.
    pub fn in_memory(&self) -> bool {
        match &self.source {
            Source::Direct(rows) => rows.in_memory(),
            Source::Split(_) => true,
        }
    }

    /// Hands decoding to a [`Decoder`], which the caller runs (on another
    /// thread, so that decoding the next Arrow batch overlaps rebuilding
    /// this one); this cursor then rebuilds what the decoder passes it.
    /// None for a cursor already split.
    pub fn split(&mut self) -> Option<Decoder> {
        // One batch waits for the cursor while the next is decoded.
        let (tx, rx) = mpsc::channel(1);
        match std::mem::replace(&mut self.source, Source::Split(rx)) {
            Source::Direct(rows) => Some(Decoder { rows: *rows, tx }),
            split => {
                self.source = split;
                None
            }
        }
    }

    /// The next rebuilt batches from [`Self::next_offset`], up to about
    /// `max_bytes` (at least one batch), with at most `batch_records`
    /// records each. Empty once the file is exhausted.
    pub async fn read(
        &mut self,
        max_bytes: usize,
        batch_records: usize,
    ) -> Result<Vec<BytesMut>, ColdError> {
        let opts = ReadOptions {
            from_offset: self.next_offset,
            max_bytes,
            batch_records,
        };
        if self.exhausted {
            // (A split cursor's decoder is gone by now: ask it nothing.)
            return Ok(Vec::new());
        }
        let mut out = Rebuilder::new(&opts, self.leader_epoch);
        let mut next = self.rest.take();
        loop {
            let (rb, start) = match next.take() {
                Some(rest) => rest,
                None => match self.next_arrow_batch().await? {
                    Some(rb) => (rb, 0),
                    None => {
                        self.exhausted = true;
                        break;
                    }
                },
            };
            if let Some(stop) = push_rows(&rb, start, &mut out)? {
                self.rest = Some((rb, stop));
                break;
            }
        }
        let (batches, next_offset) = out.finish();
        if let Some(o) = next_offset {
            self.next_offset = o;
        }
        Ok(batches)
    }

    /// [`Self::read`] for a cursor over a file in memory, whose reads never
    /// wait on I/O (a ranged cursor's would block the thread on it).
    pub fn read_blocking(
        &mut self,
        max_bytes: usize,
        batch_records: usize,
    ) -> Result<Vec<BytesMut>, ColdError> {
        if !self.in_memory() {
            return Err(ColdError::Io(
                "a ranged cold cursor cannot be read without an async runtime".into(),
            ));
        }
        futures::executor::block_on(self.read(max_bytes, batch_records))
    }

    async fn next_arrow_batch(&mut self) -> Result<Option<RecordBatch>, ColdError> {
        Ok(match &mut self.source {
            Source::Direct(rows) => rows.next().await.transpose()?,
            Source::Split(rx) => match rx.recv().await {
                Some(Decoded::Batch(b)) => Some(b?),
                Some(Decoded::End) => None,
                None => {
                    return Err(ColdError::Io(
                        "the cold decoder stopped before the end of the file".into(),
                    ))
                }
            },
        })
    }
}

/// A file's rows decoded into Arrow batches once, to rebuild record
/// batches from them again and again: what the benchmarks use to time the
/// rebuild apart from the Parquet decoding (a cold read's two halves run
/// on two threads, see [`ColdCursor::split`]). Not an API for the broker.
#[doc(hidden)]
pub struct DecodedFile {
    batches: Vec<RecordBatch>,
}

#[doc(hidden)]
impl DecodedFile {
    /// Decodes every row of `file` as a cursor from its start would.
    pub fn decode(file: Bytes) -> Result<Self, ColdError> {
        let builder = memory_reader(file)?;
        let mut rows = Rows::memory(select_from(builder, 0))?;
        let mut batches = Vec::new();
        while let Some(b) = rows.next_blocking() {
            batches.push(b?);
        }
        Ok(Self { batches })
    }

    /// Rows decoded.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Rebuilds every row as a consumer's fetches of `max_bytes` from one
    /// cursor would get them; returns how many record batches that made
    /// and the offset after the last record.
    pub fn rebuild(
        &self,
        max_bytes: usize,
        batch_records: usize,
    ) -> Result<(usize, i64), ColdError> {
        let (mut made, mut at, mut next_offset) = (0, (0, 0), 0);
        while at.0 < self.batches.len() {
            let opts = ReadOptions {
                from_offset: next_offset,
                max_bytes,
                batch_records,
            };
            let mut out = Rebuilder::new(&opts, 0);
            while let Some(rb) = self.batches.get(at.0) {
                match push_rows(rb, at.1, &mut out)? {
                    Some(stop) => {
                        at.1 = stop;
                        break;
                    }
                    None => at = (at.0 + 1, 0),
                }
            }
            let (batches, next) = out.finish();
            made += batches.len();
            next_offset = next.unwrap_or(next_offset);
        }
        Ok((made, next_offset))
    }
}

#[cfg(test)]
mod tests;
