//! Reads from the page cache only (`read_cached`): what a fetch tries on its
//! async task before moving a read that must wait for the disk to a thread.
//! In `CARGO_TARGET_TMPDIR`, on the build's disk: on tmpfs every page is
//! always cached and nothing could be dropped.

use std::num::NonZeroU64;
use strata_log::{LogConfig, PartitionLog};
use strata_record::{build_batch, validate_batches, KeyValue, ValidationLimits};

#[test]
fn a_cached_read_says_none_for_data_dropped_from_the_page_cache_and_a_read_still_finds_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let value = vec![7u8; 1000];
    for _ in 0..200 {
        let recs: Vec<KeyValue<'_>> = (0..10).map(|_| (None, Some(value.as_slice()))).collect();
        let b = build_batch(0, 1, &recs);
        let v = validate_batches(
            &b,
            ValidationLimits {
                max_batch_bytes: 1 << 20,
            },
        )
        .unwrap();
        log.append(&b, &v, 0, 0, false).unwrap();
    }
    let end = log.next_offset();
    // Just written: in the cache.
    let cached = log
        .prepare_read(0, 1 << 20, end)
        .unwrap()
        .read_cached()
        .unwrap()
        .unwrap();
    assert!(!cached.data.is_empty());

    // Written back and dropped, as the write-behind thread does.
    log.flush().unwrap();
    let path = log.segments()[0].path.clone();
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if rustix::fs::statfs(&path).unwrap().f_type as i64 == TMPFS_MAGIC {
        eprintln!(
            "{} is on tmpfs, whose pages cannot be dropped",
            path.display()
        );
        return;
    }
    let file = std::fs::File::open(&path).unwrap();
    let len = NonZeroU64::new(file.metadata().unwrap().len());
    // The kernel skips pages it cannot drop at that moment (still in
    // another CPU's batch of pages being added to its LRU lists, say, on a
    // busy machine), so the advice is repeated until it took, a bounded
    // number of times.
    let mut dropped = false;
    for _ in 0..100 {
        rustix::fs::fadvise(&file, 0, len, rustix::fs::Advice::DontNeed).unwrap();
        let read = log.prepare_read(0, 1 << 20, end).unwrap().read_cached();
        if read.unwrap().is_none() {
            dropped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(dropped, "the start of the segment stayed cached");
    assert!(log
        .prepare_read(end / 2, 1 << 20, end)
        .unwrap()
        .read_cached()
        .unwrap()
        .is_none());

    // A blocking read finds it all, and brings it back into the cache.
    let read = log.read(0, 1 << 20, end).unwrap();
    assert_eq!(read.data, cached.data);
    assert_eq!(
        log.prepare_read(0, 1 << 20, end)
            .unwrap()
            .read_cached()
            .unwrap()
            .unwrap()
            .data,
        cached.data
    );
}
