use super::*;
use proptest::prelude::*;

fn limits() -> ValidationLimits {
    ValidationLimits {
        max_batch_bytes: 1 << 20,
    }
}

#[test]
fn built_batch_validates_and_parses() {
    let b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v")), (None, None)]);
    let v = validate_batches(&b, limits()).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].header.records_count, 2);
    assert_eq!(v[0].header.last_offset_delta, 1);
    assert_eq!(v[0].header.total_size(), b.len());
}

#[test]
fn assigning_offsets_keeps_crc_valid() {
    let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v"))]);
    assign_offset_and_epoch(&mut b, 42, 7);
    let v = validate_batches(&b, limits()).unwrap();
    assert_eq!(v[0].header.base_offset, 42);
    assert_eq!(v[0].header.partition_leader_epoch, 7);
}

#[test]
fn log_append_time_rewrites_crc() {
    let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v"))]);
    set_log_append_time(&mut b, 5000);
    let v = validate_batches(&b, limits()).unwrap();
    assert_eq!(v[0].header.max_timestamp, 5000);
    assert_eq!(v[0].header.timestamp_type(), TimestampType::LogAppendTime);
}

/// The header the log writes before a request's records is the one the
/// in-place rewrites give, with and without log-append time.
#[test]
fn stored_header_matches_the_rewritten_batch() {
    let b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v")), (None, Some(b"w"))]);
    for lat in [None, Some(5000)] {
        let h = stored_header(&b, 1000, 42, 7, lat).unwrap();
        let mut in_place = b.to_vec();
        assign_offset_and_epoch(&mut in_place, 42, 7);
        if let Some(now) = lat {
            set_log_append_time(&mut in_place, now);
        }
        assert_eq!(&h[..], &in_place[..layout::HEADER_SIZE]);
        let mut stored = h.to_vec();
        stored.extend_from_slice(&b[layout::HEADER_SIZE..]);
        let v = validate_batches(&stored, limits()).unwrap();
        assert_eq!(v[0].header.base_offset, 42);
    }
    assert!(matches!(
        stored_header(&b[..20], 1000, 0, 0, None),
        Err(BatchError::Truncated { .. })
    ));
}

/// A producer's max timestamp that is not its records' largest (later, or
/// earlier) is replaced by theirs, as Kafka's broker does: the time index,
/// retention and the cold tier's statistics go by it.
#[test]
fn the_stored_max_timestamp_is_the_records_largest() {
    // Timestamps 1000 + deltas 0, 30, 10 (not in order): the largest is 1030.
    let mut body = Vec::new();
    for (i, delta) in [0i64, 30, 10].into_iter().enumerate() {
        let mut rec = vec![0u8];
        crate::codec::put_varlong(&mut rec, delta);
        crate::codec::put_varlong(&mut rec, i as i64);
        rec.extend_from_slice(&[0x01, 0x02, b'v', 0x00]);
        crate::codec::put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    for (stated, codec) in [
        (1030, BatchProducer::NONE),
        (i64::MAX, BatchProducer::NONE),
        (1000, BatchProducer::NONE),
        (-1, GZIP),
    ] {
        let records = if codec.attributes == 1 {
            gzip(&body)
        } else {
            body.clone()
        };
        let mut b = seal_batch(0, 1000, codec, 3, &records);
        b[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8].copy_from_slice(&stated.to_be_bytes());
        store_crc(&mut b);
        let v = validate_batches(&b, limits()).unwrap();
        assert_eq!(v[0].header.max_timestamp, 1030, "stated {stated}");
        let h = stored_header(&b, v[0].header.max_timestamp, 5, 0, None).unwrap();
        let mut stored = h.to_vec();
        stored.extend_from_slice(&b[layout::HEADER_SIZE..]);
        // The CRC covers the new max timestamp.
        let again = validate_batches(&stored, limits()).unwrap();
        assert_eq!(BatchHeader::parse(&stored).unwrap().max_timestamp, 1030);
        assert_eq!(again[0].header.max_timestamp, 1030);
        // Untouched when it was right.
        if stated == 1030 {
            assert_eq!(
                &stored[layout::CRC..layout::CRC + 4],
                &b[layout::CRC..layout::CRC + 4]
            );
        }
    }
    // A log-append-time batch keeps its own: its records take it.
    let mut lat = seal_batch(0, 1000, BatchProducer::NONE, 3, &body);
    set_log_append_time(&mut lat, 7777);
    assert_eq!(
        validate_batches(&lat, limits()).unwrap()[0]
            .header
            .max_timestamp,
        7777
    );
}

#[test]
fn restamping_sets_producer_fields_and_keeps_crc_valid() {
    let mut b = build_batch_with(
        0,
        1000,
        BatchProducer::NONE,
        &[(None, Some(b"a")), (None, Some(b"b"))],
    );
    // A max timestamp 5 ms after the base must stay 5 ms after the new base.
    b[layout::MAX_TIMESTAMP..layout::MAX_TIMESTAMP + 8].copy_from_slice(&1005i64.to_be_bytes());
    restamp_batch(&mut b, 9000, 77, 3, 40).unwrap();
    // (Validation says the records' largest timestamp is 9000: that is
    // what would be stored.)
    assert_eq!(
        validate_batches(&b, limits()).unwrap()[0]
            .header
            .max_timestamp,
        9000
    );
    let h = BatchHeader::parse(&b).unwrap();
    assert_eq!((h.base_timestamp, h.max_timestamp), (9000, 9005));
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (77, 3, 40)
    );
    assert_eq!(h.records_count, 2);
}

