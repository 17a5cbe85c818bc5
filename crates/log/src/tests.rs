use crate::{LogConfig, PartitionLog};
use proptest::prelude::*;
use std::path::Path;
use strata_record::{
    build_batch, layout, validate_batches, BatchHeader, BatchIter, KeyValue, TimestampType,
    ValidationLimits,
};

const LIMITS: ValidationLimits = ValidationLimits {
    max_batch_bytes: 1 << 20,
};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Appends a batch of `n` records with values `v{i}` and timestamp `ts`.
fn append(log: &mut PartitionLog, n: usize, ts: i64, now: i64) -> (i64, i64) {
    let vals: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}-{ts}").into_bytes()).collect();
    let recs: Vec<KeyValue<'_>> = vals.iter().map(|v| (None, Some(v.as_slice()))).collect();
    let b = build_batch(0, ts, &recs);
    let v = validate_batches(&b, LIMITS).unwrap();
    let info = log.append(&b, &v, 3, now, false).unwrap().info;
    (info.base_offset, info.last_offset)
}

fn headers(data: &[u8]) -> Vec<BatchHeader> {
    BatchIter::verifying(data).map(|(_, h)| h).collect()
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_assigns_dense_offsets_and_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(append(&mut log, 3, 10, 0), (0, 2));
    assert_eq!(append(&mut log, 2, 11, 0), (3, 4));
    assert_eq!(log.next_offset(), 5);
    let r = log.read(0, 1 << 20, 5).unwrap();
    let hs = headers(&r.data);
    assert_eq!(hs.len(), 2);
    assert_eq!(hs[1].base_offset, 3);
    assert_eq!(hs[0].partition_leader_epoch, 3);
    // Reading from the middle of a batch returns the whole containing batch.
    let r = log.read(4, 1 << 20, 5).unwrap();
    assert_eq!(headers(&r.data)[0].base_offset, 3);
    // At the log end: nothing; past it: out of range.
    assert!(log.read(5, 1 << 20, 5).unwrap().data.is_empty());
    assert!(log.read(6, 1 << 20, 5).is_err());
}

#[test]
fn read_stops_at_upper_bound_and_max_bytes_but_returns_one_batch() {
    let d = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    for i in 0..10 {
        append(&mut log, 1, i, 0);
    }
    assert_eq!(headers(&log.read(0, 1 << 20, 4).unwrap().data).len(), 4);
    assert_eq!(headers(&log.read(0, 1, 10).unwrap().data).len(), 1);
}

#[test]
fn rolls_by_size_and_time_and_reads_across_segments() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 500;
    c.segment_ms = 1000;
    let mut log = PartitionLog::open(d.path(), c, 0).unwrap();
    for i in 0..20 {
        append(&mut log, 2, i, 0);
    }
    let n = seg_files(d.path()).len();
    assert!(n > 3, "expected several segments, got {n}");
    assert_eq!(seg_files(d.path())[0], format!("{:020}.log", 0));
    // time-based roll
    append(&mut log, 1, 100, 5000);
    assert_eq!(seg_files(d.path()).len(), n + 1);
    let mut next = 0;
    while next < log.next_offset() {
        let r = log.read(next, 100, i64::MAX).unwrap();
        let hs = headers(&r.data);
        assert!(!hs.is_empty());
        assert!(hs[0].base_offset <= next && hs[0].last_offset() >= next);
        next = hs.last().unwrap().next_offset();
    }
    assert_eq!(next, 41);
}

#[test]
fn reopen_keeps_everything_and_continues_offsets() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 400;
    {
        let mut log = PartitionLog::open(d.path(), c.clone(), 0).unwrap();
        for i in 0..30 {
            append(&mut log, 3, i, 0);
        }
        log.flush().unwrap();
    }
    let mut log = PartitionLog::open(d.path(), c, 0).unwrap();
    assert_eq!(log.next_offset(), 90);
    assert_eq!(append(&mut log, 1, 99, 0), (90, 90));
    for o in [0, 1, 45, 89, 90] {
        let hs = headers(&log.read(o, 1, i64::MAX).unwrap().data);
        assert!(hs[0].base_offset <= o && o <= hs[0].last_offset());
    }
}

