//! Kafka RecordBatch v2 ("magic 2") framing.
//!
//! This crate owns the byte layout of record batches: it parses and
//! validates batches as clients send them (every record parsed, compressed
//! ones decompressed to check them, as Kafka's broker does), assigns base
//! offsets and leader epochs in place, walks a buffer of stored batches, and
//! decodes and encodes records for the cold tier. The broker stores and
//! serves batches exactly as received.
//!
//! Invariants:
//! - a [`BatchHeader`] is only produced from a buffer whose declared length fits;
//! - [`validate_batches`] accepts a buffer only if every batch in it has magic 2,
//!   a consistent length, a correct CRC-32C, and records that parse, number
//!   its record count and carry offset deltas 0, 1, 2, …;
//! - rewriting the base offset or the partition leader epoch never invalidates
//!   the CRC, because the CRC covers only the bytes from `attributes` onward.

mod codec;
mod compression;
mod control;
mod header;
mod records;

pub use codec::{
    decode_batch, encode_batch, encode_batch_into, encode_records_into, for_each_record,
    record_timestamps, BatchBuilder, BatchFields, CodecError, DecodedBatch, DecodedRecord,
    RecordRef, RecordView,
};
pub use compression::{compress_batch, DecompressError};
pub use control::{build_control_batch, control_type, ControlType};
pub use header::*;
pub use records::RecordsError;