#[test]
fn restamping_a_truncated_batch_is_an_error() {
    let b = build_batch(0, 1000, &[(None, Some(b"a"))]);
    let mut short = b[..layout::HEADER_SIZE - 1].to_vec();
    assert!(restamp_batch(&mut short, 1, 1, 1, 1).is_err());
}

#[test]
fn corrupt_crc_is_refused() {
    let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v"))]);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert!(matches!(
        validate_batches(&b, limits()),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn old_magic_is_refused() {
    let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v"))]);
    b[layout::MAGIC] = 1;
    assert_eq!(
        validate_batches(&b, limits()),
        Err(BatchError::UnsupportedMagic(1))
    );
}

#[test]
fn oversized_batch_is_refused() {
    let big = vec![0u8; 2000];
    let b = build_batch(0, 1000, &[(None, Some(&big))]);
    assert!(matches!(
        validate_batches(
            &b,
            ValidationLimits {
                max_batch_bytes: 1000
            }
        ),
        Err(BatchError::TooLarge { .. })
    ));
}

#[test]
fn wrong_record_count_is_refused() {
    let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v"))]);
    // Claim two records (and a matching delta) while only one is present.
    b[layout::RECORDS_COUNT..layout::RECORDS_COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
    b[layout::LAST_OFFSET_DELTA..layout::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&1i32.to_be_bytes());
    let crc = compute_crc(&b);
    b[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate_batches(&b, limits()),
        Err(BatchError::InconsistentCount { .. })
    ));
}

#[test]
fn iter_stops_at_torn_tail() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&build_batch(0, 1, &[(None, Some(b"a"))]));
    let first = buf.len();
    buf.extend_from_slice(&build_batch(1, 1, &[(None, Some(b"b"))]));
    buf.truncate(buf.len() - 3);
    let mut it = BatchIter::verifying(&buf);
    assert_eq!(it.by_ref().count(), 1);
    assert_eq!(it.valid_len(), first);
    assert!(matches!(
        it.stop_reason(),
        Some(BatchError::Truncated { .. })
    ));
}

proptest! {
    /// Any mutation of a valid batch is either refused or leaves a batch that
    /// still parses consistently; validation never panics.
    #[test]
    fn validation_never_panics_on_mutation(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let recs: Vec<KeyValue<'_>> =
            values.iter().map(|v| (None, Some(v.as_slice()))).collect();
        let good = build_batch(0, 0, &recs);
        prop_assert!(validate_batches(&good, limits()).is_ok());

        let mut bad = good.clone();
        let i = flip_at.index(bad.len());
        bad[i] ^= flip;
        let r = validate_batches(&bad, limits());
        // Flipping a byte that the CRC covers must be detected.
        if i >= layout::ATTRIBUTES {
            prop_assert!(r.is_err());
        }
        let cut_len = cut.index(good.len());
        prop_assert!(validate_batches(&good[..cut_len], limits()).is_err());
    }

    /// Arbitrary bytes never panic the validator or the iterator.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate_batches(&bytes, limits());
        let mut it = BatchIter::verifying(&bytes);
        let n = it.by_ref().count();
        prop_assert!(it.valid_len() <= bytes.len());
        let _ = n;
    }
}

