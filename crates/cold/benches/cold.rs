//! Cold-tier hot spots: converting a sealed segment to Parquet (offload) and
//! rebuilding Kafka record batches from a Parquet file (cold fetch), from
//! the start and from the middle of the file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark inputs are built here

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata_cold::{read_batches, write_segment, ReadOptions, WriteOptions};
use strata_record::{assign_offset_and_epoch, sample_batch};

/// A sealed segment of ~`bytes` bytes: batches of `records` records of
/// `value` bytes with consecutive offsets.
fn segment(bytes: usize, records: usize, value: usize) -> (Bytes, i64) {
    let mut out = BytesMut::new();
    let mut next = 0i64;
    while out.len() < bytes {
        let mut b = sample_batch(records, value, 1_700_000_000_000 + next);
        assign_offset_and_epoch(&mut b, next, 1);
        out.extend_from_slice(&b);
        next += records as i64;
    }
    (out.freeze(), next)
}

const SHAPES: [(&str, usize, usize); 2] = [("100B", 160, 100), ("1KiB", 16, 1024)];
const SEGMENT_BYTES: usize = 8 << 20;

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("parquet_encode");
    g.sample_size(10);
    for (name, records, value) in SHAPES {
        let (seg, _) = segment(SEGMENT_BYTES, records, value);
        let opts = WriteOptions::new("bench", 0, 1);
        g.throughput(Throughput::Bytes(seg.len() as u64));
        g.bench_function(format!("segment_8MiB/{name}"), |b| {
            b.iter(|| write_segment(black_box(&seg), &opts).unwrap())
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("parquet_decode_rebuild");
    g.sample_size(10);
    for (name, records, value) in SHAPES {
        let (seg, end) = segment(SEGMENT_BYTES, records, value);
        let file = write_segment(&seg, &WriteOptions::new("bench", 0, 1))
            .unwrap()
            .bytes;
        g.throughput(Throughput::Bytes(seg.len() as u64));
        g.bench_function(format!("whole_segment/{name}"), |b| {
            b.iter(|| read_batches(black_box(&file), &ReadOptions::default(), 1).unwrap())
        });
        // A consumer fetch: 1 MiB from the middle (row-group skipping).
        let mid = ReadOptions {
            from_offset: end / 2,
            max_bytes: 1 << 20,
            ..ReadOptions::default()
        };
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(format!("fetch_1MiB_from_middle/{name}"), |b| {
            b.iter(|| read_batches(black_box(&file), &mid, 1).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
