//! Decompressing a batch's records, bounded.
//!
//! A compressed batch of a megabyte can hold gigabytes of records (a run of
//! identical bytes compresses a thousandfold and more), and everything that
//! decompresses records holds them whole: the produce path, to check them,
//! and the cold tier's offload, to decode them. So output stops at a limit
//! the caller sets, and a batch that would pass it is refused, never
//! allocated for: the codecs' readers are read through `take(limit + 1)`,
//! and a snappy block's declared length is checked before its buffer is
//! made.
//!
//! Formats, as Kafka's clients write them: gzip (one or more members),
//! snappy in snappy-java's framing (a 16-byte header whose first 8 bytes
//! are `\x82SNAPPY\0`, then blocks of a big-endian u32 length and a raw
//! snappy block) or, without that header, one raw snappy block, LZ4 frames,
//! and zstd frames.

use crate::header::Compression;
use std::cell::RefCell;
use std::io::Read;
use thiserror::Error;
use zstd::zstd_safe::DCtx;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("cannot decompress {codec:?} records: {reason}")]
    Corrupt { codec: Compression, reason: String },
    #[error("{codec:?} records decompress to more than {limit} bytes")]
    TooLarge { codec: Compression, limit: usize },
}

/// The first bytes of snappy-java's framing.
const SNAPPY_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// The framing's header: the magic, then two 4-byte versions.
const SNAPPY_HEADER: usize = 16;

/// Decompresses `body` (the records of a batch compressed with `codec`),
/// refusing to produce more than `limit` bytes.
pub(crate) fn decompress(
    codec: Compression,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: &dyn std::fmt::Display| DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    };
    let out = match codec {
        Compression::None => {
            if body.len() > limit {
                return Err(DecompressError::TooLarge { codec, limit });
            }
            return Ok(body.to_vec());
        }
        Compression::Snappy => return snappy(body, limit),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(body), limit),
        Compression::Lz4 => match lz4::Decoder::new(body) {
            Ok(d) => read_bounded(d, limit),
            Err(e) => Err(e),
        },
        Compression::Zstd => zstd_bounded(body, limit),
    };
    match out {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(DecompressError::TooLarge { codec, limit }),
        Err(e) => Err(corrupt(&e)),
    }
}

