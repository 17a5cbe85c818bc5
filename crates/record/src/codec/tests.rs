use super::*;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KTs,
};
use proptest::prelude::*;

fn kafka_record(offset: i64, ts: i64, key: Option<&str>, value: Option<&str>) -> Record {
    let mut headers = IndexMap::new();
    headers.insert(
        StrBytes::from_static_str("h"),
        Some(Bytes::from_static(b"v")),
    );
    headers.insert(StrBytes::from_static_str("null"), None);
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 5,
        producer_id: 42,
        producer_epoch: 3,
        timestamp_type: KTs::Creation,
        offset,
        sequence: offset as i32,
        timestamp: ts,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers,
    }
}

fn encode_with(records: &[Record], c: KCompression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .unwrap();
    buf.freeze()
}

const CODECS: [KCompression; 5] = [
    KCompression::None,
    KCompression::Gzip,
    KCompression::Snappy,
    KCompression::Lz4,
    KCompression::Zstd,
];

/// Three records from offset `base`: the second without a key, the third
/// without a value, timestamps 1000, 1001 and 1005.
fn three_records(base: i64) -> Vec<Record> {
    vec![
        kafka_record(base, 1000, Some("k0"), Some("v0")),
        kafka_record(base + 1, 1001, None, Some("v1")),
        kafka_record(base + 2, 1005, Some("k2"), None),
    ]
}

#[test]
fn decodes_every_codec() {
    for c in CODECS {
        let d = decode_batch(&encode_with(&three_records(0), c)).unwrap();
        assert_eq!(d.records.len(), 3, "{c:?}");
        let r = &d.records[1];
        assert_eq!(
            (r.offset, r.timestamp, r.key.clone(), r.value.as_deref()),
            (1, 1001, None, Some(&b"v1"[..]))
        );
        assert_eq!(
            r.headers,
            vec![
                ("h".into(), Some(Bytes::from_static(b"v"))),
                ("null".into(), None)
            ]
        );
        assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (42, 3, 1));
        assert_eq!(d.records[2].value, None);
    }
}

fn rec(offset: i64, ts: i64, headers: Vec<(&str, Option<&[u8]>)>) -> DecodedRecord {
    DecodedRecord {
        offset,
        timestamp: ts,
        timestamp_type: TimestampType::CreateTime,
        key: Some(Bytes::from(format!("k{offset}"))),
        value: Some(Bytes::from(format!("v{offset}"))),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(Bytes::copy_from_slice)))
            .collect(),
        producer_id: -1,
        producer_epoch: -1,
        sequence: -1,
        leader_epoch: 2,
    }
}

#[test]
fn encode_keeps_repeated_headers_gaps_and_validates() {
    let records = vec![
        rec(
            10,
            500,
            vec![("a", Some(b"1")), ("a", Some(b"2")), ("n", None)],
        ),
        rec(11, 400, vec![]),
        rec(15, 900, vec![]), // an offset gap
    ];
    let b = encode_batch(&records);
    // A stored batch with gaps (as after compaction): lengths and CRC check out.
    let mut it = crate::BatchIter::verifying(&b);
    let (_, h) = it.next().unwrap();
    assert!(it.stop_reason().is_none());
    assert_eq!(
        (h.base_offset, h.last_offset(), h.records_count),
        (10, 15, 3)
    );
    // Timestamps are deltas from the first record's (the second's is
    // negative), as Kafka's producer writes them; the max is the max.
    assert_eq!((h.base_timestamp, h.max_timestamp), (500, 900));
    let d = decode_batch(&b.freeze()).unwrap();
    assert_eq!(d.records, records);
}

#[test]
fn log_append_time_applies_to_every_record() {
    let mut r = rec(0, 1, vec![]);
    r.timestamp_type = TimestampType::LogAppendTime;
    r.timestamp = 777;
    let d = decode_batch(&encode_batch(&[r.clone()]).freeze()).unwrap();
    assert_eq!(d.records, vec![r]);
}

