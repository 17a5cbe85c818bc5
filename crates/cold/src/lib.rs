//! The cold-tier format (DESIGN §4): a sealed segment becomes one Parquet
//! file with a fixed Arrow schema, one row per committed record, readable by
//! DuckDB, Spark, Trino, pyarrow, polars and DataFusion without Strata; and a
//! Parquet file becomes record batches again for Kafka consumers.
//!
//! Invariants:
//! - rows are written in offset order; offsets strictly increase (gaps allowed);
//! - control batches never reach Parquet (aborted transactional records will
//!   be dropped the same way once transactions exist);
//! - reading back yields, record for record, what was written: offsets,
//!   timestamps and their type, keys, values (null kept), headers (order,
//!   repeated keys and null values kept), producer id, epoch and sequence.

mod ahead;
mod cursor;
mod implied;
mod key;
mod read;
mod schema;
mod seek;
mod store;
mod write;

pub use cursor::{ColdCursor, DecodedFile, Decoder};
pub use key::object_key;
pub use read::{read_batches, read_batches_ranged, ReadOptions};
pub use schema::{segment_schema, FORMAT_VERSION};
pub use seek::offset_for_timestamp_ranged;
pub use store::{CacheStats, ColdCache, StoreObject};
pub use write::{
    write_segment, write_segment_file, AbortedRange, SegmentFile, SegmentSummary, SegmentWriter,
    WriteOptions,
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ColdError {
    #[error("cannot decode stored batch: {0}")]
    Batch(#[from] strata_record::CodecError),
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("segment has no committed records")]
    Empty,
    #[error("parquet file does not have the Strata segment schema: {0}")]
    Schema(String),
    #[error("cannot read segment file {0}")]
    Io(String),
    #[error("corrupt segment file: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests;
