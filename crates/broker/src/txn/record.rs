//! The stored state of one transactional id (`transactions/<id>/state`,
//! JSON) and the coordinator's state machine over it (KIP-98), as pure
//! functions so every transition is unit-tested without a store.
//!
//! States: Empty → Ongoing (first AddPartitions/AddOffsets) → PrepareCommit
//! or PrepareAbort (EndTxn, timeout, fencing) → CompleteCommit or
//! CompleteAbort (every marker written) → Ongoing again for the next
//! transaction. A Prepare state is a decision: it is durable before any
//! marker is written, and whoever coordinates the id next finishes it.
//!
//! The producer epoch is the fencing token: InitProducerId bumps it, and any
//! request with an older epoch is refused with PRODUCER_FENCED.

use crate::error::BrokerError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name for the state (DescribeTransactions, ListTransactions).
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// `transactions/<id>/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, so a retried InitProducerId that
    /// names it is recognised (KIP-360); -1 when none.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions written in the current transaction.
    #[serde(default)]
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the current transaction commits.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// When the current transaction started (Ongoing), for the timeout.
    pub start_ms: i64,
    pub updated_ms: i64,
}

/// What InitProducerId must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Store this record and hand out its id and epoch.
    Ready(TxnRecord),
    /// A retried InitProducerId whose bump already happened: hand out the
    /// current id and epoch unchanged.
    Unchanged,
    /// An open transaction must be aborted first (with this record, epoch
    /// bumped so the old producer is fenced); then ask again.
    AbortFirst(TxnRecord),
    /// The epoch is exhausted: start over with a new producer id.
    NewId,
}

/// What EndTxn must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Store this Prepare record, then write the markers.
    Prepare(TxnRecord),
    /// The decision is already stored; finish writing the markers.
    Resume,
    /// A retry of a transaction that already ended this way.
    Done,
}

