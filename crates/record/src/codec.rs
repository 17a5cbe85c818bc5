//! Record-level view of a stored batch: decoding every record (decompressing
//! if needed), and encoding records back into an uncompressed batch. Used by
//! the cold tier, which converts segments to Parquet and back; the hot path
//! never decodes records.
//!
//! Unlike `kafka_protocol`'s record decoder, headers are kept as a list, so
//! repeated header keys survive a round trip.

use crate::header::{layout, BatchHeader, Compression, TimestampType};
use crate::records::{next_record, ParsedRecord};
use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

mod spare;
use spare::write_spare;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("cannot parse batch header: {0}")]
    Header(#[from] crate::BatchError),
    #[error(transparent)]
    Decompress(#[from] crate::DecompressError),
    #[error("malformed records: {0}")]
    Records(#[from] crate::RecordsError),
    #[error("the batch declares {declared} records but holds {actual}")]
    Count { declared: i32, actual: usize },
}

/// One record with the batch fields it needs to stand alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when the batch has no producer sequence.
    pub sequence: i32,
    pub leader_epoch: i32,
}

/// A decoded batch: its header and its records.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<DecodedRecord>,
}

/// The most a stored batch's records may decompress to for
/// [`decode_batch`]: what produce allows at most
/// ([`crate::ValidationLimits::max_records_bytes`]), so every stored batch
/// decodes.
pub const MAX_DECODED_BYTES: usize = crate::header::MAX_RECORDS_BYTES_CAP;

/// Decodes every record of one stored batch (`batch` is exactly one batch).
/// Its records must parse as the produce check (`records::check_records`)
/// requires of a producer's, and number what the header says.
pub fn decode_batch(batch: &Bytes) -> Result<DecodedBatch, CodecError> {
    let open = OpenBatch::new(batch)?;
    let h = open.header;
    // Keys and values slice the batch itself when it is uncompressed.
    let data = match open.decompressed {
        None => batch.slice_ref(open.body),
        Some(d) => Bytes::from(d),
    };
    let declared = usize::try_from(h.records_count).unwrap_or(0);
    // Reserved by what the bytes can hold, not by what the header claims.
    let mut records = Vec::with_capacity(declared.min(data.len() / MIN_RECORD_BYTES));
    let ts_type = h.timestamp_type();
    visit_records(&h, &data, |r| {
        records.push(DecodedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            timestamp_type: ts_type,
            key: r.key.map(|k| data.slice_ref(k)),
            value: r.value.map(|v| data.slice_ref(v)),
            headers: r
                .headers()
                .map(|(k, v)| {
                    let key = String::from_utf8_lossy(k).into_owned();
                    (key, v.map(|v| data.slice_ref(v)))
                })
                .collect(),
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            sequence: r.sequence,
            leader_epoch: h.partition_leader_epoch,
        });
        Ok::<(), CodecError>(())
    })?;
    Ok(DecodedBatch { header: h, records })
}

/// One record of a stored batch, borrowed from the batch's (decompressed)
/// records; what all records of the batch share is in its [`BatchHeader`].
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// -1 when the batch has no producer sequence.
    pub sequence: i32,
    parsed: ParsedRecord<'a>,
}

impl<'a> RecordView<'a> {
    /// The record's headers in order: keys as stored (UTF-8 in batches
    /// checked at produce), values `None` when null.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        self.parsed.headers()
    }
}

/// Calls `f` with every record of one stored batch (`batch` is exactly one
/// batch), in order, borrowed rather than copied: what [`decode_batch`]
/// decodes, without a buffer per record. Decompresses if needed. Stops at
/// the first error `f` returns; fails as [`decode_batch`] does on a batch
/// that does not decode (after `f` saw the records before the bad one).
pub fn for_each_record<E: From<CodecError>>(
    batch: &[u8],
    mut f: impl FnMut(&BatchHeader, RecordView<'_>) -> Result<(), E>,
) -> Result<BatchHeader, E> {
    let open = OpenBatch::new(batch)?;
    let h = open.header;
    visit_records(&h, open.records(), |r| f(&h, r))?;
    Ok(h)
}

/// One stored batch, its header parsed and its records decompressed if
/// they were stored compressed.
struct OpenBatch<'a> {
    header: BatchHeader,
    /// The records' bytes as stored.
    body: &'a [u8],
    /// Those decompressed; None when stored uncompressed.
    decompressed: Option<Vec<u8>>,
}

