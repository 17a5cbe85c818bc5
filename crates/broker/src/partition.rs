//! One partition replica hosted by this broker — led or followed: its log,
//! producer state, leader-epoch history, watermarks, and the signals that
//! wake waiting fetches, produce acknowledgements and replication streams.
//!
//! A replica is a follower (leader epoch -1) until [`Partition::promote`]
//! makes it the leader of an epoch; [`Partition::demote`] turns it back.
//! The role is checked under the log lock by every write, so a client
//! append and a replicated append can never both reach one log.
//!
//! Invariants: the high watermark never exceeds the log end offset and never
//! moves backwards while the replica keeps its role; every advance of it
//! wakes fetches waiting on this partition, every append wakes replication
//! streams.

use crate::config::TopicConfig;
use crate::error::BrokerError;
use crate::partition_txns::{AbortedTxn, OpenTxn, PartitionTxns};
use crate::producers::{ProducerStates, SequenceCheck};
use crate::replication::replica_set::{IsrChange, ReplicaSet};
use crate::snapshot;
use bytes::Bytes;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use strata_log::{AppendInfo, EpochHistory, FlushHandle, LogRead, PartitionLog, SegmentInfo};
use strata_record::{
    build_control_batch, control_type, validate_batches, BatchHeader, BatchIter, ControlType,
    ValidatedBatch, ValidationLimits,
};
use tokio::sync::Notify;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The id of the topic whose replica this is (`TopicRecord::id`; empty
    /// when not known, in tests): a topic of the same name created again
    /// is another (see [`incarnation`]).
    topic_id: String,
    /// The epoch this broker leads in, or -1 while following.
    leader_epoch: AtomicI32,
    /// Create revision of this broker's leader key: metadata writes made as
    /// leader (manifest commits, ISR changes) are guarded by it.
    fencing_revision: AtomicI64,
    state: Mutex<LogState>,
    config: RwLock<Arc<TopicConfig>>,
    high_watermark: AtomicI64,
    log_end: AtomicI64,
    log_start_offset: AtomicI64,
    unflushed_messages: AtomicI64,
    last_flush_ms: AtomicI64,
    /// The high watermark advanced: consumer fetches may read more.
    data_arrived: Notify,
    /// The log end advanced, or the role changed: replication streams and
    /// produce acknowledgements re-check.
    appended: Notify,
    replicas: Mutex<ReplicaSet>,
    /// The producer-state snapshots on disk.
    pub(crate) snapshots: snapshot::SnapshotFiles,
    /// The thread the last housekeeping ran on (tests check it is not an
    /// async worker).
    #[cfg(test)]
    pub(crate) housekeeping_thread: Mutex<Option<std::thread::ThreadId>>,
}

/// The log, the producer state, the transactions and the epoch history,
/// changed together under one lock so a sequence check and the append it
/// allows are atomic.
struct LogState {
    log: PartitionLog,
    producers: ProducerStates,
    txns: PartitionTxns,
    epochs: EpochHistory,
}

impl LogState {
    /// Notes one stored batch; `batch` holds it (to read a marker's type).
    fn observe(&mut self, h: &BatchHeader, batch: &[u8]) {
        self.producers.record(h);
        let marker = if h.is_control() {
            control_type(batch)
        } else {
            None
        };
        self.txns.observe(h, marker);
        self.epochs.observe(h.partition_leader_epoch, h.base_offset);
    }

