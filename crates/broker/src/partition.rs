//! One partition replica led by this broker: its log, watermarks and the
//! signal that wakes waiting fetches.
//!
//! Invariants: the high watermark never exceeds the log end offset and never
//! moves backwards while the partition is open; every successful append wakes
//! all fetches waiting on this partition.

use crate::config::TopicConfig;
use crate::error::BrokerError;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use strata_log::{AppendInfo, FlushHandle, PartitionLog, SegmentInfo};
use strata_record::{validate_batches, ValidationLimits};
use tokio::sync::Notify;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub leader_epoch: i32,
    log: Mutex<PartitionLog>,
    config: RwLock<Arc<TopicConfig>>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    unflushed_messages: AtomicI64,
    last_flush_ms: AtomicI64,
    data_arrived: Notify,
}

/// Where a fetch should start, resolved against the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    pub data: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        leader_epoch: i32,
        log: PartitionLog,
        config: Arc<TopicConfig>,
        now_ms: i64,
    ) -> Self {
        let hw = log.next_offset();
        let start = log.log_start_offset();
        Self {
            topic,
            index,
            leader_epoch,
            log: Mutex::new(log),
            config: RwLock::new(config),
            high_watermark: AtomicI64::new(hw),
            log_start_offset: AtomicI64::new(start),
            unflushed_messages: AtomicI64::new(0),
            last_flush_ms: AtomicI64::new(now_ms),
            data_arrived: Notify::new(),
        }
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        // Log methods leave the log consistent at every return point, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Arc<TopicConfig>) {
        self.log().set_config(config.log_config());
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Validates and appends a client's record set as received (one copy into
    /// a mutable buffer to stamp offsets), then wakes waiting fetches.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, BrokerError> {
        let cfg = self.config();
        let limits = ValidationLimits {
            max_batch_bytes: cfg.max_message_bytes(),
        };
        let validated = validate_batches(records, limits)?;
        let mut buf = BytesMut::from(&records[..]);
        let count: i64 = validated
            .iter()
            .map(|v| i64::from(v.header.records_count))
            .sum();
        let info = {
            let mut log = self.log();
            let info = log.append(
                &mut buf,
                &validated,
                self.leader_epoch,
                now_ms,
                cfg.log_append_time(),
            )?;
            // Single replica: the high watermark is the log end offset.
            self.high_watermark
                .store(log.next_offset(), Ordering::Release);
            info
        };
        self.unflushed_messages.fetch_add(count, Ordering::AcqRel);
        self.data_arrived.notify_waiters();
        Ok(info)
    }

    /// Reads whole batches from `offset` up to the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<PartitionRead, BrokerError> {
        let log = self.log();
        let hw = self.high_watermark();
        let r = log.read(offset, max_bytes, hw)?;
        Ok(PartitionRead {
            data: r.data,
            high_watermark: hw,
            log_start_offset: log.log_start_offset(),
        })
    }

    /// A future that completes on the next append; create it before checking
    /// for data so no append can slip between the check and the wait.
    pub fn data_arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.data_arrived.notified()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        Ok(self.log().offset_for_timestamp(ts)?)
    }

    /// Detached fsync handle on the active segment (fsync runs off the lock).
    pub fn flush_handle(&self) -> Result<FlushHandle, BrokerError> {
        Ok(self.log().flush_handle()?)
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

    /// Time-based roll and retention; returns segments deleted.
    pub fn housekeeping(&self, now_ms: i64) -> Result<usize, BrokerError> {
        let mut log = self.log();
        log.roll_if_due(now_ms)?;
        let n = log.enforce_retention(now_ms)?;
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        Ok(n)
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.log().segments()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log().size_bytes()
    }

    pub fn flush_sync(&self) -> Result<(), BrokerError> {
        Ok(self.log().flush()?)
    }

    /// Removes the partition's directory (topic deletion).
    pub fn delete_files(&self) -> Result<(), BrokerError> {
        let log = self.log();
        let dir = log.dir().to_path_buf();
        drop(log);
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
