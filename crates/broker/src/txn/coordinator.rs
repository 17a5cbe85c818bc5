//! The transaction coordinator's operations on [`Broker`]: each checks that
//! this broker coordinates the id, takes the id's slot, reads the record if
//! it is not cached, applies one transition (`record.rs`) and stores it by
//! compare-and-set. Ending a transaction stores the decision (Prepare*)
//! before any marker is written; markers are then written to every
//! partition and group in it, and the record becomes Complete*.
//!
//! A background pass ([`Broker::txn_tick`]) aborts transactions past their
//! timeout and finishes Prepare* records whose coordinator died, on the
//! broker that coordinates (or would coordinate) each id.

use super::record::{EndStep, InitStep, TxnRecord, TxnState};
use super::Cached;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::{from_json, to_json};
use std::time::Duration;
use strata_meta::{Compare, Op, Txn};

/// How long a request waits for markers before answering; an unfinished
/// decision is completed in the background.
const MARKER_WAIT: Duration = Duration::from_secs(10);

/// One transactional id, for ListTransactions / DescribeTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub record: TxnRecord,
}

/// The cached record of an id that must already have a producer id.
fn initialised<'a>(id: &str, slot: &'a Option<Cached>) -> Result<&'a Cached, BrokerError> {
    slot.as_ref().ok_or_else(|| {
        BrokerError::InvalidProducerIdMapping(format!(
            "transactional id {id} has no producer id (InitProducerId first)"
        ))
    })
}

