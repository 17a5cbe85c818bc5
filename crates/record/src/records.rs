//! The records inside a batch: the one parser of their grammar, which
//! checks a client's batch without materialising its records and which
//! [`crate::decode_batch`] decodes with.
//!
//! A record: length, attributes, timestamp delta, offset delta, key, value,
//! header count, headers (key, value), the lengths and counts zig-zag
//! varints, a length of -1 meaning null. Invariants of what [`next_record`]
//! accepts: every length fits in what encloses it, a record's fields end
//! exactly at its length, header keys are not null, and the header count
//! is at most the bytes left for headers (so nothing sized by a count is
//! reserved beyond the record). [`check_records`] also requires offset
//! deltas 0, 1, 2, … as producers write them, so every stored batch
//! decodes to strictly increasing offsets (the cold tier's invariant), and
//! header keys in UTF-8, so the cold tier's string column holds them as
//! sent (batches stored before that check decode with such keys made
//! lossy, as Kafka's Java clients read them).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordsError {
    #[error("record {index}: varint is truncated or longer than 10 bytes")]
    BadVarint { index: usize },
    #[error("record {index}: length {len} is invalid")]
    BadRecordLength { index: usize, len: i64 },
    #[error("record {index}: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("record {index} has offset delta {delta}, not {index}")]
    OffsetDelta { index: usize, delta: i64 },
    #[error("record {index}: the key of header {header} is not UTF-8")]
    HeaderKeyNotUtf8 { index: usize, header: usize },
}

/// One record's fields, borrowed from the (decompressed) records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParsedRecord<'a> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    /// The headers' bytes (already checked: [`Self::headers`] reads them).
    headers: &'a [u8],
}

impl<'a> ParsedRecord<'a> {
    /// The record's headers, in order (keys as sent: [`check_records`]
    /// checks that they are UTF-8, the parser does not).
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let mut r = self.headers;
        // Checked by `next_record`: the count is there and every header
        // parses, so this stops only at the end.
        let count = varlong(&mut r).unwrap_or(0).max(0);
        (0..count).map_while(move |_| Some((field(&mut r).ok()??, field(&mut r).ok()?)))
    }
}

/// What was wrong with a record, with the number it was about: small and
/// `Copy`, since every field read returns it (the message, with the
/// record's index, is made once, by [`next_record`]).
#[derive(Debug, Clone, Copy)]
enum Bad {
    Varint,
    Length(i64),
    Field(i64),
    Headers(i64),
    NullKey,
    Trailing(usize),
    KeyNotUtf8(usize),
}

impl Bad {
    #[cold]
    fn at(self, index: usize) -> RecordsError {
        let malformed = |reason: String| RecordsError::Malformed { index, reason };
        match self {
            Bad::Varint => RecordsError::BadVarint { index },
            Bad::Length(len) => RecordsError::BadRecordLength { index, len },
            Bad::Field(len) => malformed(format!("a field of {len} bytes overruns the record")),
            Bad::Headers(n) => malformed(format!("header count {n} does not fit in the record")),
            Bad::NullKey => malformed("a header key is null".into()),
            Bad::Trailing(n) => malformed(format!("{n} bytes follow the last field")),
            Bad::KeyNotUtf8(header) => RecordsError::HeaderKeyNotUtf8 { index, header },
        }
    }
}

/// A zig-zag varlong from the front of `buf` (one or two bytes for nearly
/// every field, so those are read without the loop: this runs for every
/// field of every record a producer sends).
#[inline]
fn varlong(buf: &mut &[u8]) -> Result<i64, Bad> {
    let z = match **buf {
        [a, ref rest @ ..] if a < 0x80 => {
            *buf = rest;
            u64::from(a)
        }
        [a, b, ref rest @ ..] if b < 0x80 => {
            *buf = rest;
            u64::from(a & 0x7f) | u64::from(b) << 7
        }
        _ => long_varlong(buf)?,
    };
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

#[cold]
fn long_varlong(buf: &mut &[u8]) -> Result<u64, Bad> {
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().take(10).enumerate() {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(z);
        }
    }
    Err(Bad::Varint)
}