#[test]
fn malformed_records_are_errors_not_panics() {
    let mut b = encode_batch(&[rec(0, 1, vec![("a", Some(b"x"))])]);
    let n = b.len();
    b.truncate(n - 3);
    // Fix the length field so the header parses; the records are now short.
    let len = (b.len() - crate::layout::LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    assert!(decode_batch(&b.freeze()).is_err());
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(
        gaps in proptest::collection::vec(1i64..4, 1..30),
        ts in proptest::collection::vec(0i64..1_000_000, 30),
        hdrs in proptest::collection::vec(proptest::collection::vec(("[a-c]{1,3}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..4), 30),
        nulls in proptest::collection::vec((any::<bool>(), any::<bool>()), 30),
    ) {
        let mut offset = 100;
        let mut records = Vec::new();
        for (i, g) in gaps.iter().enumerate() {
            offset += g;
            let mut r = rec(offset, ts[i], vec![]);
            r.headers = hdrs[i].iter().map(|(k, v)| (k.clone(), v.clone().map(Bytes::from))).collect();
            if nulls[i].0 { r.key = None; }
            if nulls[i].1 { r.value = None; }
            records.push(r);
        }
        let d = decode_batch(&encode_batch(&records).freeze()).unwrap();
        prop_assert_eq!(d.records, records);
    }
}

proptest! {
    /// The record length written before each record is computed, not
    /// measured: it must match what the field writers emit.
    #[test]
    fn varlong_len_matches_what_is_written(v in any::<i64>(), shift in 0u32..64) {
        for v in [v, v >> shift, -(v >> shift), 0, -1, i64::MIN, i64::MAX, 63, 64, -64, -65, 8191, 8192, -8192, -8193] {
            let mut b = BytesMut::new();
            super::put_varlong(&mut b, v);
            prop_assert_eq!(super::varlong_len(v), b.len());
            // And it reads back.
            prop_assert_eq!(crate::records::read_varlong(&b), Some((v, b.len())));
        }
    }
}

#[test]
fn large_values_cross_varint_widths() {
    // Values whose lengths take 1, 2 and 3 varint bytes in one batch.
    let mut records = Vec::new();
    for (i, n) in [0usize, 63, 64, 8191, 8192, 70_000].into_iter().enumerate() {
        let mut r = rec(i as i64, 5, vec![]);
        r.value = Some(Bytes::from(vec![7u8; n]));
        records.push(r);
    }
    let d = decode_batch(&encode_batch(&records).freeze()).unwrap();
    assert_eq!(d.records, records);
}

proptest! {
    /// The header-less record writers write byte for byte what the general
    /// one does for the same records, one at a time or a run at once
    /// (offset and timestamp deltas of every varint width, null, empty and
    /// long keys and values).
    #[test]
    fn header_less_writers_write_what_push_parts_writes(
        records in proptest::collection::vec((
            0i64..1 << 40,
            -(1i64 << 40)..1 << 40,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        ), 1..5),
    ) {
        let fields = BatchFields {
            timestamp_type: TimestampType::CreateTime,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            leader_epoch: 0,
        };
        // Offsets increase: each record's is the one before's plus its step.
        let mut offset = 0;
        let records: Vec<_> = records
            .iter()
            .map(|(step, ts, key, value)| {
                offset += step;
                (offset, *ts, key.as_deref(), value.as_deref())
            })
            .collect();
        let write = |how: u8| {
            let mut b = BytesMut::from(&b"before"[..]);
            let mut batch = BatchBuilder::start(&mut b, &fields, 0, 0);
            match how {
                0 => {
                    for &(offset, ts, key, value) in &records {
                        batch.push_parts(&mut b, offset, ts, key, value, &[]);
                    }
                }
                1 => {
                    for &(offset, ts, key, value) in &records {
                        batch.push_key_value(&mut b, offset, ts, key, value);
                    }
                }
                _ => batch.extend_key_values(&mut b, records.iter().copied()),
            }
            batch.finish(&mut b);
            b
        };
        let general = write(0);
        prop_assert_eq!(&write(1), &general);
        prop_assert_eq!(&write(2), &general);
    }
}

/// The borrowing visitor sees, record for record, what `decode_batch`
/// decodes, whatever the codec; the batch-level fields come with the header.
#[test]
fn for_each_record_borrows_what_decode_batch_decodes() {
    for c in CODECS {
        let batch = encode_with(&three_records(7), c);
        let decoded = decode_batch(&batch).unwrap().records;
        let mut seen = Vec::new();
        let h = for_each_record(&batch, |h, r| {
            seen.push(DecodedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: h.timestamp_type(),
                key: r.key.map(Bytes::copy_from_slice),
                value: r.value.map(Bytes::copy_from_slice),
                headers: r
                    .headers()
                    .map(|(k, v)| {
                        (
                            String::from_utf8(k.to_vec()).unwrap(),
                            v.map(Bytes::copy_from_slice),
                        )
                    })
                    .collect(),
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
                sequence: r.sequence,
                leader_epoch: h.partition_leader_epoch,
            });
            Ok::<(), CodecError>(())
        })
        .unwrap();
        assert_eq!(seen, decoded, "{c:?}");
        assert_eq!((h.base_offset, h.records_count), (7, 3));
        assert_eq!(
            record_timestamps(&batch).unwrap(),
            [(7, 1000), (8, 1001), (9, 1005)]
        );
    }
}

/// The visitor stops at the caller's first error, and a batch whose records
/// number other than its header says fails after its records were seen.
#[test]
fn for_each_record_stops_on_errors() {
    #[derive(Debug)]
    enum E {
        Mine(i64),
        Codec(CodecError),
    }
    impl From<CodecError> for E {
        fn from(e: CodecError) -> Self {
            E::Codec(e)
        }
    }
    let batch = encode_with(&three_records(0), KCompression::None);
    let mut n = 0;
    let r = for_each_record(&batch, |_, r| {
        n += 1;
        if r.offset == 1 {
            return Err(E::Mine(r.offset));
        }
        Ok(())
    });
    assert!(matches!(r, Err(E::Mine(1))), "{r:?}");
    assert_eq!(n, 2);

    // The header claims four records (CRC restored: the count is what is
    // wrong, not the checksum).
    let mut short = BytesMut::from(&batch[..]);
    let at = layout::RECORDS_COUNT;
    short[at..at + 4].copy_from_slice(&4i32.to_be_bytes());
    crate::header::store_crc(&mut short);
    let mut n = 0;
    let r = for_each_record(&short, |_, _| {
        n += 1;
        Ok::<(), E>(())
    });
    assert!(
        matches!(
            r,
            Err(E::Codec(CodecError::Count {
                declared: 4,
                actual: 3
            }))
        ),
        "{r:?}"
    );
    assert_eq!(n, 3);
    assert!(matches!(
        decode_batch(&short.freeze()),
        Err(CodecError::Count {
            declared: 4,
            actual: 3
        })
    ));
}