proptest! {
    /// Mutations the CRC does not catch (the CRC recomputed after them, as a
    /// client with a bug computes it over what it sends): whatever the
    /// produce check accepts, every later reader of the stored batch
    /// decodes (offload's `decode_batch`, the by-time lookup's
    /// `record_timestamps`), record for record; nothing panics. Compressed
    /// batches are mutated in their compressed bytes.
    #[test]
    fn what_validation_accepts_every_reader_decodes(
        records in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
            1..12),
        codec in 0usize..5,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let recs: Vec<KeyValue<'_>> =
            records.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
        let plain = build_batch(0, 1_000, &recs);
        let good = match crate::compress_batch(&plain, codecs[codec]) {
            Ok(b) => b,
            Err(e) => return Err(TestCaseError::fail(e)),
        };
        prop_assert!(validate_batches(&good, limits()).is_ok());

        // Edit the records' bytes (overwrite, insert or remove one byte),
        // then fix the length and CRC so that only the records are wrong.
        let mut body = good[layout::HEADER_SIZE..].to_vec();
        for (at, byte, kind) in edits {
            match kind {
                0 if !body.is_empty() => {
                    let i = at.index(body.len());
                    body[i] = byte;
                }
                1 => body.insert(at.index(body.len() + 1), byte),
                _ if !body.is_empty() => {
                    body.remove(at.index(body.len()));
                }
                _ => {}
            }
        }
        let mut bad = good[..layout::HEADER_SIZE].to_vec();
        bad.extend_from_slice(&body);
        let len = (bad.len() - layout::LOG_OVERHEAD) as i32;
        bad[layout::BATCH_LENGTH..layout::LOG_OVERHEAD].copy_from_slice(&len.to_be_bytes());
        store_crc(&mut bad);

        if let Ok(v) = validate_batches(&bad, limits()) {
            prop_assert_eq!(v.len(), 1);
            let stored = bytes::Bytes::from(bad);
            let decoded = crate::decode_batch(&stored);
            prop_assert!(decoded.is_ok(), "accepted but not decodable: {:?}", decoded.err());
            let n = v[0].header.records_count as usize;
            prop_assert_eq!(decoded.map(|d| d.records.len()).unwrap_or(0), n);
            let ts = crate::record_timestamps(&stored);
            prop_assert_eq!(ts.map(|t| t.len()).unwrap_or(0), n);
        }
    }
}

/// The records of a batch: each `(offset delta, record body after the
/// attributes and deltas)` framed with its length.
fn body_of(records: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, rest) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        crate::codec::put_varlong(&mut rec, 0); // timestamp delta
        crate::codec::put_varlong(&mut rec, i as i64); // offset delta
        rec.extend_from_slice(rest);
        crate::codec::put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    body
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use kafka_protocol::compression::{Compressor, Gzip};
    let mut out = BytesMut::new();
    Gzip::compress(&mut out, |b: &mut BytesMut| {
        b.extend_from_slice(body);
        Ok(())
    })
    .unwrap();
    out.to_vec()
}

const GZIP: BatchProducer = BatchProducer {
    attributes: 1,
    ..BatchProducer::NONE
};

