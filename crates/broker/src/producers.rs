//! Idempotent-producer state of one partition (KIP-98):
//! per producer id, its epoch and the last five batches' sequence ranges.
//!
//! The rules follow Kafka's producer state manager:
//! - a batch whose epoch is older than the producer's is fenced
//!   (INVALID_PRODUCER_EPOCH);
//! - a batch matching one of the last five batches of the same epoch is a
//!   retry: it is not stored again and gets its original offset back;
//! - within an epoch, a batch must start right after the last sequence
//!   (wrapping at i32::MAX) or it is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a new epoch starts at sequence 0; a producer with no state here (never
//!   seen, or its batches were deleted) is accepted at any sequence.
//!
//! The table is rebuilt from the stored batch headers when the partition is
//! opened, so it survives restarts.

use crate::error::BrokerError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use strata_record::BatchHeader;

/// Batches remembered per producer for duplicate detection (Kafka's limit on
/// in-flight requests with idempotence).
const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already stored at this base offset.
    Duplicate { base_offset: i64 },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX, like offsets deltas within the batch.
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1))
        as i32
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

impl ProducerStates {
    /// Whether `h` (a client batch with a producer id) may be appended.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, BrokerError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than the current epoch {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(BrokerError::OutOfOrderSequence(format!(
                    "producer {} new epoch {} must start at sequence 0, not {}",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )))
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            });
        }
        match entry.batches.back() {
            Some(prev) if !in_sequence(prev.last_seq, h.base_sequence) => {
                Err(BrokerError::OutOfOrderSequence(format!(
                    "producer {} expected sequence {} but got {}",
                    h.producer_id,
                    prev.last_seq.wrapping_add(1),
                    h.base_sequence
                )))
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Whether a transaction marker for `producer_id` at `epoch` may be
    /// written: a marker from an older epoch than the producer's is stale.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(BrokerError::InvalidProducerEpoch(format!(
                "marker for producer {producer_id} epoch {epoch} is older than the current epoch {}",
                e.epoch
            ))),
            _ => Ok(()),
        }
    }

    /// Each producer's id, epoch and last sequence, for DescribeProducers.
    pub fn describe(&self) -> Vec<(i64, i16, i32)> {
        let mut v: Vec<_> = self
            .producers
            .iter()
            .map(|(&id, e)| (id, e.epoch, e.batches.back().map_or(-1, |b| b.last_seq)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Records a stored batch (with its assigned base offset).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = h.producer_epoch;
        }
        if h.is_control() {
            // A transaction marker carries the producer's current epoch
            // (fencing older ones) but no sequence: sequences continue
            // across transactions of one epoch.
            return;
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset: h.base_offset,
        });
        while entry.batches.len() > REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&h(7, 0, 0, 3, 0)).unwrap(), SequenceCheck::Append);
        s.record(&h(7, 0, 0, 3, 0));
        assert_eq!(s.check(&h(7, 0, 3, 2, 0)).unwrap(), SequenceCheck::Append);
        s.record(&h(7, 0, 3, 2, 3));
        assert_eq!(
            s.check(&h(7, 0, 0, 3, 0)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 0 }
        );
        assert_eq!(
            s.check(&h(7, 0, 3, 2, 0)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 3 }
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&h(7, 2, 0, 1, 0));
        assert!(matches!(
            s.check(&h(7, 2, 5, 1, 0)),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            s.check(&h(7, 1, 1, 1, 0)),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert!(matches!(
            s.check(&h(7, 3, 4, 1, 0)),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(s.check(&h(7, 3, 0, 1, 0)).unwrap(), SequenceCheck::Append);
        // Unknown producers are accepted at any sequence (their state may
        // have been removed with old segments).
        assert_eq!(s.check(&h(8, 0, 42, 1, 0)).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&h(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            s.check(&h(1, 0, 6, 1, 0)).unwrap(),
            SequenceCheck::Duplicate { base_offset: 6 }
        );
        assert!(
            s.check(&h(1, 0, 0, 1, 0)).is_err(),
            "forgotten batch is out of order"
        );
        let mut w = ProducerStates::default();
        w.record(&h(2, 0, i32::MAX - 1, 2, 0));
        assert_eq!(w.check(&h(2, 0, 0, 1, 0)).unwrap(), SequenceCheck::Append);
    }
}