impl Broker {
    /// Checks that this broker coordinates `id`, then takes the id's slot
    /// (serialising operations on it) with its record loaded.
    async fn coordinate(
        &self,
        id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<Cached>>, BrokerError> {
        self.ensure_txn_coordinator(id).await?;
        let mut slot = self.txns.slot(id).lock_owned().await;
        self.load_txn(id, &mut slot).await?;
        Ok(slot)
    }

    /// Reads `id`'s record into the slot if it is not cached.
    async fn load_txn(&self, id: &str, slot: &mut Option<Cached>) -> Result<(), BrokerError> {
        if slot.is_some() {
            return Ok(());
        }
        *slot = self.read_txn(id).await?;
        Ok(())
    }

    /// `id`'s stored record and its mod revision, read from the store.
    async fn read_txn(&self, id: &str) -> Result<Option<Cached>, BrokerError> {
        match self.meta.get(&self.keys.txn_state(id)).await? {
            Some(kv) => Ok(Some(Cached {
                record: from_json(&kv.value)?,
                mod_revision: kv.mod_revision,
            })),
            None => Ok(None),
        }
    }

    /// `id`'s stored record, for checks made outside its coordinator
    /// (partition leaders, group coordinators).
    async fn stored_txn(&self, id: &str) -> Result<TxnRecord, BrokerError> {
        match self.read_txn(id).await? {
            Some(c) => Ok(c.record),
            None => Err(BrokerError::InvalidProducerIdMapping(format!(
                "transactional id {id} has no producer id"
            ))),
        }
    }

    /// Stores `record` for `id` if the stored one is still the cached one.
    async fn store_txn(
        &self,
        id: &str,
        slot: &mut Option<Cached>,
        record: TxnRecord,
    ) -> Result<(), BrokerError> {
        let key = self.keys.txn_state(id);
        let guard = match slot {
            Some(c) => Compare::ModRevision(key.clone(), c.mod_revision),
            None => Compare::CreateRevision(key.clone(), 0),
        };
        let r = self
            .meta
            .txn(Txn::new().when(guard).then(Op::put(key, to_json(&record)?)))
            .await?;
        if !r.succeeded {
            // Someone else (a previous coordinator) changed it: reread next time.
            *slot = None;
            return Err(BrokerError::ConcurrentTransactions(format!(
                "the state of transactional id {id} changed concurrently"
            )));
        }
        *slot = Some(Cached {
            record,
            mod_revision: r.revision,
        });
        Ok(())
    }

    fn check_timeout(&self, timeout_ms: i32) -> Result<(), BrokerError> {
        let max = self.settings.transaction_max_timeout_ms;
        if timeout_ms <= 0 || timeout_ms > max {
            return Err(BrokerError::InvalidTransactionTimeout(format!(
                "transaction.timeout.ms {timeout_ms} is not in 1..={max} (transaction.max.timeout.ms)"
            )));
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: the id's producer id and a
    /// bumped epoch, fencing any older producer. An open transaction of the
    /// previous producer is aborted first.
    pub async fn txn_init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), BrokerError> {
        self.check_timeout(timeout_ms)?;
        let mut slot = self.coordinate(id).await?;
        // At most: abort the open transaction, then bump.
        for _ in 0..3 {
            let now = self.clock.now_ms();
            let step = match slot.as_ref() {
                None => InitStep::NewId,
                Some(c) => c.record.on_init(expected, timeout_ms, now)?,
            };
            match step {
                InitStep::Ready(r) => {
                    let out = (r.producer_id, r.producer_epoch);
                    self.store_txn(id, &mut slot, r).await?;
                    return Ok(out);
                }
                InitStep::Unchanged => {
                    let r = slot
                        .as_ref()
                        .map(|c| (c.record.producer_id, c.record.producer_epoch));
                    return r.ok_or_else(|| BrokerError::ConcurrentTransactions(id.to_string()));
                }
                InitStep::NewId => {
                    if expected.is_some() && slot.is_none() {
                        return Err(BrokerError::InvalidProducerIdMapping(format!(
                            "transactional id {id} has no producer id yet"
                        )));
                    }
                    let r = TxnRecord::new(self.producer_ids.next().await?, timeout_ms, now);
                    let out = (r.producer_id, r.producer_epoch);
                    self.store_txn(id, &mut slot, r).await?;
                    tracing::info!(
                        transactional_id = id,
                        producer_id = out.0,
                        "new transactional producer id"
                    );
                    return Ok(out);
                }
                InitStep::AbortFirst(r) => {
                    tracing::info!(
                        transactional_id = id,
                        producer_id = r.producer_id,
                        "aborting the open transaction of a fenced producer"
                    );
                    self.store_txn(id, &mut slot, r).await?;
                    if !self.complete_txn(id, &mut slot, MARKER_WAIT).await? {
                        return Err(BrokerError::ConcurrentTransactions(format!(
                            "the fenced producer's transaction of {id} is still being aborted"
                        )));
                    }
                }
            }
        }
        Err(BrokerError::ConcurrentTransactions(id.to_string()))
    }

    /// AddPartitionsToTxn: `partitions` join the open transaction (unknown
    /// partitions are refused as a whole, as Kafka does).
    pub async fn txn_add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), BrokerError> {
        if let Some((t, p)) = partitions.iter().find(|(t, p)| !self.has_partition(t, *p)) {
            return Err(BrokerError::UnknownTopicOrPartition(format!("{t}-{p}")));
        }
        self.txn_add(id, producer_id, epoch, partitions, None).await
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    pub async fn txn_add_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), BrokerError> {
        if group.is_empty() {
            return Err(BrokerError::Group(
                crate::groups::GroupError::InvalidGroupId,
            ));
        }
        self.txn_add(id, producer_id, epoch, &[], Some(group)).await
    }

    async fn txn_add(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut slot = self.coordinate(id).await?;
        let c = initialised(id, &slot)?;
        let now = self.clock.now_ms();
        if let Some(r) = c
            .record
            .on_add(producer_id, epoch, partitions, group, now)?
        {
            self.store_txn(id, &mut slot, r).await?;
        }
        Ok(())
    }

    /// EndTxn: stores the decision, writes the markers and completes.
    pub async fn txn_end(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), BrokerError> {
        let mut slot = self.coordinate(id).await?;
        let c = initialised(id, &slot)?;
        match c
            .record
            .on_end(producer_id, epoch, commit, self.clock.now_ms())?
        {
            EndStep::Done => return Ok(()),
            EndStep::Resume => {}
            EndStep::Prepare(r) => self.store_txn(id, &mut slot, r).await?,
        }
        // The decision is durable: if markers cannot all be written now, the
        // background pass finishes them and the client learns nothing new.
        if !self.complete_txn(id, &mut slot, MARKER_WAIT).await? {
            tracing::warn!(
                transactional_id = id,
                "transaction decided but markers still pending; completing in the background"
            );
        }
        Ok(())
    }

    /// Writes the markers of a Prepare* record, retrying for up to `wait`;
    /// on success stores Complete*. `Ok(false)`: not finished yet.
    pub(crate) async fn complete_txn(
        &self,
        id: &str,
        slot: &mut Option<Cached>,
        wait: Duration,
    ) -> Result<bool, BrokerError> {
        let Some(c) = slot.as_ref() else {
            return Ok(true);
        };
        if !c.record.state.is_prepare() {
            return Ok(true);
        }
        let record = c.record.clone();
        let commit = record.state == TxnState::PrepareCommit;
        let deadline = tokio::time::Instant::now() + wait;
        let mut partitions: Vec<(String, i32)> = record.partitions.iter().cloned().collect();
        let mut groups: Vec<String> = record.groups.iter().cloned().collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            let (p_left, g_left) = self
                .write_markers(
                    record.producer_id,
                    record.producer_epoch,
                    commit,
                    &partitions,
                    &groups,
                )
                .await;
            partitions = p_left;
            groups = g_left;
            if partitions.is_empty() && groups.is_empty() {
                break;
            }
            if tokio::time::Instant::now() + backoff >= deadline || self.shutdown.is_cancelled() {
                return Ok(false);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            if let Err(e) = self.sync_view().await {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
        let done = record.completed(self.clock.now_ms());
        self.store_txn(id, slot, done).await?;
        tracing::debug!(transactional_id = id, commit, "transaction completed");
        Ok(true)
    }

    /// Aborts transactions past their timeout and finishes decided ones
    /// left by a coordinator that died, for the ids this broker coordinates.
    pub async fn txn_tick(&self) {
        let now = self.clock.now_ms();
        let due: Vec<String> = {
            let v = self.view();
            v.txns
                .iter()
                .filter(|(_, r)| {
                    r.state.is_prepare()
                        || r.on_timeout(now).is_some()
                        || r.expired(now, self.settings.transactional_id_expiration_ms)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in due {
            let mine = self
                .txn_coordinator_for(&id)
                .is_some_and(|b| b.id == self.identity.id);
            if !mine || self.shutdown.is_cancelled() {
                continue;
            }
            if let Err(e) = self.txn_recover(&id).await {
                tracing::debug!(transactional_id = %id, error = %e, "cannot settle transaction yet");
            }
        }
    }

    async fn txn_recover(&self, id: &str) -> Result<(), BrokerError> {
        self.ensure_txn_coordinator(id).await?;
        let slot = self.txns.slot(id);
        // A request is working on this id: it will settle it.
        let Ok(mut slot) = slot.try_lock() else {
            return Ok(());
        };
        self.load_txn(id, &mut slot).await?;
        let Some(c) = slot.as_ref() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        if c.record
            .expired(now, self.settings.transactional_id_expiration_ms)
        {
            let key = self.keys.txn_state(id);
            let deleted = self
                .meta
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(key.clone(), c.mod_revision))
                        .then(Op::delete(key)),
                )
                .await?
                .succeeded;
            *slot = None;
            if deleted {
                tracing::info!(transactional_id = id, "transactional id expired");
            }
            return Ok(());
        }
        if let Some(r) = c.record.on_timeout(now) {
            tracing::info!(
                transactional_id = id,
                producer_id = r.producer_id,
                "transaction timed out; aborting"
            );
            self.store_txn(id, &mut slot, r).await?;
        }
        self.complete_txn(id, &mut slot, Duration::from_secs(2))
            .await?;
        Ok(())
    }

    /// Before the first transactional batch of a transaction reaches a
    /// partition: the transactional id's stored state must say that this
    /// producer and epoch have an open transaction that includes the
    /// partition (KIP-890's server-side check). Without it a late or stray
    /// batch could open a transaction here that no marker ever closes,
    /// holding the last stable offset back for good.
    pub(crate) async fn verify_transactional_write(
        &self,
        p: &crate::partition::Partition,
        records: &bytes::Bytes,
        transactional_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let Ok(h) = strata_record::BatchHeader::parse_prefix(records) else {
            return Ok(()); // validation reports malformed input
        };
        if !h.is_transactional() || p.has_open_transaction(h.producer_id) {
            return Ok(());
        }
        let Some(id) = transactional_id.filter(|t| !t.is_empty()) else {
            return Err(BrokerError::InvalidTxnState(format!(
                "{}: a transactional batch needs the request's transactional id",
                p.name()
            )));
        };
        let record = self.stored_txn(id).await?;
        if h.producer_id != record.producer_id {
            return Err(BrokerError::InvalidProducerIdMapping(format!(
                "producer id {} is not transactional id {id}'s ({})",
                h.producer_id, record.producer_id
            )));
        }
        if h.producer_epoch < record.producer_epoch {
            return Err(BrokerError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than transactional id {id}'s epoch {}",
                h.producer_id, h.producer_epoch, record.producer_epoch
            )));
        }
        let added = record.state == TxnState::Ongoing
            && h.producer_epoch == record.producer_epoch
            && record.partitions.contains(&(p.topic.clone(), p.index));
        if !added {
            return Err(BrokerError::InvalidTxnState(format!(
                "{} is not part of an open transaction of {id} (AddPartitionsToTxn first)",
                p.name()
            )));
        }
        Ok(())
    }

    /// TxnOffsetCommit, at the group's coordinator: the producer must be
    /// the transactional id's current one (a zombie is fenced here too) and
    /// its transaction must include the group (AddOffsetsToTxn).
    pub async fn txn_offset_commit(
        &self,
        id: &str,
        group: &str,
        producer_id: i64,
        epoch: i16,
        member: Option<(&str, i32)>,
        offsets: Vec<(String, i32, crate::groups::CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        self.ensure_coordinator(group).await?;
        let record = self.stored_txn(id).await?;
        record.check_producer(producer_id, epoch)?;
        if record.state != TxnState::Ongoing || !record.groups.contains(group) {
            return Err(BrokerError::InvalidTxnState(format!(
                "transaction of {id} has not added group {group} (AddOffsetsToTxn first)"
            )));
        }
        self.groups
            .txn_commit_offsets(group, producer_id, member, offsets)
            .await?;
        Ok(())
    }

    /// Transactional ids this broker coordinates (ListTransactions), with
    /// optional filters on state names and producer ids.
    pub fn list_transactions(&self, states: &[String], producer_ids: &[i64]) -> Vec<TxnListing> {
        // Collected first and the view released: finding each id's
        // coordinator reads the view again, and a nested read of the lock
        // can deadlock behind a waiting writer.
        let matching: Vec<TxnListing> = self
            .view()
            .txns
            .iter()
            .filter(|(_, r)| states.is_empty() || states.iter().any(|s| s == r.state.kafka_name()))
            .filter(|(_, r)| producer_ids.is_empty() || producer_ids.contains(&r.producer_id))
            .map(|(id, r)| TxnListing {
                transactional_id: id.clone(),
                record: r.clone(),
            })
            .collect();
        matching
            .into_iter()
            .filter(|t| {
                self.txn_coordinator_for(&t.transactional_id)
                    .is_some_and(|b| b.id == self.identity.id)
            })
            .collect()
    }

    /// DescribeTransactions for one id this broker coordinates.
    pub async fn describe_transaction(&self, id: &str) -> Result<TxnListing, BrokerError> {
        let slot = self.coordinate(id).await?;
        match slot.as_ref() {
            Some(c) => Ok(TxnListing {
                transactional_id: id.to_string(),
                record: c.record.clone(),
            }),
            None => Err(BrokerError::TransactionalIdNotFound(id.to_string())),
        }
    }
}
