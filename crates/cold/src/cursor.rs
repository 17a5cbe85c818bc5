//! A cold read that can be continued: the Parquet reader of one segment
//! file, positioned after the last record it returned.
//!
//! Opening a reader costs more than a consumer's fetch usually decodes:
//! the footer is parsed, a decompressor is set up per column, and the pages
//! holding the wanted offset are decompressed and decoded from the start of
//! their row group. A consumer reading the cold tier asks for the offset
//! right after its last fetch, so the broker keeps the cursor and the next
//! fetch goes on from the rows already decoded.
//!
//! Invariant: a read returns exactly what a fresh read from
//! [`ColdCursor::next_offset`] would (the same records; batch framing may
//! differ where Arrow batches were cut), so keeping a cursor is only ever an
//! optimisation.

use crate::read::{push_rows, row_groups_from, Rebuilder};
use crate::{ColdError, ReadOptions};
use arrow_array::RecordBatch;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
#[allow(deprecated)] // see `open_ranged`
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStream};

/// Rows per decoded Arrow batch.
const ARROW_BATCH_ROWS: usize = 8192;

#[allow(deprecated)]
enum Source {
    /// A file held in memory (the broker's cold cache).
    Memory(ParquetRecordBatchReader),
    /// An object range-read from the store, row group by row group.
    Ranged(ParquetRecordBatchStream<ParquetObjectReader>),
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
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let groups = row_groups_from(builder.metadata(), from_offset);
        let reader = builder
            .with_row_groups(groups)
            .with_batch_size(ARROW_BATCH_ROWS)
            .build()?;
        Ok(Self::new(Source::Memory(reader), from_offset, leader_epoch))
    }

    /// A cursor that range-reads object `key` of `size` bytes: the footer,
    /// then only the column chunks of the row groups that can hold
    /// `from_offset` onward.
    // `ParquetObjectReader` is deprecated in parquet 60 in favour of a
    // hand-written `AsyncFileReader`; it still does exactly the range reads
    // we need. Replacing it is a follow-up.
    #[allow(deprecated)]
    pub async fn open_ranged(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        key: &str,
        size: u64,
        from_offset: i64,
        leader_epoch: i32,
    ) -> Result<Self, ColdError> {
        use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
        let reader = ParquetObjectReader::new(store, object_store::path::Path::from(key))
            .with_file_size(size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let groups = row_groups_from(builder.metadata(), from_offset);
        let stream = builder
            .with_row_groups(groups)
            .with_batch_size(ARROW_BATCH_ROWS)
            .build()?;
        Ok(Self::new(Source::Ranged(stream), from_offset, leader_epoch))
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

    /// Whether reads decode a file held in memory (CPU only, no I/O), so a
    /// caller may run them on a blocking thread.
    pub fn in_memory(&self) -> bool {
        matches!(self.source, Source::Memory(_))
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
            Source::Memory(r) => r.next().transpose()?,
            Source::Ranged(s) => s.next().await.transpose()?,
        })
    }
}

#[cfg(test)]
mod tests;
