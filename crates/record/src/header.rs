//! Batch header layout, validation and in-place rewriting.

use crate::codec::{put_bytes, put_varlong};
use bytes::{Buf, BytesMut};
use thiserror::Error;

/// Byte offsets of the v2 batch header fields.
pub mod layout {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
    /// Size of the fixed header; records follow.
    pub const HEADER_SIZE: usize = 61;
    /// Bytes before (and including) the length field: `base_offset` + `batch_length`.
    pub const LOG_OVERHEAD: usize = 12;
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & 0x07 {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
}

/// Timestamp type from attribute bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub const TRANSACTIONAL_BIT: i16 = 0x10;
pub const CONTROL_BIT: i16 = 0x20;

/// Why a batch was refused. Messages name the field that failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("record batch length {0} is invalid")]
    InvalidLength(i32),
    #[error("record batch magic {0} is unsupported (only magic 2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: header says {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch compression codec {0} is unknown")]
    UnknownCompression(i16),
    #[error("record batch declares {count} records but last offset delta {last_offset_delta}")]
    InconsistentCount { count: i32, last_offset_delta: i32 },
    #[error("record batch: {0}")]
    Decompress(#[from] crate::DecompressError),
    #[error("record batch records are malformed: {0}")]
    MalformedRecords(#[from] crate::RecordsError),
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("record set is empty")]
    Empty,
    #[error("control batches may only be written by the broker")]
    ControlBatchFromClient,
}

/// A parsed v2 batch header. Cheap to copy; refers to no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC.
    ///
    /// Fails if `buf` is shorter than the header or than the declared length.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        let h = Self::parse_prefix(buf)?;
        let total = h.total_size();
        if buf.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        Ok(h)
    }

    /// Parses the header at the start of `buf`, which needs to hold only the
    /// header, not the whole batch (for walking headers of stored batches).
    pub fn parse_prefix(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < layout::LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated {
                needed: layout::LOG_OVERHEAD + 5,
                available: buf.len(),
            });
        }
        let batch_length = read_i32(buf, layout::BATCH_LENGTH);
        let magic = buf[layout::MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if (batch_length as i64) < (layout::HEADER_SIZE - layout::LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength(batch_length));
        }
        if buf.len() < layout::HEADER_SIZE {
            return Err(BatchError::Truncated {
                needed: layout::HEADER_SIZE,
                available: buf.len(),
            });
        }
        let mut h = &buf[..layout::HEADER_SIZE];
        let base_offset = h.get_i64();
        let _ = h.get_i32();
        Ok(Self {
            base_offset,
            batch_length,
            partition_leader_epoch: h.get_i32(),
            magic: h.get_i8(),
            crc: h.get_u32(),
            attributes: h.get_i16(),
            last_offset_delta: h.get_i32(),
            base_timestamp: h.get_i64(),
            max_timestamp: h.get_i64(),
            producer_id: h.get_i64(),
            producer_epoch: h.get_i16(),
            base_sequence: h.get_i32(),
            records_count: h.get_i32(),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn total_size(&self) -> usize {
        layout::LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset following this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = &buf[at..at + 4];
    b.get_i32()
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = &buf[at..at + 8];
    b.get_i64()
}

/// CRC-32C of the batch body, as stored in the header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[layout::ATTRIBUTES..])
}

/// Recomputes the CRC of a batch whose covered fields changed and stores it.
pub(crate) fn store_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Limits applied when a client's batch is validated.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// `max.message.bytes`: the largest single batch accepted.
    pub max_batch_bytes: usize,
}

/// The most a compressed batch's records may decompress to, whatever
/// `max.message.bytes` is: the records are held whole while checked (and
/// while the cold tier decodes them).
pub const MAX_RECORDS_BYTES_CAP: usize = 1 << 30;

impl ValidationLimits {
    /// The most a compressed batch's records may decompress to: 16 times
    /// the batch limit, and at least 64 MiB (a megabyte of zstd-compressed
    /// JSON is rarely more than 20; a run of zeros is thousands of times
    /// its compressed size), at most [`MAX_RECORDS_BYTES_CAP`].
    pub fn max_records_bytes(&self) -> usize {
        self.max_batch_bytes
            .saturating_mul(16)
            .clamp(64 << 20, MAX_RECORDS_BYTES_CAP)
    }
}

/// One validated batch inside a produce buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatch {
    /// Byte position of the batch inside the validated buffer.
    pub position: usize,
    /// The batch's header as it is to be stored: its max timestamp that of
    /// its records (a producer's own may differ; [`stored_header`] writes
    /// this one).
    pub header: BatchHeader,
    /// The smallest record timestamp of a create-time batch, -1 ("none")
    /// left out; None when there is none, or for log-append time.
    pub min_timestamp: Option<i64>,
}