    /// Rebuilds producer state, transactions and epoch history: from the
    /// newest snapshot at or below the log end (if any) plus the stored
    /// headers after it (and the few bytes of each transaction marker).
    fn rebuild(&mut self) -> Result<(), BrokerError> {
        let end = self.log.next_offset();
        let start = self.log.log_start_offset();
        let (mut producers, mut txns, mut epochs, from) =
            match snapshot::latest(self.log.dir(), end) {
                Some(s) => {
                    let epochs = s.epochs();
                    (s.producers, s.txns, epochs, s.offset.max(start))
                }
                None => (
                    ProducerStates::default(),
                    PartitionTxns::default(),
                    EpochHistory::default(),
                    start,
                ),
            };
        let mut transactional = Vec::new();
        self.log.for_each_header_from(from, |h| {
            producers.record(h);
            epochs.observe(h.partition_leader_epoch, h.base_offset);
            if h.is_transactional() {
                transactional.push(*h);
            }
        })?;
        txns.prune_below(start);
        for h in transactional {
            let marker = if h.is_control() {
                let data = self.log.read(h.base_offset, 1, end)?.data;
                control_type(&data)
            } else {
                None
            };
            txns.observe(&h, marker);
        }
        self.producers = producers;
        self.txns = txns;
        self.epochs = epochs;
        Ok(())
    }
}

/// What a fetch of one partition returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    pub data: Bytes,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions overlapping `data` (read_committed only).
    pub aborted: Vec<AbortedTxn>,
}

/// What a read prepared under a partition's lock
/// ([`Partition::prepare_read`]) needs to complete, besides its log read.
pub struct ReadContext {
    offset: i64,
    isolation: Isolation,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

/// Runs a prepared log read: from the page cache on the calling task, and
/// what must come from disk on the blocking pool, so a lagging reader never
/// stalls the async workers.
pub async fn read_log(log: LogRead) -> Result<Bytes, BrokerError> {
    if let Some(r) = log.read_cached()? {
        return Ok(r.data);
    }
    let r = tokio::task::spawn_blocking(move || log.read())
        .await
        .map_err(|e| BrokerError::Storage(format!("log read task failed: {e}")))??;
    Ok(r.data)
}

/// The offset after the last batch of `data`, read from `from` (`from`
/// when there is none).
fn end_of(data: &[u8], from: i64) -> i64 {
    BatchIter::new(data)
        .last()
        .map_or(from, |(_, h)| h.next_offset())
}

/// Refuses a create-time record whose timestamp lies more than `before`
/// ms behind `now_ms` or `after` ms ahead of it (Kafka's
/// `message.timestamp.before.max.ms` / `after.max.ms`; records without a
/// timestamp, -1, pass).
fn check_timestamps(
    batches: &[ValidatedBatch],
    (before, after): (i64, i64),
    now_ms: i64,
) -> Result<(), BrokerError> {
    let earliest = now_ms.saturating_sub(before);
    let latest = now_ms.saturating_add(after);
    for v in batches {
        // Some timestamp other than -1 exists, so the max is one.
        let (Some(min), max) = (v.min_timestamp, v.header.max_timestamp) else {
            continue;
        };
        if max > latest {
            return Err(BrokerError::InvalidTimestamp(format!(
                "a record's timestamp {max} is more than message.timestamp.after.max.ms ({after} ms) ahead of the broker's clock ({now_ms})"
            )));
        }
        if min < earliest {
            return Err(BrokerError::InvalidTimestamp(format!(
                "a record's timestamp {min} is more than message.timestamp.before.max.ms ({before} ms) behind the broker's clock ({now_ms})"
            )));
        }
    }
    Ok(())
}

/// A consumer's isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    #[default]
    ReadUncommitted,
    ReadCommitted,
}