#[test]
fn recovery_truncates_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
        for i in 0..5 {
            append(&mut log, 2, i, 0);
        }
    }
    let f = d.path().join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len - 5).unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(
        log.next_offset(),
        8,
        "the torn last batch is dropped, the rest kept"
    );
    assert_eq!(append(&mut log, 1, 9, 0), (8, 8));
    assert_eq!(
        headers(&log.read(0, 1 << 20, i64::MAX).unwrap().data).len(),
        5
    );
}

#[test]
fn recovery_truncates_corrupt_tail() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
        for i in 0..5 {
            append(&mut log, 2, i, 0);
        }
    }
    let f = d.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&f).unwrap();
    // Corrupt the value bytes of the fourth batch; batches 4 and 5 must go.
    let fourth = BatchIter::new(&bytes).nth(3).unwrap().0;
    let n = bytes.len();
    bytes[fourth + 70] ^= 0x5a;
    // Garbage appended after a crash must go too.
    bytes.extend_from_slice(&[0xff; 7]);
    std::fs::write(&f, &bytes).unwrap();
    let log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(log.next_offset(), 6);
    assert!(std::fs::metadata(&f).unwrap().len() < n as u64);
}

/// A crash can leave the segment sealed last not yet fsync'd (its seal
/// runs in the background): a corrupt batch in it is found on open (it is
/// verified like the active one), it is cut there, and the active segment
/// after it goes too, so offsets stay dense.
#[test]
fn recovery_verifies_the_segment_sealed_last_and_drops_what_follows_a_cut() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
        for i in 0..3 {
            append(&mut log, 2, i, 0); // offsets 0..=5 in the first segment
        }
        log.roll(0).unwrap();
        append(&mut log, 2, 3, 0); // 6..=7, in the second, sealed by the next roll
        append(&mut log, 2, 4, 0); // 8..=9
        log.roll(0).unwrap();
        append(&mut log, 2, 5, 0); // 10..=11 in the active segment
        log.flush().unwrap();
    }
    assert_eq!(seg_files(d.path()).len(), 3);
    // Flip a value byte of the second segment's last batch: its length
    // still adds up, only its CRC says it is bad.
    let f = d.path().join(format!("{:020}.log", 6));
    let mut bytes = std::fs::read(&f).unwrap();
    let last = BatchIter::new(&bytes).nth(1).unwrap().0;
    bytes[last + 70] ^= 0x5a;
    std::fs::write(&f, &bytes).unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(log.next_offset(), 8, "cut before the corrupt batch");
    assert_eq!(
        seg_files(d.path()),
        vec![format!("{:020}.log", 0), format!("{:020}.log", 6)],
        "the segment after the cut is gone"
    );
    let indexes_of_10 = std::fs::read_dir(d.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.starts_with(&format!("{:020}.", 10))
        })
        .count();
    assert_eq!(indexes_of_10, 0, "and its index files with it");
    assert_eq!(append(&mut log, 1, 6, 0), (8, 8));
    let offsets: Vec<i64> = headers(&log.read(0, 1 << 20, i64::MAX).unwrap().data)
        .iter()
        .map(|h| h.base_offset)
        .collect();
    assert_eq!(offsets, vec![0, 2, 4]);
    let rest: Vec<i64> = headers(&log.read(6, 1 << 20, i64::MAX).unwrap().data)
        .iter()
        .map(|h| h.base_offset)
        .collect();
    assert_eq!(rest, vec![6, 8]);
}

/// An older segment found torn on open (not one of the last two, so not
/// verified batch by batch at first) becomes the active segment: it is
/// then verified whole, so a corrupt batch before the tear is cut too.
#[test]
fn an_older_segment_found_torn_is_verified_whole() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
        for i in 0..3 {
            append(&mut log, 2, i, 0); // offsets 0..=5 in the first segment
        }
        for base in [6, 8] {
            log.roll(0).unwrap();
            append(&mut log, 2, base, 0);
        }
        log.flush().unwrap();
    }
    assert_eq!(seg_files(d.path()).len(), 3);
    let f = d.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&f).unwrap();
    let second = BatchIter::new(&bytes).nth(1).unwrap().0;
    let third = BatchIter::new(&bytes).nth(2).unwrap().0;
    bytes[second + 70] ^= 0x5a; // a bad CRC, lengths intact
    bytes.truncate(third + 20); // and a torn third batch
    std::fs::write(&f, &bytes).unwrap();
    let log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(log.next_offset(), 2, "only the first batch survives");
    assert_eq!(seg_files(d.path()), vec![format!("{:020}.log", 0)]);
}

