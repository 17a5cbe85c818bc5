//! Local-log hot spots: appending a produce request's batches to the active
//! segment, finding a batch by offset through the sparse index, and
//! assembling a fetch (reading whole batches up to `max_bytes`).
//! Appends are not fsync'd here: that cost is the disk's, measured by the
//! machine-limit step of `scripts/bench.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark inputs are built here

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata_log::{LogConfig, PartitionLog};
use strata_record::{sample_batch, validate_batches, ValidationLimits};

const LIMITS: ValidationLimits = ValidationLimits {
    max_batch_bytes: 1 << 20,
};

/// 16 batches of 160 records of 100 bytes (~300 KB), as one produce request.
fn request() -> BytesMut {
    let one = sample_batch(160, 100, 1_700_000_000_000);
    let mut out = BytesMut::new();
    for _ in 0..16 {
        out.extend_from_slice(&one);
    }
    out
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    let req = request();
    let validated = validate_batches(&req, LIMITS).unwrap();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("append/16x160x100B", |b| {
        b.iter(|| log.append(&req, &validated, 1, 0, false).unwrap())
    });
    g.finish();
}

/// A log of ~64 MiB (one segment) to read from.
fn filled() -> (tempfile::TempDir, PartitionLog) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), 0).unwrap();
    let req = request();
    let validated = validate_batches(&req, LIMITS).unwrap();
    while log.size_bytes() < 64 << 20 {
        log.append(&req, &validated, 1, 0, false).unwrap();
    }
    (dir, log)
}

fn read(c: &mut Criterion) {
    let (_dir, log) = filled();
    let end = log.next_offset();
    let mut g = c.benchmark_group("log");
    // A pseudo-random walk over offsets: each read is an index binary search
    // plus a scan of at most index.interval.bytes and one positioned read.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("index_lookup/read_one_batch_at_random_offset", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = (x % end as u64) as i64;
            black_box(log.read(offset, 1, end).unwrap())
        })
    });
    g.throughput(Throughput::Bytes(1 << 20));
    // The next 1 MiB fetch of a consumer at `at`, which it moves on (back
    // to the start at the end of the log).
    let next_fetch = |at: &mut i64| {
        let r = log.read(*at, 1 << 20, end).unwrap();
        let batches = strata_record::BatchIter::new(&r.data);
        let last = batches.last().map(|(_, h)| h.next_offset()).unwrap_or(end);
        *at = if last >= end { 0 } else { last };
        r
    };
    let mut at = 0i64;
    g.bench_function("fetch_assembly/1MiB_sequential", |b| {
        b.iter(|| black_box(next_fetch(&mut at)))
    });
    // A fetch of four partitions (Java consumers, librdkafka): four 1 MiB
    // reads held together until the response is written, then dropped
    // together. Fresh buffers each time cost page faults; pooled ones not
    // (docs/decisions/0008).
    g.throughput(Throughput::Bytes(4 << 20));
    let mut at = 0i64;
    g.bench_function("fetch_assembly/4x1MiB_held_together", |b| {
        b.iter(|| {
            let held: Vec<_> = (0..4).map(|_| next_fetch(&mut at)).collect();
            black_box(held)
        })
    });
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
