//! Broker counters, rendered by the HTTP edge in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub produce_requests: AtomicU64,
    pub produce_bytes: AtomicU64,
    /// Partition appends refused (any error).
    pub produce_errors: AtomicU64,
    pub fetch_responses: AtomicU64,
    pub fetch_bytes: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub requests_total: AtomicU64,
    pub request_errors: AtomicU64,
    pub malformed_frames: AtomicU64,
    pub offloaded_segments: AtomicU64,
    pub offload_errors: AtomicU64,
    pub cold_reads: AtomicU64,
    /// Cold reads that went on from a kept cursor (see `cold::cursors`).
    pub cold_reads_continued: AtomicU64,
}

impl Metrics {
    pub fn record_produce(&self, bytes: usize) {
        self.produce_requests.fetch_add(1, Ordering::Relaxed);
        self.produce_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn record_fetch(&self, bytes: usize) {
        self.fetch_responses.fetch_add(1, Ordering::Relaxed);
        self.fetch_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