/// A roll does not wait for the fsync of the segment it seals; the next
/// roll does (at most one seal pending), and so does a flush (what it
/// acknowledges may lie in the sealed segment).
#[test]
fn rolls_seal_in_the_background_and_flushes_wait_for_the_seal() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    log.set_seal_hook(Arc::new(move || {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = release_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
    }));
    append(&mut log, 2, 0, 0);
    log.roll(0).unwrap(); // returns with its seal held
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("seal started");
    assert!(log.seal_pending());
    append(&mut log, 2, 1, 0); // appends go on meanwhile
    let handle = log.flush_handle().unwrap();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(handle.sync());
    });
    assert!(
        done.recv_timeout(Duration::from_millis(300)).is_err(),
        "a flush must not finish before the pending seal"
    );
    release.send(()).unwrap();
    done.recv_timeout(Duration::from_secs(10))
        .expect("flush finished once the seal did")
        .unwrap();
    assert!(!log.seal_pending());
    // The next roll's seal is held again; the roll after it waits for it.
    log.roll(0).unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("second seal started");
    append(&mut log, 1, 2, 0);
    let log = std::thread::spawn(move || {
        log.roll(0).unwrap();
        log
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!log.is_finished(), "a roll waits for the previous seal");
    release.send(()).unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("third seal started");
    release.send(()).unwrap();
    let log = log.join().unwrap();
    assert_eq!(log.next_offset(), 5);
    assert_eq!(seg_files(d.path()).len(), 4);
}

#[test]
fn corrupt_index_files_are_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 300;
    {
        let mut log = PartitionLog::open(d.path(), c.clone(), 0).unwrap();
        for i in 0..20 {
            append(&mut log, 2, i, 0);
        }
    }
    std::fs::write(d.path().join(format!("{:020}.index", 0)), [1, 2, 3]).unwrap();
    let log = PartitionLog::open(d.path(), c, 0).unwrap();
    assert_eq!(log.next_offset(), 40);
    assert_eq!(
        headers(&log.read(1, 1, i64::MAX).unwrap().data)[0].base_offset,
        0
    );
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 300;
    let mut log = PartitionLog::open(d.path(), c, 0).unwrap();
    for i in 0..20 {
        append(&mut log, 1, 1000 + i * 10, 0);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1055).unwrap(), Some((6, 1060)));
    assert_eq!(log.offset_for_timestamp(1190).unwrap(), Some((19, 1190)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
}

/// A producer's max timestamp far from its records' (a clock gone wrong,
/// a client bug) does not steer the time index or retention: the batch is
/// stored with its records' largest timestamp, CRC and all.
#[test]
fn a_stated_max_timestamp_unlike_the_records_is_stored_as_theirs() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 100; // a segment per batch
    c.retention_ms = 1000;
    let mut log = PartitionLog::open(d.path(), c, 0).unwrap();
    for (ts, stated) in [(1000i64, i64::MAX), (2000, 2000), (3000, 0)] {
        let mut b = build_batch(0, ts, &[(None, Some(b"v"))]);
        b[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8].copy_from_slice(&stated.to_be_bytes());
        strata_record::restamp_batch(&mut b, ts, -1, -1, -1).unwrap(); // CRC over it
        assert_eq!(BatchHeader::parse(&b).unwrap().max_timestamp, stated);
        let v = validate_batches(&b, LIMITS).unwrap();
        log.append(&b, &v, 0, ts, false).unwrap();
    }
    let stored: Vec<i64> = (0..3)
        .map(|o| headers(&log.read(o, 1 << 20, i64::MAX).unwrap().data)[0].max_timestamp)
        .collect();
    assert_eq!(stored, [1000, 2000, 3000]);
    // The first batch's stated i64::MAX would have answered offset 0.
    assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((1, 2000)));
    // And kept its segment forever; by its record it has expired.
    log.enforce_retention(2500).unwrap();
    assert_eq!(log.log_start_offset(), 1);
}