impl<'a> OpenBatch<'a> {
    fn new(batch: &'a [u8]) -> Result<Self, CodecError> {
        let header = BatchHeader::parse(batch)?;
        let body = batch.get(layout::HEADER_SIZE..header.total_size()).ok_or(
            crate::BatchError::Truncated {
                needed: header.total_size(),
                available: batch.len(),
            },
        )?;
        let decompressed = match header.compression()? {
            Compression::None => None,
            codec => Some(crate::compression::decompress(
                codec,
                body,
                MAX_DECODED_BYTES,
            )?),
        };
        Ok(Self {
            header,
            body,
            decompressed,
        })
    }

    /// The records' bytes, uncompressed.
    fn records(&self) -> &[u8] {
        self.decompressed.as_deref().unwrap_or(self.body)
    }
}

/// Calls `f` with each record of `data` (the records of the batch `h`
/// heads); checks that they number what the header declares.
fn visit_records<'a, E: From<CodecError>>(
    h: &BatchHeader,
    data: &'a [u8],
    mut f: impl FnMut(RecordView<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = data;
    let mut n = 0usize;
    let ts_type = h.timestamp_type();
    while !rest.is_empty() {
        let r = next_record(&mut rest, n).map_err(CodecError::from)?;
        let timestamp = match ts_type {
            TimestampType::LogAppendTime => h.max_timestamp,
            TimestampType::CreateTime => h.base_timestamp.wrapping_add(r.timestamp_delta),
        };
        f(RecordView {
            offset: h.base_offset.wrapping_add(r.offset_delta),
            timestamp,
            key: r.key,
            value: r.value,
            sequence: if h.base_sequence < 0 {
                -1
            } else {
                h.base_sequence.wrapping_add(r.offset_delta as i32)
            },
            parsed: r,
        })?;
        n += 1;
    }
    if usize::try_from(h.records_count).unwrap_or(0) != n {
        return Err(CodecError::Count {
            declared: h.records_count,
            actual: n,
        }
        .into());
    }
    Ok(())
}

/// The fewest bytes a record takes: length, attributes, timestamp and
/// offset deltas, key and value lengths, header count.
const MIN_RECORD_BYTES: usize = 7;

/// Offsets and timestamps of every record in one stored batch, decompressing
/// if needed. Used only on the rare by-timestamp lookup path.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, CodecError> {
    let mut out = Vec::new();
    for_each_record(batch, |_, r| {
        out.push((r.offset, r.timestamp));
        Ok::<(), CodecError>(())
    })?;
    Ok(out)
}

/// Bytes a varint takes, by the leading zeros of its (zigzag) value: 7
/// bits per byte, and 0 still takes one. A table, because this runs for
/// every field of every rebuilt record and a division by 7 showed there.
const VARINT_LEN: [u8; 65] = {
    let mut t = [0u8; 65];
    let mut lz = 0;
    while lz <= 64 {
        let bits = 64 - lz;
        t[lz] = if bits == 0 { 1 } else { bits.div_ceil(7) as u8 };
        lz += 1;
    }
    t
};

/// Kafka's zigzag mapping of a signed varlong: small magnitudes, small codes.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes a zigzag varlong of `v` takes.
#[inline]
fn varlong_len(v: i64) -> usize {
    let z = zigzag(v);
    VARINT_LEN[z.leading_zeros() as usize] as usize
}

/// Bytes a nullable length-prefixed field takes.
#[inline]
fn field_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

/// Bytes a zigzag varlong takes at most.
const MAX_VARLONG: usize = 10;

/// Writes `v` as a zigzag varlong at the start of `out` (room for
/// `MAX_VARLONG` bytes); returns how many bytes it took.
fn varlong_into(out: &mut [u8], v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 0;
    while z >= 0x80 {
        out[n] = (z as u8) | 0x80;
        n += 1;
        z >>= 7;
    }
    out[n] = z as u8;
    n + 1
}

