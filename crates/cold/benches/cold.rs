//! Cold-tier hot spots: converting a sealed segment to Parquet (offload) and
//! rebuilding Kafka record batches from a Parquet file (cold fetch), from
//! the start and from the middle of the file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark inputs are built here

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata_cold::{
    read_batches, write_segment, ColdCursor, DecodedFile, ReadOptions, WriteOptions,
};
use strata_record::BatchHeader;
use strata_record::{
    assign_offset_and_epoch, build_batch_with, sample_batch, BatchProducer, KeyValue,
};

/// What the records of a benchmark segment hold.
#[derive(Clone, Copy)]
enum Payload {
    /// Keys `key-NNNNNN`, values all the same byte (compresses to nothing).
    Same,
    /// No keys; values of random letters, a different one for every record
    /// (like log lines or JSON: no dictionary, some compression).
    Text,
    /// [`Payload::Text`] from one idempotent producer: sequences in step
    /// with the offsets, batch after batch (the rebuild's runs then depend
    /// on the sequences).
    TextIdempotent,
}

/// A sealed segment of ~`bytes` bytes: batches of `records` records of
/// `value` bytes with consecutive offsets.
fn segment(bytes: usize, records: usize, value: usize, payload: Payload) -> (Bytes, i64) {
    let mut out = BytesMut::new();
    let mut next = 0i64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut letters = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect()
    };
    while out.len() < bytes {
        let ts = 1_700_000_000_000 + next;
        let mut b = match payload {
            Payload::Same => sample_batch(records, value, ts),
            Payload::Text | Payload::TextIdempotent => {
                let values: Vec<Vec<u8>> = (0..records).map(|_| letters(value)).collect();
                let recs: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(&v[..]))).collect();
                let producer = match payload {
                    Payload::TextIdempotent => BatchProducer {
                        attributes: 0,
                        producer_id: 7,
                        producer_epoch: 0,
                        base_sequence: next as i32,
                    },
                    _ => BatchProducer::NONE,
                };
                build_batch_with(0, ts, producer, &recs)
            }
        };
        assign_offset_and_epoch(&mut b, next, 1);
        out.extend_from_slice(&b);
        next += records as i64;
    }
    (out.freeze(), next)
}

/// The last offset in rebuilt batches (each buffer one batch).
fn last_offset(batches: &[BytesMut]) -> i64 {
    batches
        .last()
        .map(|b| BatchHeader::parse(b).unwrap().last_offset())
        .unwrap()
}

const SHAPES: [(&str, usize, usize, Payload); 4] = [
    ("100B", 160, 100, Payload::Same),
    ("100B_text", 160, 100, Payload::Text),
    ("1KiB", 16, 1024, Payload::Same),
    ("100B_text_idempotent", 160, 100, Payload::TextIdempotent),
];
const SEGMENT_BYTES: usize = 8 << 20;

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("parquet_encode");
    g.sample_size(10);
    for (name, records, value, payload) in SHAPES {
        if matches!(payload, Payload::TextIdempotent) {
            // Here for the cold read's runs; the offload's figures (and
            // the matrix's offload rows) stay the other three shapes.
            continue;
        }
        let (seg, _) = segment(SEGMENT_BYTES, records, value, payload);
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
    for (name, records, value, payload) in SHAPES {
        let (seg, end) = segment(SEGMENT_BYTES, records, value, payload);
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
        let tiny = ReadOptions {
            from_offset: end / 2,
            max_bytes: 1,
            ..ReadOptions::default()
        };
        g.bench_function(format!("fetch_one_batch_from_middle/{name}"), |b| {
            b.iter(|| read_batches(black_box(&file), &tiny, 1).unwrap())
        });
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(format!("fetch_1MiB_from_middle/{name}"), |b| {
            b.iter(|| read_batches(black_box(&file), &mid, 1).unwrap())
        });
        // A consumer starting in the middle (of the file and of a row
        // group) and reading on to the end, in one read.
        let rest = ReadOptions {
            from_offset: end / 2,
            ..ReadOptions::default()
        };
        g.throughput(Throughput::Bytes(seg.len() as u64 / 2));
        g.bench_function(format!("rest_of_file_from_middle/{name}"), |b| {
            b.iter(|| read_batches(black_box(&file), &rest, 1).unwrap())
        });
        // A consumer reading the whole file in 1 MiB fetches: each fetch a
        // fresh read from the next offset, or continued on one cursor (what
        // the broker does for a consumer that asks for the next offset).
        g.throughput(Throughput::Bytes(seg.len() as u64));
        g.bench_function(format!("sequential_1MiB_fetches_fresh/{name}"), |b| {
            b.iter(|| {
                let mut from = 0;
                while from < end {
                    let o = ReadOptions {
                        from_offset: from,
                        max_bytes: 1 << 20,
                        ..ReadOptions::default()
                    };
                    let got = read_batches(black_box(&file), &o, 1).unwrap();
                    from = last_offset(&got) + 1;
                }
            })
        });
        g.bench_function(format!("sequential_1MiB_fetches_cursor/{name}"), |b| {
            b.iter(|| {
                let mut c = ColdCursor::open(black_box(file.clone()), 0, 1).unwrap();
                while c.next_offset() < end {
                    c.read_blocking(1 << 20, 1000).unwrap();
                }
            })
        });
        // The rebuild alone (the other half of a read, its own thread in
        // the broker): rows decoded once, rebuilt in 1 MiB fetches.
        let decoded = DecodedFile::decode(file.clone()).unwrap();
        // The decode alone (the other thread's half): every row of the
        // file decoded into Arrow batches, as a cursor from its start
        // decodes them.
        g.bench_function(format!("decode_only/{name}"), |b| {
            b.iter(|| DecodedFile::decode(black_box(file.clone())).unwrap())
        });
        g.bench_function(format!("rebuild_only_1MiB_fetches/{name}"), |b| {
            b.iter(|| decoded.rebuild(black_box(1 << 20), 1000).unwrap())
        });
        // The same with the cursor split: Parquet decoded on a second thread.
        g.bench_function(format!("sequential_1MiB_fetches_split/{name}"), |b| {
            b.iter(|| {
                let mut c = ColdCursor::open(black_box(file.clone()), 0, 1).unwrap();
                let d = c.split().unwrap();
                let t = std::thread::spawn(move || d.run_blocking());
                while c.next_offset() < end {
                    c.read_blocking(1 << 20, 1000).unwrap();
                }
                t.join().unwrap();
            })
        });
    }
    g.finish();
}

