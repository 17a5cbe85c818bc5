//! Produce-path hot spots in `strata-record`: validating a client's record
//! set (lengths, CRC-32C, every record parsed, compressed ones
//! decompressed first), stamping offsets and the leader
//! epoch, and the record-level decode/encode the cold tier uses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark inputs are built here

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata_record::{
    assign_offset_and_epoch, build_batch, compress_batch, decode_batch, encode_batch, sample_batch,
    validate_batches, Compression, KeyValue, ValidationLimits,
};

/// A produce request's record set: `batches` batches of `records` records
/// with `value` bytes each.
fn record_set(batches: usize, records: usize, value: usize) -> BytesMut {
    let one = sample_batch(records, value, 1_700_000_000_000);
    let mut out = BytesMut::new();
    for _ in 0..batches {
        out.extend_from_slice(&one);
    }
    out
}

const SHAPES: [(&str, usize, usize, usize); 2] = [
    // name, batches per request, records per batch, value bytes
    ("100B", 16, 160, 100),
    ("1KiB", 16, 16, 1024),
];

fn validate(c: &mut Criterion) {
    let limits = ValidationLimits {
        max_batch_bytes: 1 << 20,
    };
    let mut g = c.benchmark_group("validate_batches");
    for (name, batches, records, value) in SHAPES {
        let buf = record_set(batches, records, value);
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| validate_batches(black_box(&buf), limits).unwrap())
        });
    }
    // 100 B records with two headers each (a trace id and a content
    // type, as tracing clients add): their keys are checked as UTF-8.
    let buf = headers_set(16, 160, 100);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("100B_2headers", |b| {
        b.iter(|| validate_batches(black_box(&buf), limits).unwrap())
    });
    // A 100 B record set compressed as producers commonly send it: checking
    // it decompresses it first.
    for (name, codec) in [
        ("100B_gzip", Compression::Gzip),
        ("100B_snappy", Compression::Snappy),
        ("100B_lz4", Compression::Lz4),
        ("100B_zstd", Compression::Zstd),
    ] {
        let buf = compressed_set(16, 160, 100, codec);
        g.throughput(Throughput::Elements(16 * 160));
        g.bench_function(name, |b| {
            b.iter(|| validate_batches(black_box(&buf), limits).unwrap())
        });
    }
    g.finish();
}

/// `batches` batches of `records` records of `value` bytes (text-like:
/// a counter in a repeated phrase), compressed with `codec`.
fn compressed_set(batches: usize, records: usize, value: usize, codec: Compression) -> BytesMut {
    let keys: Vec<String> = (0..records).map(|i| format!("key-{i:06}")).collect();
    let values: Vec<String> = (0..records)
        .map(|i| {
            let mut v = format!("event {i} user-{} ", i * 7919 % 1000).repeat(value / 10);
            v.truncate(value);
            v
        })
        .collect();
    let recs: Vec<KeyValue<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes())))
        .collect();
    let one = compress_batch(&build_batch(0, 1_700_000_000_000, &recs), codec).unwrap();
    let mut out = BytesMut::new();
    for _ in 0..batches {
        out.extend_from_slice(&one);
    }
    out
}

/// [`record_set`] with two headers on every record.
fn headers_set(batches: usize, records: usize, value: usize) -> BytesMut {
    let one = sample_batch(records, value, 1_700_000_000_000).freeze();
    let mut recs = decode_batch(&one).unwrap().records;
    for (i, r) in recs.iter_mut().enumerate() {
        let trace = format!("{:032x}", i * 2_654_435_761);
        r.headers = vec![
            ("traceparent".into(), Some(trace.into_bytes().into())),
            (
                "content-type".into(),
                Some(Bytes::from_static(b"application/json")),
            ),
        ];
    }
    let one = encode_batch(&recs);
    let mut out = BytesMut::new();
    for _ in 0..batches {
        out.extend_from_slice(&one);
    }
    out
}

fn assign_offsets(c: &mut Criterion) {
    let limits = ValidationLimits {
        max_batch_bytes: 1 << 20,
    };
    let mut g = c.benchmark_group("assign_offset_and_epoch");
    for (name, batches, records, value) in SHAPES {
        let mut buf = record_set(batches, records, value);
        let validated = validate_batches(&buf, limits).unwrap();
        g.throughput(Throughput::Elements((batches * records) as u64));
        let mut next = 0i64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for vb in &validated {
                    let size = vb.header.total_size();
                    assign_offset_and_epoch(&mut buf[vb.position..vb.position + size], next, 7);
                    next += i64::from(vb.header.records_count);
                }
            })
        });
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, _, records, value) in SHAPES {
        let batch = record_set(1, records, value).freeze();
        g.throughput(Throughput::Elements(records as u64));
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_batch(black_box(&batch)).unwrap())
        });
        let decoded = decode_batch(&batch).unwrap().records;
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_batch(black_box(&decoded)))
        });
    }
    g.finish();
}

criterion_group!(benches, validate, assign_offsets, codec);
criterion_main!(benches);