/// All of `r`, or None if it holds more than `limit` bytes.
fn read_bounded(r: impl Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

thread_local! {
    /// A zstd decompression context per thread, reused: creating one
    /// costs more than decompressing a producer's batch (90 % of a 100 B
    /// batch's check in the profile).
    static ZSTD: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

fn zstd_bounded(body: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    ZSTD.with_borrow_mut(|slot| {
        let ctx = match slot {
            Some(ctx) => ctx,
            None => slot.insert(DCtx::try_create().ok_or_else(|| {
                std::io::Error::other("cannot create a zstd decompression context")
            })?),
        };
        let out = read_bounded(zstd::stream::read::Decoder::with_context(body, ctx), limit);
        // A frame with a large window (up to zstd's default limit of
        // 128 MiB) grows the context to hold it: not kept past the batch.
        if ctx.sizeof() > MAX_KEPT_ZSTD_CONTEXT {
            *slot = None;
        }
        out
    })
}

/// The largest zstd context kept for the next batch: room for the windows
/// of zstd's levels up to 19 (8 MiB; producers default to level 3, whose
/// window is at most 2 MiB).
const MAX_KEPT_ZSTD_CONTEXT: usize = 16 << 20;

fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    const CODEC: Compression = Compression::Snappy;
    let corrupt = |reason: String| DecompressError::Corrupt {
        codec: CODEC,
        reason,
    };
    let mut out = Vec::new();
    let append = |block: &[u8], out: &mut Vec<u8>| {
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        let start = out.len();
        if n > limit - start {
            return Err(DecompressError::TooLarge {
                codec: CODEC,
                limit,
            });
        }
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    if !body.starts_with(&SNAPPY_MAGIC) {
        // No framing: one raw block, as snappy-java also reads it.
        append(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = body
        .get(SNAPPY_HEADER..)
        .ok_or_else(|| corrupt("snappy framing header is truncated".into()))?;
    while !rest.is_empty() {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt("snappy block length is truncated".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let block = after
            .get(..len)
            .ok_or_else(|| corrupt(format!("snappy block of {len} bytes is truncated")))?;
        append(block, &mut out)?;
        rest = &after[len..];
    }
    Ok(out)
}

/// `batch` (one uncompressed batch) with its records compressed by `codec`
/// as Kafka's clients compress them, attributes and CRC set to match. For
/// tests and benchmarks: real clients bring their own batches.
pub fn compress_batch(batch: &[u8], codec: Compression) -> Result<bytes::BytesMut, String> {
    use crate::header::layout;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let h = crate::BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    let records = batch
        .get(layout::HEADER_SIZE..h.total_size())
        .ok_or("the batch is truncated")?;
    let mut z = BytesMut::new();
    let fill = |b: &mut BytesMut| {
        b.extend_from_slice(records);
        Ok(())
    };
    let done = match codec {
        Compression::None => {
            z.extend_from_slice(records);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut z, fill),
        Compression::Snappy => Snappy::compress(&mut z, fill),
        Compression::Lz4 => Lz4::compress(&mut z, fill),
        Compression::Zstd => Zstd::compress(&mut z, fill),
    };
    done.map_err(|e| e.to_string())?;
    let mut out = BytesMut::from(&batch[..layout::HEADER_SIZE]);
    out.extend_from_slice(&z);
    let length = i32::try_from(out.len() - layout::LOG_OVERHEAD).map_err(|e| e.to_string())?;
    out[layout::BATCH_LENGTH..layout::BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = (h.attributes & !0x07) | codec as i16;
    out[layout::ATTRIBUTES..layout::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    crate::header::store_crc(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    /// `data` compressed by kafka-protocol's compressors (the formats
    /// Kafka's clients write).
    fn compressed(codec: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let fill = |b: &mut BytesMut| {
            b.extend_from_slice(data);
            Ok(())
        };
        match codec {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => Gzip::compress(&mut out, fill).unwrap(),
            Compression::Snappy => Snappy::compress(&mut out, fill).unwrap(),
            Compression::Lz4 => Lz4::compress(&mut out, fill).unwrap(),
            Compression::Zstd => Zstd::compress(&mut out, fill).unwrap(),
        }
        out.to_vec()
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_within_its_limit_and_is_refused_past_it() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for codec in CODECS {
            let z = compressed(codec, &data);
            assert_eq!(
                decompress(codec, &z, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert!(
                matches!(
                    decompress(codec, &z, data.len() - 1),
                    Err(DecompressError::TooLarge { .. })
                ),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_bomb_is_refused_without_being_inflated() {
        // 64 MiB of zeros compresses to a few megabytes or less in each
        // codec; a 1 MiB limit refuses it having made at most that much.
        let zeros = vec![0u8; 64 << 20];
        for codec in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let z = compressed(codec, &zeros);
            assert!(z.len() < 16 << 20, "{codec:?}: {}", z.len());
            assert!(
                matches!(
                    decompress(codec, &z, 1 << 20),
                    Err(DecompressError::TooLarge { limit, .. }) if limit == 1 << 20
                ),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_zstd_context_is_kept_unless_a_large_window_grew_it() {
        use std::io::Write;
        let small = compressed(Compression::Zstd, b"small batch");
        decompress(Compression::Zstd, &small, 1 << 20).unwrap();
        assert!(ZSTD.with_borrow(|c| c.is_some()));
        // 40 MiB streamed with a 32 MiB window: the decoder needs it all.
        let mut pattern = vec![0u8; 1 << 20];
        let mut x = 7u32;
        for b in &mut pattern {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 24) as u8;
        }
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(25))
            .unwrap();
        for _ in 0..40 {
            enc.write_all(&pattern).unwrap();
        }
        let big = enc.finish().unwrap();
        assert_eq!(
            decompress(Compression::Zstd, &big, 64 << 20).unwrap().len(),
            40 << 20
        );
        assert!(ZSTD.with_borrow(|c| c.is_none()));
        decompress(Compression::Zstd, &small, 1 << 20).unwrap();
        assert!(ZSTD.with_borrow(|c| c
            .as_ref()
            .is_some_and(|c| c.sizeof() <= MAX_KEPT_ZSTD_CONTEXT)));
    }

    #[test]
    fn raw_snappy_and_corrupt_input() {
        let data = b"hello hello hello hello snappy".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
        // A raw block declaring 4 GB is refused by its header alone.
        let liar = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(
            decompress(Compression::Snappy, &liar, 1 << 20),
            Err(DecompressError::TooLarge { .. })
        ));
        for codec in CODECS.into_iter().skip(1) {
            let err = decompress(codec, b"\x82SNAPPY\0 certainly not compressed", 1 << 20);
            assert!(
                matches!(err, Err(DecompressError::Corrupt { .. })),
                "{codec:?}: {err:?}"
            );
        }
    }
}