#[test]
fn retention_by_time_and_bytes_deletes_whole_old_segments() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 300;
    c.retention_ms = 1000;
    let mut log = PartitionLog::open(d.path(), c.clone(), 0).unwrap();
    for i in 0..10 {
        append(&mut log, 2, i * 100, 0);
    }
    let before = seg_files(d.path()).len();
    assert!(before >= 3);
    // At now=1500, segments whose newest record is older than 500 go.
    let deleted = log.enforce_retention(1500).unwrap();
    assert!(deleted >= 1);
    assert!(log.log_start_offset() > 0);
    assert!(log.read(0, 100, i64::MAX).is_err());
    // Everything expired: the active segment is rolled and deleted too, the
    // log end offset is kept.
    log.enforce_retention(100_000).unwrap();
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.next_offset(), 20);
    assert_eq!(append(&mut log, 1, 100_000, 100_000), (20, 20));

    let mut c2 = c;
    c2.retention_ms = -1;
    c2.retention_bytes = 600;
    log.set_config(c2);
    for i in 0..20 {
        append(&mut log, 2, i, 0);
    }
    log.enforce_retention(0).unwrap();
    assert!(log.size_bytes() <= 600 + 300);
    // Survives reopen with the new start offset.
    let start = log.log_start_offset();
    drop(log);
    let log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    assert_eq!(log.log_start_offset(), start);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// For random batch sizes and segment/index settings, reading at every
    /// offset returns a batch that contains it, before and after reopen.
    #[test]
    fn index_lookup_finds_containing_batch(
        sizes in proptest::collection::vec(1usize..6, 1..60),
        seg in 200u64..2000,
        interval in 1usize..600,
    ) {
        let d = tempfile::tempdir().unwrap();
        let c = LogConfig { segment_bytes: seg, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = PartitionLog::open(d.path(), c.clone(), 0).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            append(&mut log, *n, i as i64, 0);
        }
        let total: usize = sizes.iter().sum();
        for reopen in [false, true] {
            if reopen {
                log = PartitionLog::open(d.path(), c.clone(), 0).unwrap();
            }
            prop_assert_eq!(log.next_offset(), total as i64);
            for o in 0..total as i64 {
                let hs = headers(&log.read(o, 1, i64::MAX).unwrap().data);
                prop_assert_eq!(hs.len(), 1);
                prop_assert!(hs[0].base_offset <= o && o <= hs[0].last_offset());
            }
        }
    }
}

#[test]
fn follower_copies_stored_batches_and_truncates_a_divergent_tail() {
    let d = tempfile::tempdir().unwrap();
    let (ld, fd) = (d.path().join("leader"), d.path().join("follower"));
    let mut leader = PartitionLog::open(&ld, cfg(), 0).unwrap();
    for i in 0..40 {
        append(&mut leader, 5, i, 0);
    }
    let mut follower = PartitionLog::open(&fd, cfg(), 0).unwrap();
    // Copy in a few chunks, as replication does.
    while follower.next_offset() < leader.next_offset() {
        let data = leader
            .read(follower.next_offset(), 700, leader.next_offset())
            .unwrap()
            .data;
        follower.append_stored(&data, 0).unwrap();
    }
    assert_eq!(follower.next_offset(), 200);
    let all = |l: &PartitionLog| l.read(0, 1 << 20, l.next_offset()).unwrap().data;
    assert_eq!(all(&follower), all(&leader));
    // Not at the log end, torn, or corrupt: refused, nothing written.
    let batch = leader.read(100, 1, 200).unwrap().data;
    assert!(follower.append_stored(&batch, 0).is_err());
    let tail = leader.read(195, 1, 200).unwrap().data;
    let mut grown = PartitionLog::open(&d.path().join("x"), cfg(), 0).unwrap();
    grown.reset_to(195, 0).unwrap();
    assert!(grown.append_stored(&tail[..tail.len() - 1], 0).is_err());
    let mut bad = tail.to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(grown.append_stored(&bad, 0).is_err());
    assert_eq!(grown.next_offset(), 195);
    grown.append_stored(&tail, 0).unwrap();
    assert_eq!(grown.next_offset(), 200);
    // Truncating mid-log drops whole batches and later segments, and the
    // log reopens at the same end with working indexes.
    follower.truncate_to(102, 0).unwrap();
    assert_eq!(follower.next_offset(), 100);
    drop(follower);
    let mut follower = PartitionLog::open(&fd, cfg(), 0).unwrap();
    assert_eq!(follower.next_offset(), 100);
    assert_eq!(
        headers(&follower.read(57, 1, 100).unwrap().data)[0].base_offset,
        55
    );
    let data = leader.read(100, 1 << 20, 200).unwrap().data;
    follower.append_stored(&data, 0).unwrap();
    assert_eq!(all(&follower), all(&leader));
    // Truncating below the start empties the log at that offset.
    follower.truncate_to(0, 0).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.next_offset()),
        (0, 0)
    );
}