/// A whole file range-read from a store that answers each request after
/// `LATENCY` (an object store's round trip; S3's is tens of ms): the
/// ranged cursor fetches row groups ahead of the one it decodes, so its
/// time is well under (footer + row groups) × `LATENCY`, what reading one
/// request after another would take (printed with the file's row groups).
fn ranged(c: &mut Criterion) {
    use object_store::memory::InMemory;
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    use object_store::{ObjectStore, ObjectStoreExt};
    use std::sync::Arc;
    use std::time::Duration;
    use strata_cold::StoreObject;
    const LATENCY: Duration = Duration::from_millis(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("parquet_ranged_read");
    g.sample_size(10);
    let (name, records, value, payload) = SHAPES[1];
    let (seg, end) = segment(SEGMENT_BYTES, records, value, payload);
    let file = write_segment(&seg, &WriteOptions::new("bench", 0, 1))
        .unwrap()
        .bytes;
    let groups = parquet::file::reader::FileReader::num_row_groups(
        &parquet::file::serialized_reader::SerializedFileReader::new(file.clone()).unwrap(),
    );
    let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_get_per_call: LATENCY,
            ..ThrottleConfig::default()
        },
    ));
    let path = object_store::path::Path::from("f.parquet");
    rt.block_on(store.put(&path, file.clone().into())).unwrap();
    eprintln!(
        "parquet_ranged_read: {groups} row groups; one request after another: >= {} ms",
        (groups as u128 + 1) * LATENCY.as_millis()
    );
    // The whole file in 1 MiB reads through a ranged cursor.
    let read_ranged = |object: StoreObject| {
        rt.block_on(async {
            let mut c = ColdCursor::open_ranged(object, 0, 1).await.unwrap();
            while c.next_offset() < end {
                c.read(1 << 20, 1000).await.unwrap();
            }
        })
    };
    let object = || StoreObject::new(store.clone(), "f.parquet", file.len() as u64);
    g.throughput(Throughput::Bytes(seg.len() as u64));
    g.bench_function(format!("whole_file_10ms_per_request/{name}"), |b| {
        b.iter(|| read_ranged(object()))
    });
    // CPU alone: the same reads with every range in a warm cache (a file
    // read again after a restart, or offloaded by another broker), against
    // the file held whole in memory.
    let cache = strata_cold::ColdCache::new(256 << 20);
    let warm = || object().cached(cache.clone());
    read_ranged(warm());
    g.bench_function(format!("whole_file_warm_cache/{name}"), |b| {
        b.iter(|| read_ranged(warm()))
    });
    g.bench_function(format!("whole_file_in_memory/{name}"), |b| {
        b.iter(|| {
            let mut c = ColdCursor::open(file.clone(), 0, 1).unwrap();
            while c.next_offset() < end {
                c.read_blocking(1 << 20, 1000).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode, ranged);
criterion_main!(benches);
