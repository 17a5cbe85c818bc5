//! One partition replica led by this broker: its log, watermarks and the
//! signal that wakes waiting fetches.
//!
//! Invariants: the high watermark never exceeds the log end offset and never
//! moves backwards while the partition is open; every successful append wakes
//! all fetches waiting on this partition.

use crate::config::TopicConfig;
use crate::error::BrokerError;
use crate::producers::{ProducerStates, SequenceCheck};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use strata_log::{AppendInfo, FlushHandle, PartitionLog, SegmentInfo};
use strata_record::{validate_batches, BatchHeader, ValidationLimits};
use tokio::sync::Notify;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub leader_epoch: i32,
    /// Create revision of this broker's leader key: metadata writes made as
    /// leader (manifest commits) are guarded by it.
    pub fencing_revision: i64,
    state: Mutex<LogState>,
    config: RwLock<Arc<TopicConfig>>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    unflushed_messages: AtomicI64,
    last_flush_ms: AtomicI64,
    data_arrived: Notify,
}

/// The log and the producer state, changed together under one lock so a
/// sequence check and the append it allows are atomic.
struct LogState {
    log: PartitionLog,
    producers: ProducerStates,
}

/// Where a fetch should start, resolved against the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    pub data: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    /// Wraps an opened log, rebuilding idempotent-producer state from the
    /// stored batch headers.
    pub fn open(
        topic: String,
        index: i32,
        leader_epoch: i32,
        fencing_revision: i64,
        log: PartitionLog,
        config: Arc<TopicConfig>,
        now_ms: i64,
    ) -> Result<Self, BrokerError> {
        let hw = log.next_offset();
        let start = log.log_start_offset();
        let mut producers = ProducerStates::default();
        log.for_each_header(|h| producers.record(h))?;
        Ok(Self {
            topic,
            index,
            leader_epoch,
            fencing_revision,
            state: Mutex::new(LogState { log, producers }),
            config: RwLock::new(config),
            high_watermark: AtomicI64::new(hw),
            log_start_offset: AtomicI64::new(start),
            unflushed_messages: AtomicI64::new(0),
            last_flush_ms: AtomicI64::new(now_ms),
            data_arrived: Notify::new(),
        })
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        // Log methods leave the log consistent at every return point, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Validates and appends a client's record set as received (one copy into
    /// a mutable buffer to stamp offsets), then wakes waiting fetches. A retry
    /// of an idempotent producer's batch gets its original offsets back.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, BrokerError> {
        let cfg = self.config();
        let limits = ValidationLimits {
            max_batch_bytes: cfg.max_message_bytes(),
        };
        let validated = validate_batches(records, limits)?;
        if validated.iter().any(|v| v.header.is_transactional()) {
            return Err(BrokerError::InvalidRequest(
                "transactional batches are not supported yet".into(),
            ));
        }
        let mut buf = BytesMut::from(&records[..]);
        let count: i64 = validated
            .iter()
            .map(|v| i64::from(v.header.records_count))
            .sum();
        let info = {
            let mut st = self.state();
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
            let info = st.log.append(
                &mut buf,
                &validated,
                self.leader_epoch,
                now_ms,
                cfg.log_append_time(),
            )?;
            for v in &validated {
                st.producers
                    .record(&BatchHeader::parse(&buf[v.position..])?);
            }
            // Single replica: the high watermark is the log end offset.
            self.high_watermark
                .store(st.log.next_offset(), Ordering::Release);
            info
        };
        self.unflushed_messages.fetch_add(count, Ordering::AcqRel);
        self.data_arrived.notify_waiters();
        Ok(info)
    }

    /// Reads whole batches from `offset` up to the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<PartitionRead, BrokerError> {
        let st = self.state();
        let hw = self.high_watermark();
        let r = st.log.read(offset, max_bytes, hw)?;
        Ok(PartitionRead {
            data: r.data,
            high_watermark: hw,
            log_start_offset: st.log.log_start_offset(),
        })
    }

    /// A future that completes on the next append; create it before checking
    /// for data so no append can slip between the check and the wait.
    pub fn data_arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.data_arrived.notified()
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
        let mut st = self.state();
        st.log.roll_if_due(now_ms)?;
        let n = st.log.enforce_retention_where(now_ms, may_delete)?;
        self.log_start_offset
            .store(st.log.log_start_offset(), Ordering::Release);
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

    /// Removes the partition's directory (topic deletion).
    pub fn delete_files(&self) -> Result<(), BrokerError> {
        let dir = self.state().log.dir().to_path_buf();
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