/// Validates every batch in a client's record set.
///
/// Checks magic, lengths, CRC-32C, every record (decompressed if need be:
/// see `records::check_records`) against the record count, and the size
/// limit. Control batches are
/// refused: only the broker writes them.
pub fn validate_batches(
    buf: &[u8],
    limits: ValidationLimits,
) -> Result<Vec<ValidatedBatch>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < buf.len() {
        let header = BatchHeader::parse(&buf[pos..])?;
        let size = header.total_size();
        if size > limits.max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                limit: limits.max_batch_bytes,
            });
        }
        let batch = &buf[pos..pos + size];
        let actual = compute_crc(batch);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        if header.records_count < 0
            || header.last_offset_delta < 0
            || (header.records_count > 0 && header.last_offset_delta != header.records_count - 1)
        {
            return Err(BatchError::InconsistentCount {
                count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if header.is_control() {
            return Err(BatchError::ControlBatchFromClient);
        }
        // Every record is parsed (decompressed first if need be), as
        // Kafka's broker does: a batch stored is a batch every reader,
        // the cold tier's offload among them, can decode.
        let records = &batch[layout::HEADER_SIZE..];
        let base = header.base_timestamp;
        let checked = match header.compression()? {
            Compression::None => crate::records::check_records(records, base)?,
            codec => {
                let data =
                    crate::compression::decompress(codec, records, limits.max_records_bytes())?;
                crate::records::check_records(&data, base)?
            }
        };
        let n = checked.count;
        if n != header.records_count as usize {
            return Err(BatchError::InconsistentCount {
                count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        // The batch's max timestamp is its records' largest, whatever the
        // producer wrote there (as Kafka's broker sets it): the log's time
        // index, time-based retention and the cold tier's file statistics
        // all go by it. A log-append-time batch's records take it as
        // theirs, so it stays as sent (the broker restamps it when the
        // topic says so).
        let mut header = header;
        let create_time = header.timestamp_type() == TimestampType::CreateTime;
        if create_time && n > 0 {
            header.max_timestamp = checked.max_timestamp;
        }
        out.push(ValidatedBatch {
            position: pos,
            header,
            min_timestamp: checked.min_timestamp.filter(|_| create_time),
        });
        pos += size;
    }
    Ok(out)
}

/// Rewrites the fields the broker owns: base offset and partition leader
/// epoch. Neither is covered by the CRC, so the batch stays valid.
pub fn assign_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[layout::BASE_OFFSET..layout::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[layout::PARTITION_LEADER_EPOCH..layout::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// The header `batch` is stored with: its own with the base offset and
/// leader epoch the broker assigns and, with `log_append_time`, marked
/// log-append-time with that max timestamp, or else with `max_timestamp`
/// (its records' largest, from [`validate_batches`]), and then the CRC
/// recomputed (over the new header fields and the unchanged records) if
/// either changed a field it covers. The batch is read, never copied: the
/// log writes this header and the batch's records after it, straight from
/// the request (see `strata_log::PartitionLog::append`).
pub fn stored_header(
    batch: &[u8],
    max_timestamp: i64,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Result<[u8; layout::HEADER_SIZE], BatchError> {
    let mut h = [0u8; layout::HEADER_SIZE];
    let from = batch
        .get(..layout::HEADER_SIZE)
        .ok_or(BatchError::Truncated {
            needed: layout::HEADER_SIZE,
            available: batch.len(),
        })?;
    h.copy_from_slice(from);
    assign_offset_and_epoch(&mut h, base_offset, leader_epoch);
    let stated = read_i64(&h, layout::MAX_TIMESTAMP);
    let restamp = match log_append_time {
        Some(now_ms) => {
            mark_log_append_time(&mut h, now_ms);
            true
        }
        None if stated != max_timestamp => {
            h[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8]
                .copy_from_slice(&max_timestamp.to_be_bytes());
            true
        }
        None => false,
    };
    if restamp {
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&h[layout::ATTRIBUTES..]),
            &batch[layout::HEADER_SIZE..],
        );
        h[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(h)
}

/// Sets the log-append-time attribute bit and `now_ms` as max timestamp
/// (the caller recomputes the CRC).
fn mark_log_append_time(header: &mut [u8], now_ms: i64) {
    let attrs = i16::from_be_bytes([header[layout::ATTRIBUTES], header[layout::ATTRIBUTES + 1]])
        | TIMESTAMP_TYPE_BIT;
    header[layout::ATTRIBUTES..layout::ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    header[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
}

/// Marks a batch as log-append-time with `now_ms` as its max timestamp and
/// recomputes the CRC (these fields are covered by it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    mark_log_append_time(batch, now_ms);
    store_crc(batch);
}

/// Re-issues a batch a client built once: shifts its base and max timestamps
/// so the batch starts at `timestamp_ms`, sets the producer id, epoch and
/// base sequence, and recomputes the CRC. Load tools send one encoded batch
/// many times this way instead of encoding every record again.
pub fn restamp_batch(
    batch: &mut [u8],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let h = BatchHeader::parse(batch)?;
    let max = timestamp_ms.saturating_add(h.max_timestamp.saturating_sub(h.base_timestamp));
    batch[layout::BASE_TIMESTAMP..layout::BASE_TIMESTAMP + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    batch[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8].copy_from_slice(&max.to_be_bytes());
    batch[layout::PRODUCER_ID..layout::PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[layout::PRODUCER_EPOCH..layout::PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    batch[layout::BASE_SEQUENCE..layout::BASE_SEQUENCE + 4]
        .copy_from_slice(&base_sequence.to_be_bytes());
    store_crc(batch);
    Ok(())
}

/// Walks a buffer of stored batches, yielding `(position, header)` for each
/// complete batch. Stops (without error) at the first incomplete or invalid
/// header, and reports how many bytes were valid via [`BatchIter::valid_len`].
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    check_crc: bool,
    stopped: Option<BatchError>,
}

impl<'a> BatchIter<'a> {
    /// Iterates trusting lengths only (for reading our own log).
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            check_crc: false,
            stopped: None,
        }
    }

    /// Iterates verifying each batch's CRC (for recovery).
    pub fn verifying(buf: &'a [u8]) -> Self {
        Self {
            check_crc: true,
            ..Self::new(buf)
        }
    }

    /// Bytes consumed by the complete, valid batches yielded so far.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    /// Why iteration stopped before the end of the buffer, if it did.
    pub fn stop_reason(&self) -> Option<&BatchError> {
        self.stopped.as_ref()
    }
}

impl Iterator for BatchIter<'_> {
    type Item = (usize, BatchHeader);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() || self.stopped.is_some() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.stopped = Some(e);
                return None;
            }
        };
        if self.check_crc {
            let actual = compute_crc(&rest[..header.total_size()]);
            if actual != header.crc {
                self.stopped = Some(BatchError::CrcMismatch {
                    expected: header.crc,
                    actual,
                });
                return None;
            }
        }
        let at = self.pos;
        self.pos += header.total_size();
        Some((at, header))
    }
}

/// An uncompressed batch of `records` records keyed `key-000000`, … with
/// values of `value_bytes` bytes, for benchmarks and tests.
pub fn sample_batch(records: usize, value_bytes: usize, timestamp_ms: i64) -> BytesMut {
    let value = vec![b'v'; value_bytes];
    let keys: Vec<String> = (0..records).map(|i| format!("key-{i:06}")).collect();
    let recs: Vec<KeyValue<'_>> = keys
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(&value[..])))
        .collect();
    build_batch(0, timestamp_ms, &recs)
}

/// A record's key and value for [`build_batch`] (`None` is null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed batch from `(key, value)` records, all with the
/// same timestamp. Used by tests; real clients bring their own batches.
pub fn build_batch(base_offset: i64, timestamp_ms: i64, records: &[KeyValue<'_>]) -> BytesMut {
    build_batch_with(base_offset, timestamp_ms, BatchProducer::NONE, records)
}

/// The producer fields and attributes of a batch [`build_batch_with`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub attributes: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchProducer {
    /// No producer: a plain, non-idempotent batch.
    pub const NONE: Self = Self {
        attributes: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// [`build_batch`] with explicit attributes and producer fields.
pub fn build_batch_with(
    base_offset: i64,
    timestamp_ms: i64,
    producer: BatchProducer,
    records: &[KeyValue<'_>],
) -> BytesMut {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = Vec::new();
        rec.push(0u8); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        put_bytes(&mut rec, *key);
        put_bytes(&mut rec, *value);
        put_varlong(&mut rec, 0); // header count
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    seal_batch(
        base_offset,
        timestamp_ms,
        producer,
        records.len() as i32,
        &body,
    )
}

/// A batch of `n` records whose bytes after the header are `body` (as
/// they are: compressed if `producer.attributes` says so), CRC set.
pub(crate) fn seal_batch(
    base_offset: i64,
    timestamp_ms: i64,
    producer: BatchProducer,
    n: i32,
    body: &[u8],
) -> BytesMut {
    let mut b = BytesMut::with_capacity(layout::HEADER_SIZE + body.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(
        &((layout::HEADER_SIZE - layout::LOG_OVERHEAD + body.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&[2u8]);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&producer.attributes.to_be_bytes());
    b.extend_from_slice(&(n - 1).max(0).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&producer.producer_id.to_be_bytes());
    b.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    b.extend_from_slice(&producer.base_sequence.to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(body);
    store_crc(&mut b);
    b
}

#[cfg(test)]
mod tests;