impl TxnRecord {
    /// A new transactional id's record.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        Self {
            producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Refuses a request from anyone but the current producer and epoch.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
        if producer_id != self.producer_id {
            return Err(BrokerError::InvalidProducerIdMapping(format!(
                "producer id {producer_id} is not the transactional id's ({})",
                self.producer_id
            )));
        }
        if epoch != self.producer_epoch {
            return Err(BrokerError::ProducerFenced(format!(
                "producer {producer_id} epoch {epoch} is not the current epoch {}",
                self.producer_epoch
            )));
        }
        Ok(())
    }

    fn bumped(&self, state: TxnState, now_ms: i64) -> Self {
        let mut r = self.clone();
        r.last_producer_epoch = self.producer_epoch;
        r.producer_epoch = self.producer_epoch.saturating_add(1);
        r.state = state;
        r.updated_ms = now_ms;
        r
    }

    /// InitProducerId on an existing transactional id. `expected` is the
    /// id and epoch the producer already has (KIP-360), if it says.
    pub fn on_init(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<InitStep, BrokerError> {
        if self.state.is_prepare() {
            return Err(BrokerError::ConcurrentTransactions(format!(
                "the previous transaction of producer {} is still completing",
                self.producer_id
            )));
        }
        if let Some((id, epoch)) = expected {
            if id != self.producer_id {
                return Err(BrokerError::InvalidProducerIdMapping(format!(
                    "producer id {id} is not the transactional id's ({})",
                    self.producer_id
                )));
            }
            if epoch != self.producer_epoch {
                if epoch == self.last_producer_epoch && self.state != TxnState::Ongoing {
                    return Ok(InitStep::Unchanged);
                }
                return Err(BrokerError::ProducerFenced(format!(
                    "producer {id} epoch {epoch} is not the current epoch {}",
                    self.producer_epoch
                )));
            }
        }
        if self.state == TxnState::Ongoing {
            return Ok(InitStep::AbortFirst(
                self.bumped(TxnState::PrepareAbort, now_ms),
            ));
        }
        if self.producer_epoch >= i16::MAX - 1 {
            return Ok(InitStep::NewId);
        }
        let mut r = self.bumped(TxnState::Empty, now_ms);
        r.timeout_ms = timeout_ms;
        r.partitions.clear();
        r.groups.clear();
        Ok(InitStep::Ready(r))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the record with these added,
    /// or `None` when nothing changes.
    pub fn on_add(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Self>, BrokerError> {
        self.check_producer(producer_id, epoch)?;
        if self.state.is_prepare() {
            return Err(BrokerError::ConcurrentTransactions(format!(
                "producer {producer_id}'s previous transaction is still completing"
            )));
        }
        let mut r = self.clone();
        if self.state != TxnState::Ongoing {
            r.state = TxnState::Ongoing;
            r.start_ms = now_ms;
            r.partitions.clear();
            r.groups.clear();
        }
        r.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            r.groups.insert(g.to_string());
        }
        if r == *self {
            return Ok(None);
        }
        r.updated_ms = now_ms;
        Ok(Some(r))
    }

    /// EndTxn.
    pub fn on_end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, BrokerError> {
        self.check_producer(producer_id, epoch)?;
        let verb = if commit { "commit" } else { "abort" };
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut r = self.clone();
                r.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                r.updated_ms = now_ms;
                Ok(EndStep::Prepare(r))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Ok(EndStep::Resume)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndStep::Done)
            }
            (state, _) => Err(BrokerError::InvalidTxnState(format!(
                "cannot {verb} producer {producer_id}'s transaction in state {}",
                state.kafka_name()
            ))),
        }
    }

    /// The record once every marker is written.
    pub fn completed(&self, now_ms: i64) -> Self {
        let mut r = self.clone();
        r.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        r.partitions.clear();
        r.groups.clear();
        r.updated_ms = now_ms;
        r
    }

    /// Whether the id has been idle (no open or deciding transaction) for
    /// longer than `expiration_ms` and may be forgotten.
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && now_ms.saturating_sub(self.updated_ms) > expiration_ms
    }

    /// An Ongoing transaction past its timeout: the PrepareAbort record
    /// (epoch bumped, fencing the producer), or `None`.
    pub fn on_timeout(&self, now_ms: i64) -> Option<Self> {
        let expired = self.state == TxnState::Ongoing
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms);
        expired.then(|| self.bumped(TxnState::PrepareAbort, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: i32) -> Vec<(String, i32)> {
        (0..n).map(|p| ("t".to_string(), p)).collect()
    }

    #[test]
    fn a_transaction_goes_through_its_states() {
        let r = TxnRecord::new(7, 1000, 0);
        let Ok(InitStep::Ready(r)) = r.on_init(None, 1000, 1) else {
            panic!("init")
        };
        assert_eq!((r.producer_epoch, r.state), (1, TxnState::Empty));
        let r = r.on_add(7, 1, &parts(2), None, 5).unwrap().unwrap();
        assert_eq!(
            (r.state, r.start_ms, r.partitions.len()),
            (TxnState::Ongoing, 5, 2)
        );
        assert_eq!(
            r.on_add(7, 1, &parts(1), None, 6).unwrap(),
            None,
            "no change"
        );
        let r = r.on_add(7, 1, &[], Some("g"), 7).unwrap().unwrap();
        let EndStep::Prepare(p) = r.on_end(7, 1, true, 8).unwrap() else {
            panic!("prepare")
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(p.on_end(7, 1, true, 9).unwrap(), EndStep::Resume);
        assert!(matches!(
            p.on_add(7, 1, &parts(1), None, 9),
            Err(BrokerError::ConcurrentTransactions(_))
        ));
        assert!(matches!(
            p.on_end(7, 1, false, 9),
            Err(BrokerError::InvalidTxnState(_))
        ));
        let c = p.completed(10);
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty() && c.groups.is_empty());
        assert_eq!(c.on_end(7, 1, true, 11).unwrap(), EndStep::Done);
        // The next transaction starts afresh.
        let n = c.on_add(7, 1, &parts(1), None, 20).unwrap().unwrap();
        assert_eq!((n.state, n.start_ms), (TxnState::Ongoing, 20));
    }

    #[test]
    fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
        let r = TxnRecord::new(7, 1000, 0)
            .on_add(7, 0, &parts(1), None, 1)
            .unwrap()
            .unwrap();
        let Ok(InitStep::AbortFirst(a)) = r.on_init(None, 1000, 2) else {
            panic!("abort first")
        };
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
        assert!(matches!(
            a.on_init(None, 1000, 3),
            Err(BrokerError::ConcurrentTransactions(_))
        ));
        let done = a.completed(3);
        let Ok(InitStep::Ready(n)) = done.on_init(None, 1000, 4) else {
            panic!("ready")
        };
        assert_eq!(n.producer_epoch, 2);
        // The zombie's requests carry epoch 0.
        for e in [
            n.on_add(7, 0, &parts(1), None, 5).unwrap_err(),
            match n.on_end(7, 0, true, 5) {
                Err(e) => e,
                Ok(s) => panic!("{s:?}"),
            },
        ] {
            assert!(matches!(e, BrokerError::ProducerFenced(_)), "{e}");
        }
        assert!(matches!(
            n.on_add(8, 2, &parts(1), None, 5),
            Err(BrokerError::InvalidProducerIdMapping(_))
        ));
    }

    #[test]
    fn kip_360_retries_and_timeouts() {
        let r = TxnRecord::new(7, 100, 0);
        let Ok(InitStep::Ready(r1)) = r.on_init(Some((7, 0)), 100, 1) else {
            panic!("bump")
        };
        assert_eq!(
            r1.on_init(Some((7, 0)), 100, 2).unwrap(),
            InitStep::Unchanged
        );
        assert!(matches!(
            r1.on_init(Some((7, 5)), 100, 2),
            Err(BrokerError::ProducerFenced(_))
        ));
        let o = r1.on_add(7, 1, &parts(1), None, 10).unwrap().unwrap();
        assert_eq!(o.on_timeout(110), None);
        let t = o.on_timeout(111).unwrap();
        assert_eq!((t.state, t.producer_epoch), (TxnState::PrepareAbort, 2));
        assert!(!o.expired(i64::MAX, 0), "open transactions never expire");
        let idle = t.completed(200);
        assert!(!idle.expired(1200, 1000) && idle.expired(1201, 1000));
        let mut old = TxnRecord::new(1, 1, 0);
        old.producer_epoch = i16::MAX - 1;
        assert_eq!(old.on_init(None, 1, 1).unwrap(), InitStep::NewId);
    }
}
