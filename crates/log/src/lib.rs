//! The local partition log (DESIGN §3): one directory per partition replica
//! holding segment files `<base_offset:020>.log` of stored RecordBatches back
//! to back, each with a sparse offset index (`.index`) and time index
//! (`.timeindex`) beside it.
//!
//! The log knows nothing of Kafka requests or of the network. It appends
//! validated batches (assigning offsets and the leader epoch), reads whole
//! batches from an offset, finds offsets by timestamp, rolls, recovers a torn
//! tail on open and applies retention. Time is always passed in (`now_ms`) so
//! callers and tests control the clock.
//!
//! Invariants:
//! - offsets are dense and strictly increasing across segments: each segment's
//!   base offset equals the previous segment's next offset;
//! - only the last (active) segment is ever written; a rolled segment is
//!   sealed and fsync'd in the background, and at most one sealed segment's
//!   fsync is pending at a time (`seal.rs`), so every segment but the last
//!   two is durable;
//! - on open, the last two segments are truncated to their last batch whose
//!   length and CRC check (the others to their last whole batch, and then,
//!   if cut, verified whole like the last); a segment cut short that way
//!   takes every later segment with it, so offsets stay dense. Nothing
//!   before the first bad batch is lost.

mod behind;
mod epochs;
mod error;
mod index;
mod log;
mod readbuf;
mod seal;
mod segment;
mod view;

pub use behind::{Stats as WriteBehindStats, WriteBehind, CHUNK_BYTES as WRITE_BEHIND_CHUNK_BYTES};
pub use epochs::EpochHistory;
pub use error::LogError;
pub use log::{
    AppendInfo, Appended, FlushHandle, LogConfig, PartitionLog, ReadResult, SegmentInfo,
};
pub use view::LogRead;

#[cfg(test)]
mod tests;