/// `len` bytes from the front of `buf`.
#[inline]
fn take<'a>(buf: &mut &'a [u8], len: i64) -> Option<&'a [u8]> {
    let n = usize::try_from(len).ok().filter(|&n| n <= buf.len())?;
    let (f, rest) = buf.split_at(n);
    *buf = rest;
    Some(f)
}

/// A nullable length-prefixed field.
#[inline]
fn field<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, Bad> {
    let len = varlong(buf)?;
    if len < 0 {
        return Ok(None);
    }
    take(buf, len).map(Some).ok_or(Bad::Field(len))
}

/// Reads a zig-zag varlong from the front of `buf`: its value and the
/// bytes it took.
#[cfg(test)]
pub(crate) fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let mut rest = buf;
    let v = varlong(&mut rest).ok()?;
    Some((v, buf.len() - rest.len()))
}

/// Parses the record at the front of `buf` (record `index` of its batch)
/// and moves `buf` past it.
pub(crate) fn next_record<'a>(
    buf: &mut &'a [u8],
    index: usize,
) -> Result<ParsedRecord<'a>, RecordsError> {
    parse::<false>(buf).map_err(|b| b.at(index))
}

/// The record at the front of `buf`; with `CHECK_KEYS`, its header keys
/// must be UTF-8.
#[inline]
fn parse<'a, const CHECK_KEYS: bool>(buf: &mut &'a [u8]) -> Result<ParsedRecord<'a>, Bad> {
    let len = varlong(buf)?;
    let rec = take(buf, len).ok_or(Bad::Length(len))?;
    let Some((_attributes, mut r)) = rec.split_first() else {
        return Err(Bad::Length(len));
    };
    let timestamp_delta = varlong(&mut r)?;
    let offset_delta = varlong(&mut r)?;
    let key = field(&mut r)?;
    let value = field(&mut r)?;
    let headers = r;
    let count = varlong(&mut r)?;
    // Each header takes at least two bytes (its key's and value's lengths).
    if count < 0 || count as u64 > r.len() as u64 / 2 {
        return Err(Bad::Headers(count));
    }
    for h in 0..count {
        let key = field(&mut r)?.ok_or(Bad::NullKey)?;
        if CHECK_KEYS && !key.is_ascii() && std::str::from_utf8(key).is_err() {
            return Err(Bad::KeyNotUtf8(h as usize));
        }
        field(&mut r)?;
    }
    if !r.is_empty() {
        return Err(Bad::Trailing(r.len()));
    }
    Ok(ParsedRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
    })
}

/// What [`check_records`] found: the records' count and their
/// timestamps' range in a batch whose base timestamp was given (each the
/// base plus the record's delta, as [`crate::decode_batch`] computes it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    pub(crate) count: usize,
    /// The largest timestamp; `i64::MIN` when there are no records.
    pub(crate) max_timestamp: i64,
    /// The smallest timestamp other than -1 (Kafka's "no timestamp"), if
    /// any.
    pub(crate) min_timestamp: Option<i64>,
}

/// Checks every record in `buf` (the records of one batch, decompressed,
/// whose base timestamp is `base_timestamp`) as a producer writes them;
/// counts them and takes their timestamps' range.
pub(crate) fn check_records(mut buf: &[u8], base_timestamp: i64) -> Result<Checked, RecordsError> {
    let mut n = 0;
    let mut max_timestamp = i64::MIN;
    let mut min_timestamp: Option<i64> = None;
    while !buf.is_empty() {
        // Header keys checked as UTF-8: a key is a string in Kafka's record
        // format, and a string column in the cold tier's files, which
        // could not hold another key as sent.
        let r = parse::<true>(&mut buf).map_err(|b| b.at(n))?;
        if r.offset_delta != n as i64 {
            return Err(RecordsError::OffsetDelta {
                index: n,
                delta: r.offset_delta,
            });
        }
        let ts = base_timestamp.wrapping_add(r.timestamp_delta);
        max_timestamp = max_timestamp.max(ts);
        if ts != NO_TIMESTAMP {
            min_timestamp = Some(min_timestamp.map_or(ts, |m| m.min(ts)));
        }
        n += 1;
    }
    Ok(Checked {
        count: n,
        max_timestamp,
        min_timestamp,
    })
}

/// A record timestamp of -1: none given.
const NO_TIMESTAMP: i64 = -1;