pub(crate) fn put_varlong(out: &mut impl BufMut, v: i64) {
    let mut block = [0u8; MAX_VARLONG];
    let n = varlong_into(&mut block, v);
    out.put_slice(&block[..n]);
}

pub(crate) fn put_bytes(out: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// The fields a batch carries once for all its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    pub timestamp_type: TimestampType,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The first record's sequence; -1 when the batch has none.
    pub base_sequence: i32,
    pub leader_epoch: i32,
}

/// One record's own fields, borrowed (e.g. from Arrow arrays), so a batch
/// can be encoded without copying each key and value into an owned record
/// first.
#[derive(Debug, Clone, Default)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Encodes records (non-empty, offsets strictly increasing, all from one
/// producer and of one timestamp type) as one uncompressed v2 batch with a
/// valid CRC. Offset gaps are kept as gaps in the offset deltas.
pub fn encode_batch(records: &[DecodedRecord]) -> BytesMut {
    let mut b = BytesMut::new();
    encode_batch_into(records, &mut b);
    b
}

/// [`encode_batch`], appending the batch to `b` (so batches rebuilt one
/// after another can share one buffer).
pub fn encode_batch_into(records: &[DecodedRecord], b: &mut BytesMut) {
    let Some(first) = records.first() else {
        return;
    };
    let fields = BatchFields {
        timestamp_type: first.timestamp_type,
        producer_id: first.producer_id,
        producer_epoch: first.producer_epoch,
        base_sequence: first.sequence,
        leader_epoch: first.leader_epoch,
    };
    let refs: Vec<RecordRef<'_>> = records
        .iter()
        .map(|r| RecordRef {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect(),
        })
        .collect();
    encode_records_into(&fields, &refs, b);
}

/// Appends one uncompressed v2 batch of `records` (as in [`encode_batch`])
/// with the batch-level `fields` to `b` (a [`BatchBuilder`] fed each
/// record in turn).
pub fn encode_records_into(fields: &BatchFields, records: &[RecordRef<'_>], b: &mut BytesMut) {
    let Some(first) = records.first() else {
        return;
    };
    let estimate: usize = records
        .iter()
        .map(|r| 24 + r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len))
        .sum();
    b.reserve(layout::HEADER_SIZE + estimate);
    let mut batch = BatchBuilder::start(b, fields, first.offset, first.timestamp);
    for r in records {
        batch.push(b, r);
    }
    batch.finish(b);
}

/// One uncompressed v2 batch written record by record straight into a
/// buffer: the header first with what is not known yet left blank, each
/// record as it comes (its length computed first, so nothing is staged),
/// then the blanks and the CRC filled in. Records must come in increasing
/// offset order and share the batch's [`BatchFields`]. Timestamps are
/// deltas from the first record's, as Kafka's own producer writes them
/// (negative when a later record is older).
#[derive(Debug)]
pub struct BatchBuilder {
    /// Where the batch starts in the buffer.
    start: usize,
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset: i64,
    records: i32,
}

impl BatchBuilder {
    /// Writes the header of a batch whose first record is at `offset` with
    /// `timestamp` to the end of `b`.
    pub fn start(b: &mut BytesMut, fields: &BatchFields, offset: i64, timestamp: i64) -> Self {
        let start = b.len();
        let attributes: i16 = match fields.timestamp_type {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => 0x08,
        };
        b.put_i64(offset);
        b.put_i32(0); // batch length, set by finish
        b.put_i32(fields.leader_epoch);
        b.put_u8(2);
        b.put_u32(0); // CRC, set by finish
        b.put_i16(attributes);
        b.put_i32(0); // last offset delta, set by finish
        b.put_i64(timestamp);
        b.put_i64(timestamp); // max timestamp, set by finish
        b.put_i64(fields.producer_id);
        b.put_i16(fields.producer_epoch);
        b.put_i32(fields.base_sequence);
        b.put_i32(0); // record count, set by finish
        Self {
            start,
            base_offset: offset,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            last_offset: offset,
            records: 0,
        }
    }