/// Polls `f` for up to five seconds (the write-behind worker is a thread).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn written_chunks_are_written_back_and_dropped_past_the_budget_and_read_back_whole() {
    use crate::{WriteBehind, WRITE_BEHIND_CHUNK_BYTES as CHUNK};
    use std::sync::atomic::Ordering::Relaxed;
    let d = tempfile::tempdir().unwrap();
    // Segments of 8 chunks; a budget of 4 chunks across the whole broker.
    let config = LogConfig {
        segment_bytes: 8 * CHUNK,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    };
    let behind = WriteBehind::start(4 * CHUNK).unwrap();
    let mut log = PartitionLog::open(d.path(), config, 0).unwrap();
    log.set_write_behind(Some(behind.clone()));
    let mut last = -1;
    while log.size_bytes() < 20 * CHUNK {
        last = append(&mut log, 200, 1, 0).1;
    }
    let total = log.size_bytes();
    let stats = behind.stats();
    // Every byte of the sealed segments (tails included) and every whole
    // chunk of the active one is handed over; all but the last 3 chunks'
    // worth is written back, all but the last 4 dropped (chunk boundaries
    // give a chunk of slack each way).
    let reported = total - log.segments().last().unwrap().size_bytes % CHUNK;
    let (wb, dropped) = (
        || stats.written_back.load(Relaxed),
        || stats.dropped.load(Relaxed),
    );
    assert!(
        eventually(|| wb() >= reported - 4 * CHUNK && dropped() >= reported - 5 * CHUNK),
        "written back {}, dropped {} of {reported}",
        wb(),
        dropped()
    );
    assert!(wb() <= reported - 2 * CHUNK && dropped() <= reported - 3 * CHUNK);
    assert_eq!(stats.skipped.load(Relaxed), 0);
    // Dropped from the cache, not from the log: every record reads back.
    let mut next = 0;
    while next <= last {
        let r = log.read(next, 1 << 20, last + 1).unwrap();
        let hs = headers(&r.data);
        assert_eq!(hs[0].base_offset, next);
        next = hs.last().unwrap().next_offset();
    }
    assert_eq!(next, last + 1);
}

/// A read prepared under the lock and run after the log has changed (as a
/// fetch now does, without the lock): appends past it, a truncation above
/// its bound and the deletion of its segment leave it the same records.
#[test]
fn prepared_reads_run_after_appends_truncation_and_deletion() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_bytes = 600;
    let mut log = PartitionLog::open(d.path(), c, 0).unwrap();
    for i in 0..20 {
        append(&mut log, 3, i, 0);
    }
    let end = log.next_offset();
    let offsets = |data: &[u8]| {
        let hs = headers(data);
        (hs[0].base_offset, hs[hs.len() - 1].next_offset())
    };
    // Appends after preparing: the read sees the log as it was.
    let before_appends = log.prepare_read(end - 3, 1 << 20, end).unwrap();
    append(&mut log, 3, 100, 0);
    let r = before_appends.read().unwrap().data;
    assert_eq!(offsets(&r), (end - 3, end));
    // A truncation above the read's bound (a leader change cuts only
    // uncommitted records): the committed batches, no error, even though
    // the file is shorter than when the read was prepared.
    let whole = log.prepare_read(end - 6, 1 << 20, end - 3).unwrap();
    log.truncate_to(end - 3, 0).unwrap();
    let r = whole.read().unwrap().data;
    assert_eq!(offsets(&r), (end - 6, end - 3));
    assert_eq!(r, log.read(end - 6, 1 << 20, end - 3).unwrap().data);
    // The first segment deleted by retention after preparing: still read whole.
    let first = log.prepare_read(0, 1 << 20, end).unwrap();
    let expected = log.read(0, 1 << 20, end).unwrap().data;
    let (_, first_end) = offsets(&expected);
    assert!(
        first_end < end,
        "the first segment ends before the log does"
    );
    assert_eq!(log.delete_below(first_end, 0).unwrap(), 1);
    assert_eq!(log.log_start_offset(), first_end);
    assert_eq!(first.read().unwrap().data, expected);
    assert_eq!(first.read_cached().unwrap().unwrap().data, expected);
    // Out of range is refused when preparing.
    assert!(log.prepare_read(0, 1, end).is_err());
    assert!(log.prepare_read(log.next_offset() + 1, 1, end).is_err());
}

