//! Walking the records inside an uncompressed batch, to check the declared
//! record count without materialising records.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordsError {
    #[error("varint is truncated or longer than 10 bytes")]
    BadVarint,
    #[error("record length {0} is invalid")]
    BadRecordLength(i64),
}

/// Reads a zig-zag varint; returns the value and bytes consumed.
fn read_varlong(buf: &[u8]) -> Result<(i64, usize), RecordsError> {
    let mut z: u64 = 0;
    for (i, b) in buf.iter().take(10).enumerate() {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    Err(RecordsError::BadVarint)
}

/// Counts the length-prefixed records in `buf` (the bytes after the batch
/// header). Each record's length must fit exactly in what remains.
pub fn count_uncompressed_records(buf: &[u8]) -> Result<usize, RecordsError> {
    let mut pos = 0;
    let mut n = 0;
    while pos < buf.len() {
        let (len, used) = read_varlong(&buf[pos..])?;
        pos += used;
        if len < 0 || len as usize > buf.len() - pos {
            return Err(RecordsError::BadRecordLength(len));
        }
        pos += len as usize;
        n += 1;
    }
    Ok(n)
}

/// Offsets and timestamps of every record in one stored batch, decompressing
/// if needed. Used only on the rare by-timestamp lookup path.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, String> {
    let mut buf = bytes::Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| format!("cannot decode record batch: {e}"))?;
    Ok(set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp))
        .collect())
}