    /// Appends one record to the batch this builder started in `b`.
    pub fn push(&mut self, b: &mut BytesMut, r: &RecordRef<'_>) {
        self.push_parts(b, r.offset, r.timestamp, r.key, r.value, &r.headers);
    }

    /// [`Self::push`] of a record given field by field (no `RecordRef`
    /// assembled per record).
    pub fn push_parts(
        &mut self,
        b: &mut BytesMut,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let headers_len = varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| field_len(Some(k)) + field_len(*v))
                .sum::<usize>();
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        write_record(
            b,
            offset - self.base_offset,
            ts_delta,
            key,
            value,
            headers_len,
            |w| {
                w.varlong(headers.len() as i64);
                for (k, v) in headers {
                    w.field(Some(k));
                    w.field(*v);
                }
            },
        );
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset = offset;
        self.records += 1;
    }

    /// [`Self::push_parts`] of a record without headers (the shape of most
    /// records), compiled for it: nothing to count or write per header.
    /// [`Self::extend_key_values`] of one record; a run of them (as the
    /// cold rebuild writes) is cheaper through that.
    pub fn push_key_value(
        &mut self,
        b: &mut BytesMut,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        self.extend_key_values(b, std::iter::once((offset, timestamp, key, value)));
    }

    /// [`Self::push_key_value`] of each of `records` (offset, timestamp,
    /// key, value) in turn. Generic and inlined, so a caller's loop over
    /// its rows and this one over the records are one loop, with the
    /// builder's fields in registers rather than loaded and stored per
    /// record (a rebuilt cold record of 100 bytes: ~12 % fewer
    /// instructions).
    #[inline]
    pub fn extend_key_values<'v>(
        &mut self,
        b: &mut BytesMut,
        records: impl IntoIterator<Item = (i64, i64, Option<&'v [u8]>, Option<&'v [u8]>)>,
    ) {
        let (base_offset, base_timestamp) = (self.base_offset, self.base_timestamp);
        let (mut max_timestamp, mut last_offset, mut count) =
            (self.max_timestamp, self.last_offset, self.records);
        for (offset, timestamp, key, value) in records {
            // The header count, 0, is one byte.
            write_record(
                b,
                offset - base_offset,
                timestamp.wrapping_sub(base_timestamp),
                key,
                value,
                1,
                |w| w.byte(0),
            );
            max_timestamp = max_timestamp.max(timestamp);
            last_offset = offset;
            count += 1;
        }
        self.max_timestamp = max_timestamp;
        self.last_offset = last_offset;
        self.records = count;
    }

    /// Fills in the header and the CRC.
    pub fn finish(self, b: &mut BytesMut) {
        let batch = &mut b[self.start..];
        let batch_length = (batch.len() - layout::LOG_OVERHEAD) as i32;
        let last_delta = (self.last_offset - self.base_offset) as i32;
        let put =
            |batch: &mut [u8], at: usize, v: &[u8]| batch[at..at + v.len()].copy_from_slice(v);
        put(batch, layout::BATCH_LENGTH, &batch_length.to_be_bytes());
        put(batch, layout::LAST_OFFSET_DELTA, &last_delta.to_be_bytes());
        put(
            batch,
            layout::MAX_TIMESTAMP,
            &self.max_timestamp.to_be_bytes(),
        );
        put(batch, layout::RECORDS_COUNT, &self.records.to_be_bytes());
        crate::header::store_crc(batch);
    }
}

/// Writes one record of a batch: its length's varint, then the record
/// (attributes, deltas, key, value, and headers of `headers_len` bytes,
/// their count included, written by `headers`).
#[inline(always)]
fn write_record(
    b: &mut BytesMut,
    offset_delta: i64,
    ts_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers_len: usize,
    headers: impl FnOnce(&mut spare::Spare<'_>),
) {
    let len = 1
        + varlong_len(ts_delta)
        + varlong_len(offset_delta)
        + field_len(key)
        + field_len(value)
        + headers_len;
    write_spare(b, MAX_VARLONG + len, |w| {
        w.varlong(len as i64);
        w.byte(0); // attributes
        w.varlong(ts_delta);
        w.varlong(offset_delta);
        w.field(key);
        w.field(value);
        headers(w);
    });
}

#[cfg(test)]
mod tests;