/// What a follower must do before it copies from this leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerStart {
    pub truncate_to: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl Partition {
    /// Wraps an opened log as a follower replica, rebuilding producer state
    /// and the epoch history from the stored batch headers.
    pub fn open(
        topic: String,
        index: i32,
        log: PartitionLog,
        config: Arc<TopicConfig>,
        now_ms: i64,
    ) -> Result<Self, BrokerError> {
        let end = log.next_offset();
        let start = log.log_start_offset();
        let mut st = LogState {
            log,
            producers: ProducerStates::default(),
            txns: PartitionTxns::default(),
            epochs: EpochHistory::default(),
        };
        st.rebuild()?;
        let snapshots = snapshot::SnapshotFiles::open(st.log.dir());
        Ok(Self {
            topic,
            index,
            topic_id: String::new(),
            leader_epoch: AtomicI32::new(-1),
            fencing_revision: AtomicI64::new(0),
            state: Mutex::new(st),
            config: RwLock::new(config),
            // Unknown until a leader says (or this replica leads): only what
            // is certainly committed is visible.
            high_watermark: AtomicI64::new(start),
            log_end: AtomicI64::new(end),
            log_start_offset: AtomicI64::new(start),
            unflushed_messages: AtomicI64::new(0),
            last_flush_ms: AtomicI64::new(now_ms),
            data_arrived: Notify::new(),
            appended: Notify::new(),
            replicas: Mutex::new(ReplicaSet::solo(-1)),
            snapshots,
            #[cfg(test)]
            housekeeping_thread: Mutex::new(None),
        })
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    /// This replica, as topic `id`'s.
    pub(crate) fn with_topic_id(mut self, id: String) -> Self {
        self.topic_id = id;
        self
    }

    /// The id of the topic this is a replica of (empty: not known).
    pub(crate) fn topic_id(&self) -> &str {
        &self.topic_id
    }

    /// Whether this is a replica of another topic than `id` (one deleted
    /// since, whose name a new topic took).
    pub(crate) fn is_other_topic(&self, id: &str) -> bool {
        !self.topic_id.is_empty() && self.topic_id != id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        // Log methods leave the log consistent at every return point, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replica_set(&self) -> std::sync::MutexGuard<'_, ReplicaSet> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch this broker leads the partition in, or -1 while following.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.leader_epoch() >= 0
    }

    pub fn fencing_revision(&self) -> i64 {
        self.fencing_revision.load(Ordering::Acquire)
    }

    /// Makes this replica the leader of `epoch`. Its log is the partition's
    /// truth from now on; the high watermark advances as `set`'s in-sync
    /// followers report their positions.
    pub fn promote(&self, epoch: i32, fencing_revision: i64, set: ReplicaSet) {
        let st = self.state();
        *self.replica_set() = set;
        self.fencing_revision
            .store(fencing_revision, Ordering::Release);
        self.leader_epoch.store(epoch, Ordering::Release);
        let end = st.log.next_offset();
        drop(st);
        self.update_high_watermark(end);
        self.appended.notify_waiters();
    }

    /// Stops leading: client writes are refused and waiting acknowledgements
    /// fail from now on.
    pub fn demote(&self) {
        let st = self.state();
        self.leader_epoch.store(-1, Ordering::Release);
        *self.replica_set() = ReplicaSet::solo(-1);
        drop(st);
        self.appended.notify_waiters();
        self.data_arrived.notify_waiters();
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Arc<TopicConfig>) {
        self.state().log.set_config(config.log_config());
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Raises the high watermark to what the ISR supports (never lowers it)
    /// and wakes waiting fetches if it moved.
    fn update_high_watermark(&self, leader_end: i64) {
        let supported = self.replica_set().high_watermark(leader_end);
        let old = self.high_watermark.fetch_max(supported, Ordering::AcqRel);
        if supported > old {
            self.data_arrived.notify_waiters();
            self.appended.notify_waiters();
        }
    }

    /// Validates and appends a client's record set as received (the log
    /// writes new headers before the request's records, never copying
    /// them), then wakes replication streams. A retry of an idempotent
    /// producer's batch gets its original offsets back.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, BrokerError> {
        let cfg = self.config();
        let limits = ValidationLimits {
            max_batch_bytes: cfg.max_message_bytes(),
        };
        let validated = validate_batches(records, limits)?;
        if !cfg.log_append_time() {
            check_timestamps(&validated, cfg.timestamp_bounds(), now_ms)?;
        }
        if validated
            .iter()
            .any(|v| v.header.is_transactional() && v.header.producer_id < 0)
        {
            return Err(BrokerError::InvalidRequest(
                "a transactional batch needs a producer id".into(),
            ));
        }
        let count: i64 = validated
            .iter()
            .map(|v| i64::from(v.header.records_count))
            .sum();
        let (info, end) = {
            let mut st = self.state();
            let epoch = self.leader_epoch();
            if epoch < 0 {
                return Err(BrokerError::NotLeader(self.name()));
            }
            for v in validated.iter().filter(|v| v.header.producer_id >= 0) {
                if let SequenceCheck::Duplicate { base_offset } = st.producers.check(&v.header)? {
                    if validated.len() != 1 {
                        return Err(BrokerError::InvalidRequest(
                            "a retried idempotent batch must be sent alone".into(),
                        ));
                    }
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset: base_offset + i64::from(v.header.last_offset_delta),
                        log_append_time: None,
                    });
                }
            }
            let stored =
                st.log
                    .append(records, &validated, epoch, now_ms, cfg.log_append_time())?;
            // The records (all `observe` reads past a header) are stored
            // as received.
            for (v, h) in validated.iter().zip(&stored.headers) {
                st.observe(h, records.get(v.position..).unwrap_or_default());
            }
            let info = stored.info;
            let end = st.log.next_offset();
            self.log_end.store(end, Ordering::Release);
            (info, end)
        };
        self.appended_as_leader(end, count);
        Ok(info)
    }

    /// After a leader's append reached `end` with `count` records: counts
    /// them for `flush.messages`, advances the high watermark (alone in the
    /// ISR it moves at once) and wakes replication streams.
    fn appended_as_leader(&self, end: i64, count: i64) {
        self.unflushed_messages.fetch_add(count, Ordering::AcqRel);
        self.update_high_watermark(end);
        self.appended.notify_waiters();
    }

    /// Reads whole batches from `offset` up to the high watermark, or for
    /// read_committed up to the last stable offset, with the aborted
    /// transactions the returned range overlaps: prepared under the lock,
    /// read without it ([`read_log`]: the page cache on this task, the disk
    /// on the blocking pool).
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<PartitionRead, BrokerError> {
        let (log, ctx) = self.prepare_read(offset, max_bytes, isolation)?;
        let data = read_log(log).await?;
        Ok(self.complete_read(ctx, data))
    }

    /// [`Self::read`] in steps, so the I/O runs without this partition's
    /// lock (appends never wait behind a read) and where the caller
    /// chooses: the [`LogRead`] reads (see [`read_log`]), then
    /// [`Self::complete_read`] adds the aborted transactions. Fails now if
    /// `offset` is outside the log.
    pub fn prepare_read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<(LogRead, ReadContext), BrokerError> {
        let mut st = self.state();
        let hw = self.high_watermark();
        let lso = st.txns.last_stable_offset(hw);
        let upper = match isolation {
            Isolation::ReadUncommitted => hw,
            Isolation::ReadCommitted => lso,
        };
        let log = st.log.prepare_read(offset, max_bytes, upper)?;
        Ok((
            log,
            ReadContext {
                offset,
                isolation,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: st.log.log_start_offset(),
            },
        ))
    }

    /// A prepared read's result, given the `data` its log read returned.
    pub fn complete_read(&self, prepared: ReadContext, data: Bytes) -> PartitionRead {
        let aborted = match prepared.isolation {
            Isolation::ReadCommitted if !data.is_empty() => {
                let end = end_of(&data, prepared.offset);
                self.state().txns.aborted_between(prepared.offset, end)
            }
            _ => Vec::new(),
        };
        PartitionRead {
            data,
            high_watermark: prepared.high_watermark,
            last_stable_offset: prepared.last_stable_offset,
            log_start_offset: prepared.log_start_offset,
            aborted,
        }
    }

    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.state().txns.last_stable_offset(hw)
    }

    /// Leader: appends a transaction marker for `producer_id` (a control
    /// batch ending its transaction here) and returns its offset.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, BrokerError> {
        let buf = build_control_batch(producer_id, producer_epoch, kind, coordinator_epoch, now_ms);
        let header = BatchHeader::parse(&buf)?;
        let (info, end) = {
            let mut st = self.state();
            let epoch = self.leader_epoch();
            if epoch < 0 {
                return Err(BrokerError::NotLeader(self.name()));
            }
            st.producers.check_marker(producer_id, producer_epoch)?;
            let batch = [ValidatedBatch {
                position: 0,
                header,
                min_timestamp: None,
            }];
            let stored = st.log.append(&buf, &batch, epoch, now_ms, false)?;
            for h in &stored.headers {
                st.observe(h, &buf);
            }
            let info = stored.info;
            let end = st.log.next_offset();
            self.log_end.store(end, Ordering::Release);
            (info, end)
        };
        self.appended_as_leader(end, 1);
        Ok(info)
    }

    /// Whether `producer_id` has an open transaction in this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.state().txns.is_open(producer_id)
    }

    /// Open transactions here, oldest first.
    pub fn open_transactions(&self) -> Vec<OpenTxn> {
        self.state().txns.open_transactions()
    }

    /// Producers with state here: (id, epoch, last sequence).
    pub fn producers(&self) -> Vec<(i64, i16, i32)> {
        self.state().producers.describe()
    }

    /// Aborted transactions overlapping `[from, to)` (for offload).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.state().txns.aborted_between(from, to)
    }

    /// A future that completes when the high watermark next advances; create
    /// it before checking for data so no advance can slip between the check
    /// and the wait.
    pub fn data_arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.data_arrived.notified()
    }

    /// A future that completes on the next append or role change.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Waits until the high watermark reaches `target` while this replica
    /// still leads in `epoch` (an acks=all produce), up to `timeout`.
    pub async fn wait_for_high_watermark(
        &self,
        target: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.appended();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.leader_epoch() != epoch {
                return Err(BrokerError::NotLeader(format!(
                    "{}: leadership moved before the write was replicated",
                    self.name()
                )));
            }
            if self.high_watermark() >= target {
                return Ok(());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::Timeout(format!(
                        "{}: in-sync replicas did not confirm offset {} within {} ms",
                        self.name(), target - 1, timeout.as_millis()
                    )));
                }
            }
        }
    }

    /// The ISR as last written to the metadata store.
    pub fn stored_isr(&self) -> Vec<i32> {
        self.replica_set().stored.iter().copied().collect()
    }

    /// Leader: the partition's replica list changed (a reassignment); new
    /// replicas are tracked from now, removed ones forgotten.
    pub fn set_replicas(&self, replicas: &[i32], now_ms: i64) {
        self.replica_set().set_replicas(replicas, now_ms);
    }

    /// Members of the in-sync replica set (as the high watermark counts them).
    pub fn isr_size(&self) -> usize {
        self.replica_set().isr.len()
    }

    /// Whole batches from `offset` up to the log end, for a follower; the
    /// offset after the last batch returned. Reads as a fetch does
    /// ([`read_log`]): without the lock, and on the blocking pool if the
    /// data is not in the page cache.
    pub async fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64), BrokerError> {
        let log = {
            let st = self.state();
            let end = st.log.next_offset();
            st.log.prepare_read(offset, max_bytes, end)?
        };
        let data = read_log(log).await?;
        let next = end_of(&data, offset);
        Ok((data, next))
    }

    /// Where a follower with this epoch history and log end must truncate.
    pub fn follower_start(&self, history: &EpochHistory, follower_end: i64) -> FollowerStart {
        let st = self.state();
        let truncate_to =
            EpochHistory::divergence(&st.epochs, st.log.next_offset(), history, follower_end);
        FollowerStart {
            truncate_to,
            log_start_offset: st.log.log_start_offset(),
            high_watermark: self.high_watermark(),
        }
    }

    /// Records that `follower` was sent data up to `leader_end`.
    pub fn sent_to_follower(&self, follower: i32, leader_end: i64, now_ms: i64) {
        self.replica_set().sent(follower, leader_end, now_ms);
    }

    /// Records a follower's log end and advances the high watermark.
    pub fn follower_position(&self, follower: i32, log_end: i64, now_ms: i64) {
        let end = self.log_end_offset();
        self.replica_set().position(follower, log_end, end, now_ms);
        self.update_high_watermark(end);
    }

    /// The ISR change this leader should write now, if any.
    pub fn wanted_isr_change(&self, now_ms: i64, lag_ms: i64) -> Option<IsrChange> {
        self.replica_set()
            .wanted_change(self.high_watermark(), now_ms, lag_ms)
    }

    pub fn begin_isr_change(&self, change: &IsrChange) {
        self.replica_set().begin(change);
    }

    pub fn commit_isr_change(&self, change: &IsrChange) {
        self.replica_set().committed(change);
        self.update_high_watermark(self.log_end_offset());
    }

    /// Kafka's OffsetForLeaderEpoch on this replica's log.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.state();
        st.epochs.end_offset_for(epoch, st.log.next_offset())
    }

    /// The leader epoch that wrote `offset` (the current one past the end).
    pub fn epoch_at(&self, offset: i64) -> i32 {
        let st = self.state();
        if offset >= st.log.next_offset() && self.leader_epoch() >= 0 {
            return self.leader_epoch();
        }
        st.epochs.epoch_at(offset).unwrap_or(-1)
    }

    pub fn epoch_history(&self) -> EpochHistory {
        self.state().epochs.clone()
    }

    /// Follower: applies the leader's [`FollowerStart`] — truncates a
    /// divergent tail, or restarts the log at the leader's local log start
    /// when this replica is below it. Returns the new log end.
    pub fn truncate_for_leader(
        &self,
        start: FollowerStart,
        now_ms: i64,
    ) -> Result<i64, BrokerError> {
        let mut st = self.state();
        if self.leader_epoch() >= 0 {
            return Err(BrokerError::InvalidRequest(format!(
                "{}: a leader does not truncate for another",
                self.name()
            )));
        }
        let end = st.log.next_offset();
        let behind = end < start.log_start_offset || start.truncate_to < st.log.log_start_offset();
        if behind {
            let _files = self.snapshots.truncating(st.log.dir(), None);
            st.log.reset_to(start.log_start_offset, now_ms)?;
            st.rebuild()?;
        } else if start.truncate_to < end {
            // Snapshots at or below the truncation point stay valid.
            let _files = self
                .snapshots
                .truncating(st.log.dir(), Some(start.truncate_to));
            st.log.truncate_to(start.truncate_to, now_ms)?;
            st.rebuild()?;
        }
        let end = st.log.next_offset();
        self.log_end.store(end, Ordering::Release);
        self.log_start_offset
            .store(st.log.log_start_offset(), Ordering::Release);
        // A restarted log may sit above the old high watermark.
        let hw = start.high_watermark.min(end).max(st.log.log_start_offset());
        self.high_watermark.store(hw, Ordering::Release);
        Ok(end)
    }

    /// Follower: appends batches copied from the leader as stored, and
    /// takes the leader's high watermark (capped at the local log end).
    pub fn append_replicated(
        &self,
        data: &[u8],
        leader_hw: i64,
        now_ms: i64,
    ) -> Result<i64, BrokerError> {
        let mut st = self.state();
        if self.leader_epoch() >= 0 {
            return Err(BrokerError::NotLeader(format!(
                "{}: leads now; not appending replicated data",
                self.name()
            )));
        }
        let mut count = 0i64;
        if !data.is_empty() {
            st.log.append_stored(data, now_ms)?;
            for (at, h) in BatchIter::new(data) {
                count += i64::from(h.records_count);
                st.observe(&h, &data[at..]);
            }
        }
        let end = st.log.next_offset();
        self.log_end.store(end, Ordering::Release);
        drop(st);
        self.unflushed_messages.fetch_add(count, Ordering::AcqRel);
        self.set_follower_high_watermark(leader_hw);
        Ok(end)
    }

    /// Follower: takes the leader's high watermark (capped at the log end).
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log_end_offset());
        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        Ok(self.state().log.offset_for_timestamp(ts)?)
    }

    /// Detached fsync handle on the active segment (fsync runs off the lock).
    pub fn flush_handle(&self) -> Result<FlushHandle, BrokerError> {
        Ok(self.state().log.flush_handle()?)
    }

    /// Records that everything appended so far is on disk.
    pub fn mark_flushed(&self, now_ms: i64) {
        self.unflushed_messages.store(0, Ordering::Release);
        self.last_flush_ms.store(now_ms, Ordering::Release);
    }

    pub fn unflushed_messages(&self) -> i64 {
        self.unflushed_messages.load(Ordering::Acquire)
    }

    pub fn last_flush_ms(&self) -> i64 {
        self.last_flush_ms.load(Ordering::Acquire)
    }

    /// Time-based roll and retention (of segments `may_delete` allows);
    /// returns segments deleted.
    pub fn housekeeping(
        &self,
        now_ms: i64,
        may_delete: impl Fn(&SegmentInfo) -> bool,
    ) -> Result<usize, BrokerError> {
        #[cfg(test)]
        {
            *self
                .housekeeping_thread
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current().id());
        }
        let mut st = self.state();
        st.log.roll_if_due(now_ms)?;
        let n = st.log.enforce_retention_where(now_ms, may_delete)?;
        let start = st.log.log_start_offset();
        st.txns.prune_below(start);
        self.log_start_offset.store(start, Ordering::Release);
        // A segment rolled since the last snapshot: take one at the log end,
        // so a reopen replays at most about a segment. Taken under the
        // lock, written (and fsync'd) after it: a produce does not wait
        // for the disk, and `SnapshotFiles` drops it if a truncation comes
        // between.
        let active_base = st.log.segments().last().map_or(0, |s| s.base_offset);
        let end = st.log.next_offset();
        let last = self.snapshots.newest();
        let snap = (active_base > last.max(0) && end > last).then(|| {
            let snap = snapshot::Snapshot::new(end, &st.producers, &st.txns, &st.epochs);
            (snap, self.snapshots.taken(), st.log.dir().to_path_buf())
        });
        drop(st);
        if let Some((snap, taken, dir)) = snap {
            #[cfg(test)]
            self.snapshots.at("taken");
            if let Err(e) = self.snapshots.write(&dir, &snap, taken) {
                tracing::warn!(partition = %self.name(), error = %e, "cannot write a producer-state snapshot");
            }
        }
        Ok(n)
    }

    /// DeleteRecords on the local log: drops segments wholly below `offset`.
    pub fn delete_below(&self, offset: i64, now_ms: i64) -> Result<usize, BrokerError> {
        Ok(self.state().log.delete_below(offset, now_ms)?)
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.state().log.segments()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state().log.size_bytes()
    }

    /// Removes the partition's directory (topic deletion, replica moved away).
    pub fn delete_files(&self) -> Result<(), BrokerError> {
        let dir = self.state().log.dir().to_path_buf();
        // No snapshot written into the directory as it goes.
        let _files = self.snapshots.removing();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BrokerError::Storage(format!(
                "cannot delete {}: {e}",
                dir.display()
            ))),
        }
    }
}

pub(crate) mod incarnation;
#[cfg(test)]
mod tests;