#[test]
fn records_that_do_not_parse_are_refused() {
    // key null (zig-zag -1 = 0x01), value "v", no headers: a good record.
    let good: &[u8] = &[0x01, 0x02, b'v', 0x00];
    assert!(validate_batches(
        &seal_batch(0, 0, BatchProducer::NONE, 1, &body_of(&[good])),
        limits()
    )
    .is_ok());
    let cases: [(&str, &[u8]); 5] = [
        ("a field of 50 bytes overruns", &[0x64, b'k', 0x01, 0x00]),
        (
            "header count 2147483647",
            &[0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "bytes follow the last field",
            &[0x01, 0x01, 0x00, 0x07, 0x07],
        ),
        ("a header key is null", &[0x01, 0x01, 0x02, 0x01, 0x01]),
        ("varint", &[0x01, 0x01, 0x80]),
    ];
    for (want, rest) in cases {
        let b = seal_batch(0, 0, BatchProducer::NONE, 1, &body_of(&[rest]));
        let err = validate_batches(&b, limits()).expect_err(want);
        assert!(matches!(err, BatchError::MalformedRecords(_)), "{err}");
        assert!(err.to_string().contains(want), "{err} (want {want})");
        // The decoder refuses it alike.
        assert!(crate::decode_batch(&b.freeze()).is_err());
    }
    // Offset deltas must run 0, 1, 2, … as producers write them.
    let mut body = Vec::new();
    for delta in [0i64, 5] {
        let mut rec = vec![0u8];
        crate::codec::put_varlong(&mut rec, 0);
        crate::codec::put_varlong(&mut rec, delta);
        rec.extend_from_slice(good);
        crate::codec::put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let b = seal_batch(0, 0, BatchProducer::NONE, 2, &body);
    let err = validate_batches(&b, limits()).expect_err("offset delta");
    assert_eq!(
        err,
        BatchError::MalformedRecords(crate::RecordsError::OffsetDelta { index: 1, delta: 5 })
    );
}

#[test]
fn header_keys_must_be_utf8() {
    // key null, value null, then the headers.
    let with_header = |key: &[u8]| {
        let mut rest = vec![0x01, 0x01, 0x02]; // key, value, one header
        crate::codec::put_bytes(&mut rest, Some(key));
        crate::codec::put_bytes(&mut rest, Some(b"v"));
        rest
    };
    let ok = with_header("ключ-🔑".as_bytes());
    let b = seal_batch(0, 0, BatchProducer::NONE, 2, &body_of(&[&ok, &ok]));
    assert!(validate_batches(&b, limits()).is_ok());
    for key in [&[0xff][..], b"k\xc3", b"\xed\xa0\x80"] {
        let bad = with_header(key);
        let b = seal_batch(0, 0, BatchProducer::NONE, 2, &body_of(&[&ok, &bad]));
        assert_eq!(
            validate_batches(&b, limits()),
            Err(BatchError::MalformedRecords(
                crate::RecordsError::HeaderKeyNotUtf8 {
                    index: 1,
                    header: 0
                }
            ))
        );
        // Compressed alike.
        let z = seal_batch(0, 0, GZIP, 2, &gzip(&body_of(&[&ok, &bad])));
        assert!(validate_batches(&z, limits()).is_err());
        // A batch stored before the check still decodes, the key made
        // lossy (the cold tier's column is a string).
        let d = crate::decode_batch(&b.freeze()).unwrap();
        assert!(d.records[1].headers[0].0.contains('\u{fffd}'));
    }
}

#[test]
fn a_compressed_batch_is_checked_record_by_record() {
    let good: &[u8] = &[0x01, 0x02, b'v', 0x00];
    let z = gzip(&body_of(&[good, good]));
    let ok = seal_batch(0, 0, GZIP, 2, &z);
    assert_eq!(
        validate_batches(&ok, limits()).unwrap()[0]
            .header
            .records_count,
        2
    );
    // Its count claiming more than it holds (kept consistent with the
    // last offset delta, as a lying producer would): refused, and a
    // decoder reading it anyway fails without reserving for the claim.
    let liar = seal_batch(0, 0, GZIP, i32::MAX, &z);
    assert!(matches!(
        validate_batches(&liar, limits()),
        Err(BatchError::InconsistentCount {
            count: i32::MAX,
            ..
        })
    ));
    let err = crate::decode_batch(&liar.freeze()).expect_err("count");
    assert!(
        err.to_string()
            .contains("declares 2147483647 records but holds 2"),
        "{err}"
    );
    // A malformed record inside, and bytes that are not gzip at all.
    let bad = seal_batch(0, 0, GZIP, 1, &gzip(&body_of(&[&[0x64, 0x00]])));
    assert!(matches!(
        validate_batches(&bad, limits()),
        Err(BatchError::MalformedRecords(_))
    ));
    let junk = seal_batch(0, 0, GZIP, 1, b"not gzip at all");
    assert!(matches!(
        validate_batches(&junk, limits()),
        Err(BatchError::Decompress(_))
    ));
}
