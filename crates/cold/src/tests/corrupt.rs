//! Corrupt segment files: a segment's Parquet file with bytes changed at
//! random (mostly in its footer, which says where everything else is),
//! read whole from memory, range-read from a store, and searched by
//! timestamp. Each read returns records or an error; none panics. (The
//! parquet crate asserts on some corrupt footers and pages: a negative
//! chunk offset, a bit width past 64. Such a panic in a broker would
//! cost a connection, or a thread a cursor waits on, for one bad
//! object.) Seeded, so a failure repeats: `STRATA_MUTATION_SEED` picks
//! another seed and `STRATA_MUTATIONS` the number of mutants (800).

use super::*;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// A number below `n` (0 for 0).
fn below(rng: &mut TestRng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// `good` with one to three bytes changed: three times in four within its
/// footer (and the footer's length and magic after it), else anywhere.
fn mutate(good: &[u8], rng: &mut TestRng) -> Bytes {
    let n = good.len();
    let footer = u32::from_le_bytes([good[n - 8], good[n - 7], good[n - 6], good[n - 5]]) as usize;
    let mut b = good.to_vec();
    for _ in 0..1 + below(rng, 3) {
        let at = if below(rng, 4) == 0 {
            below(rng, n)
        } else {
            n - 8 - footer + below(rng, footer + 8)
        };
        b[at] = match below(rng, 4) {
            0 => b[at] ^ 1 << below(rng, 8),
            1 => [0x00, 0x7f, 0x80, 0xff, 0x0f, 0xf0][below(rng, 6)],
            2 => b[at] ^ (rng.next_u64() as u8 | 1),
            _ => rng.next_u64() as u8,
        };
    }
    Bytes::from(b)
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_never_a_panic() {
    let file = file_of(10, 100, 100, Compression::None, 100);
    let seed: u64 = std::env::var("STRATA_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed.to_le_bytes().repeat(4));
    let ro = ReadOptions {
        max_bytes: 1 << 20,
        ..ReadOptions::default()
    };
    let (mut read, mut refused) = (0, 0);
    let mutants: usize = std::env::var("STRATA_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800);
    for i in 0..mutants {
        let bytes = mutate(&file.bytes, &mut rng);
        let whole = std::panic::catch_unwind(|| read_batches(&bytes, &ro, 1));
        let Ok(whole) = whole else {
            panic!("mutant {i} (seed {seed}): the in-memory read panicked");
        };
        let store = store_with("k.parquet", &bytes).await;
        let object = || StoreObject::new(store.clone(), "k.parquet", bytes.len() as u64);
        let (o, r) = (object(), ro.clone());
        let ranged = tokio::spawn(async move { read_batches_ranged(o, &r, 1).await }).await;
        let Ok(ranged) = ranged else {
            panic!("mutant {i} (seed {seed}): the ranged read panicked");
        };
        let seek = tokio::spawn(offset_for_timestamp_ranged(object(), 0)).await;
        assert!(
            seek.is_ok(),
            "mutant {i} (seed {seed}): the timestamp search panicked"
        );
        for r in [whole, ranged] {
            match r {
                Ok(_) => read += 1,
                Err(_) => refused += 1,
            }
        }
    }
    // Most mutants are refused; those that change only what the reader
    // does not use (statistics, say) still read.
    assert!(refused > read, "{refused} refused, {read} read");
}