/// A request of several batches is stored with each batch's new header
/// before its records as received (the request itself is never written
/// to): offsets and epoch assigned, and with log-append time the
/// timestamp type, max timestamp and a CRC that verifies.
#[test]
fn appends_store_new_headers_before_the_records_as_received() {
    let d = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(d.path(), cfg(), 0).unwrap();
    let mut request = build_batch(0, 10, &[(None, Some(b"a".as_slice())), (None, Some(b"b"))]);
    request.extend_from_slice(&build_batch(0, 11, &[(Some(b"k".as_slice()), Some(b"c"))]));
    let received = request.clone();
    for (lat, now) in [(false, 500), (true, 7000)] {
        let v = validate_batches(&request, LIMITS).unwrap();
        let stored = log.append(&request, &v, 9, now, lat).unwrap();
        assert_eq!(request, received);
        let base = stored.info.base_offset;
        assert_eq!(stored.info.log_append_time, lat.then_some(now));
        let data = log.read(base, 1 << 20, log.next_offset()).unwrap().data;
        let hs = headers(&data);
        assert_eq!(hs, stored.headers);
        assert_eq!(data.len(), request.len());
        assert_eq!(
            hs.iter()
                .map(|h| (h.base_offset - base, h.partition_leader_epoch))
                .collect::<Vec<_>>(),
            vec![(0, 9), (2, 9)]
        );
        for (h, ts) in hs.iter().zip([10, 11]) {
            let expect = if lat {
                (TimestampType::LogAppendTime, now)
            } else {
                (TimestampType::CreateTime, ts)
            };
            assert_eq!((h.timestamp_type(), h.max_timestamp), expect);
        }
        // The records after each header are the request's.
        let tail = |b: &[u8], at: usize, len: usize| b[at + layout::HEADER_SIZE..at + len].to_vec();
        let first = hs[0].total_size();
        assert_eq!(tail(&data, 0, first), tail(&request, 0, first));
        assert_eq!(
            tail(&data, first, data.len() - first),
            tail(&request, first, data.len() - first)
        );
    }
}

/// Reads reuse pooled buffers (`readbuf`): a buffer that held one log's
/// bytes must never leak them into another log's read. Large reads of one
/// log fill every pooled buffer, then shorter reads of a second log (still
/// large enough to take pooled buffers) must return exactly its own
/// batches, byte for byte.
#[test]
fn reads_through_reused_buffers_return_only_their_own_bytes() {
    use crate::readbuf::{KEEP, KEEP_MIN};
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = PartitionLog::open(da.path(), cfg(), 0).unwrap();
    let mut b = PartitionLog::open(db.path(), cfg(), 0).unwrap();
    for ts in 0..400 {
        append(&mut a, 50, ts, 0);
    }
    for ts in 1000..1120 {
        append(&mut b, 50, ts, 0);
    }
    let expected = std::fs::read(db.path().join(&seg_files(db.path())[0])).unwrap();
    assert!(
        expected.len() > KEEP_MIN,
        "b's reads must be large enough to be pooled"
    );
    let first = headers(&expected)[0].total_size();
    for round in 0..KEEP * 2 {
        let big: Vec<_> = (0..KEEP)
            .map(|_| a.read(0, 1 << 20, a.next_offset()).unwrap())
            .collect();
        assert!(big.iter().all(|r| r.data.len() > expected.len()));
        drop(big);
        for (from, want) in [(0, &expected[..]), (50, &expected[first..])] {
            let r = b.read(from, 1 << 20, b.next_offset()).unwrap();
            assert_eq!(&r.data[..], want, "round {round}, from {from}");
        }
    }
}
