//! Fetch responses without copying the records: the response is encoded as
//! a list of chunks — small encoded pieces around each partition's record
//! set, and the record sets themselves as the `Bytes` the log returned — so
//! the connection writes them with one vectored write. Encoding the whole
//! response into one buffer would copy every fetched byte once more (and
//! hold a second response-sized buffer per connection).
//!
//! The structure around the records is written here for Fetch v4–v12 (the
//! versions Strata serves); each partition is encoded by `kafka_protocol`
//! with an empty record set, whose known suffix is replaced by the real
//! one. Anything unexpected (tagged fields we do not write, an unknown
//! suffix, an unsupported version) falls back to the plain encoding, so
//! the output is always byte-for-byte what `kafka_protocol` would produce
//! (the tests compare the two).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::protocol::Encodable;

/// Record sets smaller than this are copied (not worth a separate chunk).
const SEPARATE_CHUNK: usize = 4096;

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// `resp` as chunks for `version`, appended after `head` (the response
/// header already encoded), or `None` if it must be encoded the plain way.
pub fn encode_chunked(resp: &FetchResponse, version: i16, head: BytesMut) -> Option<Vec<Bytes>> {
    if !(4..=12).contains(&version) || !resp.unknown_tagged_fields.is_empty() {
        return None;
    }
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut cur = head;
    cur.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        cur.put_i16(resp.error_code);
        cur.put_i32(resp.session_id);
    } else if resp.error_code != 0 || resp.session_id != 0 {
        return None;
    }
    let count = |b: &mut BytesMut, n: usize| {
        if flexible {
            put_uvarint(b, (n + 1) as u32);
        } else {
            b.put_i32(n as i32);
        }
    };
    count(&mut cur, resp.responses.len());
    for topic in &resp.responses {
        if !topic.unknown_tagged_fields.is_empty() {
            return None;
        }
        let name = topic.topic.as_bytes();
        if flexible {
            put_uvarint(&mut cur, (name.len() + 1) as u32);
        } else {
            cur.put_i16(name.len() as i16);
        }
        cur.put_slice(name);
        count(&mut cur, topic.partitions.len());
        for p in &topic.partitions {
            let records = p.records.clone().unwrap_or_default();
            if records.len() < SEPARATE_CHUNK {
                p.encode(&mut cur, version).ok()?;
                continue;
            }
            let mut empty = p.clone();
            empty.records = Some(Bytes::new());
            let start = cur.len();
            empty.encode(&mut cur, version).ok()?;
            // An empty record set ends the partition as: INT32 0
            // (v4–v11), or compact length 1 then no tagged fields (v12).
            let suffix: &[u8] = if flexible { &[1, 0] } else { &[0, 0, 0, 0] };
            if cur.len() < start + suffix.len() || !cur.ends_with(suffix) {
                return None;
            }
            cur.truncate(cur.len() - suffix.len());
            if flexible {
                put_uvarint(&mut cur, (records.len() + 1) as u32);
            } else {
                cur.put_i32(records.len() as i32);
            }
            chunks.push(cur.split().freeze());
            chunks.push(records);
            if flexible {
                cur.put_u8(0); // the partition's (empty) tagged fields
            }
        }
        if flexible {
            cur.put_u8(0); // the topic's tagged fields
        }
    }
    if flexible {
        cur.put_u8(0); // the response's tagged fields (node endpoints: v16+)
    }
    chunks.push(cur.freeze());
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn response(sizes: &[&[usize]]) -> FetchResponse {
        let mut r = FetchResponse::default();
        r.throttle_time_ms = 3;
        for (t, parts) in sizes.iter().enumerate() {
            let mut tr = FetchableTopicResponse::default();
            tr.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            for (i, &n) in parts.iter().enumerate() {
                let mut pd = PartitionData::default();
                pd.partition_index = i as i32;
                pd.high_watermark = 1000 + i as i64;
                pd.last_stable_offset = 900;
                pd.log_start_offset = 7;
                pd.error_code = if n == 0 { 1 } else { 0 };
                if i % 2 == 1 {
                    pd.aborted_transactions = Some(vec![AbortedTransaction::default()
                        .with_producer_id(ProducerId(42))
                        .with_first_offset(5)]);
                }
                pd.records = Some(Bytes::from((0..n).map(|b| b as u8).collect::<Vec<u8>>()));
                tr.partitions.push(pd);
            }
            r.responses.push(tr);
        }
        r
    }

    #[test]
    fn chunks_are_byte_for_byte_the_plain_encoding() {
        let shapes: [&[&[usize]]; 4] = [
            &[],
            &[&[]],
            &[&[100_000, 0, 10], &[5000]],
            &[&[4096, 4095, 1 << 20], &[], &[70_000, 70_000]],
        ];
        for shape in shapes {
            let r = response(shape);
            for version in 4..=12 {
                let mut plain = BytesMut::from(&b"HEAD"[..]);
                r.encode(&mut plain, version).unwrap();
                let chunks = encode_chunked(&r, version, BytesMut::from(&b"HEAD"[..]))
                    .expect("chunked encoding");
                let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                assert_eq!(joined, plain.to_vec(), "version {version}, shape {shape:?}");
                // Big record sets travel as their own chunk, uncopied.
                for t in &r.responses {
                    for p in &t.partitions {
                        let rec = p.records.clone().unwrap_or_default();
                        if rec.len() >= SEPARATE_CHUNK {
                            assert!(chunks.iter().any(|c| c.as_ptr() == rec.as_ptr()));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unsupported_shapes_fall_back() {
        let r = response(&[&[10]]);
        assert!(encode_chunked(&r, 13, BytesMut::new()).is_none());
        let mut s = r.clone();
        s.session_id = 5;
        assert!(encode_chunked(&s, 6, BytesMut::new()).is_none());
    }
}
