//! Transaction markers: the control batches a partition leader writes when a
//! transaction ends (KIP-98). A marker is one uncompressed record whose key
//! is `(version: i16 = 0, type: i16)` — 0 abort, 1 commit — and whose value
//! is `(version: i16 = 0, coordinator_epoch: i32)`, in a batch with the
//! transactional and control attributes and the producer's id and epoch.

use crate::header::{
    build_batch_with, layout, BatchHeader, BatchProducer, CONTROL_BIT, TRANSACTIONAL_BIT,
};
use bytes::BytesMut;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    pub fn from_commit(commit: bool) -> Self {
        if commit {
            Self::Commit
        } else {
            Self::Abort
        }
    }
}

/// A marker batch for `producer_id`/`producer_epoch` (offset 0, epoch
/// unassigned: the log stamps both).
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> BytesMut {
    let kind_code: i16 = match kind {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind_code.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    build_batch_with(
        0,
        timestamp_ms,
        BatchProducer {
            attributes: TRANSACTIONAL_BIT | CONTROL_BIT,
            producer_id,
            producer_epoch,
            base_sequence: -1,
        },
        &[(Some(&key), Some(&value))],
    )
}

/// The marker type of a stored control batch (`batch` starts with it), or
/// `None` if it is not a control batch or its first record is unreadable
/// (unknown control types, e.g. KRaft's, are not transaction markers).
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.records_count < 1 {
        return None;
    }
    let mut r = &batch[layout::HEADER_SIZE..h.total_size()];
    let _len = varint(&mut r)?;
    let _attributes = take(&mut r, 1)?;
    let _ts_delta = varint(&mut r)?;
    let _offset_delta = varint(&mut r)?;
    let key_len = varint(&mut r)?;
    if key_len < 4 {
        return None;
    }
    let key = take(&mut r, 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

fn varint(r: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let b = *take(r, 1)?.first()?;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_batch, BatchIter};

    #[test]
    fn markers_round_trip_and_look_like_kafkas() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = build_control_batch(42, 3, kind, 7, 1000);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.records_count, 1);
            assert_eq!(control_type(&b), Some(kind));
            assert_eq!(BatchIter::verifying(&b).count(), 1, "CRC is valid");
            let d = decode_batch(&b.freeze()).unwrap();
            let v = d.records[0].value.clone().unwrap();
            assert_eq!(&v[..], &[0, 0, 0, 0, 0, 7]);
        }
    }

    #[test]
    fn data_batches_and_garbage_are_not_markers() {
        let b = crate::sample_batch(2, 10, 0);
        assert_eq!(control_type(&b), None);
        assert_eq!(control_type(&[1, 2, 3]), None);
        let mut m = build_control_batch(1, 0, ControlType::Commit, 0, 0);
        let n = m.len();
        m.truncate(n - 8);
        assert_eq!(control_type(&m), None);
    }
}
