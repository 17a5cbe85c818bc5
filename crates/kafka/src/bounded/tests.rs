//! A test that fails here by aborting the test process is the bug these
//! tests are for: an allocation sized by a count read from the frame.

use super::*;
use crate::handlers::decode::{implemented, request};
use crate::versions;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, StrBytes};

/// A request frame (header and body) as a client sends it.
fn frame(key: ApiKey, version: i16, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("t")));
    header
        .encode(&mut b, key.request_header_version(version))
        .expect("header encodes");
    body(&mut b);
    b.freeze()
}

fn checked(frame: Bytes) -> Result<(RequestHeader, RequestKind), String> {
    decode(frame, |buf| {
        let header = decode_request_header_from_buffer(buf)?;
        let key =
            ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("unknown key"))?;
        let version = header.request_api_version;
        Ok((header, request(key, buf, version)?))
    })
}

fn unchecked(frame: Bytes) -> anyhow::Result<(RequestHeader, RequestKind)> {
    let mut buf = frame;
    let header = decode_request_header_from_buffer(&mut buf)?;
    let key =
        ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("unknown key"))?;
    let version = header.request_api_version;
    Ok((header, RequestKind::decode(key, &mut buf, version)?))
}

#[test]
fn an_int32_count_beyond_the_frame_is_refused() {
    // Metadata v1: the topics array declares i32::MAX entries, none sent.
    let f = frame(ApiKey::Metadata, 1, |b| b.put_i32(i32::MAX));
    let err = checked(f).expect_err("refused");
    assert!(
        err.contains("2147483647") && err.contains("0 bytes follow"),
        "{err}"
    );
}

#[test]
fn a_varint_count_beyond_the_frame_is_refused() {
    // Metadata v9 (flexible): a compact array of u32::MAX - 1 topics.
    let f = frame(ApiKey::Metadata, 9, |b| {
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        b.put_slice(&[0, 0, 0, 0]);
    });
    let err = checked(f).expect_err("refused");
    assert!(err.contains("4294967295"), "{err}");
}

#[test]
fn a_varint_count_inside_the_frame_passes_to_the_decoder() {
    // 200 topics declared (two varint bytes), only 3 bytes follow: under
    // SMALL, so the decoder itself reports running out of bytes.
    let f = frame(ApiKey::Metadata, 9, |b| {
        b.put_slice(&[0xc9, 0x01]);
        b.put_slice(&[0, 0, 0]);
    });
    let err = checked(f).expect_err("truncated");
    assert!(!err.contains("where only"), "{err}");
}

#[test]
fn a_large_int32_that_is_not_a_count_decodes_as_sent() {
    let mut req = FetchRequest::default();
    req.max_wait_ms = 500;
    req.max_bytes = i32::MAX;
    req.min_bytes = 1 << 30;
    let f = frame(ApiKey::Fetch, 4, |b| req.encode(b, 4).expect("encodes"));
    let (_, got) = checked(f).expect("decodes");
    assert_eq!(got, RequestKind::Fetch(req));
}

/// Requests with arrays, strings and bytes in them, at every version they
/// encode at: what the sweep below corrupts.
fn rich_frames() -> Vec<Bytes> {
    let name = || TopicName(StrBytes::from_static_str("orders"));
    let mut frames = Vec::new();
    let mut push = |key: ApiKey, enc: &dyn Fn(&mut BytesMut, i16) -> anyhow::Result<()>| {
        let Some(&(_, lo, hi)) = versions::supported().iter().find(|(k, _, _)| *k == key) else {
            panic!("{key:?} is implemented");
        };
        for v in lo..=hi {
            let mut body = BytesMut::new();
            if enc(&mut body, v).is_ok() {
                frames.push(frame(key, v, |b| b.put_slice(&body)));
            }
        }
    };
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name())),
        MetadataRequestTopic::default().with_name(Some(name())),
    ]));
    push(ApiKey::Metadata, &|b, v| metadata.encode(b, v));
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name())
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from_static(&[1; 70]))),
                PartitionProduceData::default().with_index(1),
            ])]);
    push(ApiKey::Produce, &|b, v| produce.encode(b, v));
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_max_bytes(52_428_800)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name())
            .with_partitions(vec![
                FetchPartition::default()
                    .with_partition_max_bytes(1 << 20);
                3
            ])]);
    push(ApiKey::Fetch, &|b, v| fetch.encode(b, v));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(45_000)
        .with_rebalance_timeout_ms(300_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(&[
                    0, 3, 0, 0, 0, 1, 0, 6
                ]));
            2
        ]);
    push(ApiKey::JoinGroup, &|b, v| join.encode(b, v));
    frames
}

#[test]
fn requests_decode_as_the_unchecked_decoder_decodes_them() {
    // Every implemented request, default, at each of its versions.
    let mut n = 0;
    for (key, lo, hi) in versions::supported() {
        for v in lo..=hi {
            macro_rules! encode {
                ($($kind:ident: $ty:ty,)*) => {
                    match key {
                        $(ApiKey::$kind => <$ty>::default().encode(&mut BytesMut::new(), v).map(|_| {
                            let mut b = BytesMut::new();
                            let _ = <$ty>::default().encode(&mut b, v);
                            b
                        }),)*
                        other => panic!("{other:?} is supported but not decoded"),
                    }
                };
            }
            let Ok(body) = implemented!(encode) else {
                continue;
            };
            let f = frame(key, v, |b| b.put_slice(&body));
            let got = checked(f.clone()).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
            assert_eq!(got, unchecked(f).expect("decodes"), "{key:?} v{v}");
            n += 1;
        }
    }
    assert!(n > 150, "only {n} requests encoded");
    let rich = rich_frames();
    assert!(rich.len() > 30, "only {} rich frames", rich.len());
    for f in rich {
        let got = checked(f.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, unchecked(f).expect("decodes"));
    }
}

#[test]
fn no_count_written_anywhere_in_a_request_sizes_an_allocation() {
    // Each position of each rich frame overwritten with the largest INT32
    // and with the longest varint: what was decoded must be what the
    // unchecked decoder makes of it, or an error (never an abort).
    let bombs: [&[u8]; 3] = [
        &i32::MAX.to_be_bytes(),
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0xff, 0xff, 0xff, 0x7f],
    ];
    let mut refused = 0;
    for f in rich_frames() {
        for bomb in bombs {
            for at in 8..f.len().saturating_sub(bomb.len()) {
                let mut m = BytesMut::from(&f[..]);
                m[at..at + bomb.len()].copy_from_slice(bomb);
                match checked(m.freeze()) {
                    Ok(_) => {}
                    Err(e) if e.contains("where only") => refused += 1,
                    Err(_) => {}
                }
            }
        }
    }
    assert!(refused > 100, "only {refused} refused");
}
