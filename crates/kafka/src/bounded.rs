//! Decoding a frame from the network without letting a count read from it
//! size an allocation.
//!
//! The `kafka-protocol` decoders read an array's element count (an INT32,
//! or an unsigned varint in flexible versions) and reserve room for that
//! many elements before decoding the first: a 15-byte Metadata request
//! declaring 2 147 483 647 topics asked for 150 GB, and the failed
//! allocation aborted the broker. Kafka's own decoders refuse a collection
//! larger than the bytes that remain ("Tried to allocate a collection of
//! size N, but there are only M bytes remaining"): every element takes at
//! least a byte. [`Bounded`] is the buffer the decoders read from, and
//! makes that check where a count is read:
//!
//! - **Varints** (counts and lengths of flexible versions, tagged fields):
//!   the decoders read them byte by byte, and every varint in a request or
//!   response is a count, a length, a size or a tag. At each byte read,
//!   [`Bounded`] decodes the varint that starts there; if its value exceeds
//!   both the bytes after it (+1, for the null/length offset) and
//!   [`SMALL`], the frame is refused: the decoder is handed a byte that
//!   ends the varint at a harmless value and every read after it fails.
//! - **INT32 counts and lengths** (non-flexible versions) share their type
//!   with ordinary fields (timeouts, byte limits) that legitimately exceed
//!   the rest of the frame. Such a value is handed to the decoder as -2,
//!   which every count and length refuses as negative and an ordinary
//!   field just carries; if the decode still succeeds, the value was not a
//!   count, and the frame is decoded again without the check.
//!
//! Invariants: a frame [`decode`] accepts decodes to exactly what the
//! decoder makes of it unchecked; no count or length it lets through
//! exceeds the frame's remaining bytes or [`SMALL`]. Cost: one extra
//! decode for a frame carrying a large non-count INT32 (a Fetch's byte
//! limits), and a peek of at most five bytes per byte-wise read. A boolean
//! sent as a byte ≥ 0x80 (Kafka's clients send 1) reads as the start of a
//! varint and may be refused.

use bytes::{Buf, Bytes, TryGetError};
use kafka_protocol::protocol::buf::ByteBuf;
use kafka_protocol::protocol::{Decodable, Message};
use std::ops::Range;

/// Counts and lengths up to this pass whatever follows them: reserving
/// room for this many elements is harmless, and a decoder that runs out
/// of bytes fails as it would have.
pub(crate) const SMALL: u64 = 1 << 16;

/// What an INT32 count is replaced with: negative, so a count or length
/// refuses it.
const REPLACED: i32 = -2;

/// The buffer a checked decode reads (see the module docs).
pub(crate) struct Bounded {
    buf: Bytes,
    /// Whether counts are checked (false for the second, unchecked decode).
    check: bool,
    /// Set once a varint was refused: every read after it fails.
    poisoned: bool,
    /// The first varint refused: its value and the bytes after it.
    refused: Option<(u64, usize)>,
    /// The first INT32 replaced: its value and the bytes after it.
    replaced: Option<(i32, usize)>,
    /// Whether the last read was a byte with the continuation bit set (the
    /// next byte read continues a varint).
    in_varint: bool,
}

impl Bounded {
    fn new(buf: Bytes, check: bool) -> Self {
        Self {
            buf,
            check,
            poisoned: false,
            refused: None,
            replaced: None,
            in_varint: false,
        }
    }

    /// The varint that starts at the front of the buffer, read as the
    /// decoders read it (at most five bytes), and the bytes after it; None
    /// if the buffer ends inside it (the decoder then fails by itself).
    fn peek_varint(&self) -> Option<(u64, usize)> {
        let b = &self.buf[..];
        let mut value = 0u64;
        for (i, &byte) in b.iter().take(5).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 || i == 4 {
                return Some((value, b.len() - i - 1));
            }
        }
        None
    }
}

/// True if `value`, a count or length with `after` bytes after it, cannot
/// be one (and is large enough to matter).
fn impossible(value: u64, after: usize) -> bool {
    value > SMALL && value > after as u64 + 1
}

impl Buf for Bounded {
    fn remaining(&self) -> usize {
        if self.poisoned {
            0
        } else {
            self.buf.len()
        }
    }

    fn chunk(&self) -> &[u8] {
        if self.poisoned {
            &[]
        } else {
            &self.buf[..]
        }
    }

    fn advance(&mut self, cnt: usize) {
        self.in_varint = false;
        self.buf.advance(cnt.min(self.buf.len()));
    }

    fn try_get_u8(&mut self) -> Result<u8, TryGetError> {
        let available = self.remaining();
        let Some(&byte) = self.chunk().first() else {
            return Err(TryGetError {
                requested: 1,
                available,
            });
        };
        if self.check {
            if let Some((value, after)) = self.peek_varint() {
                if impossible(value, after) {
                    self.refused.get_or_insert((value, after));
                    self.poisoned = true;
                    // Ends the varint: at the value the bytes before it
                    // gave (if it continues one, which were checked), or
                    // at 2 (one element, whose read then fails).
                    let harmless = if self.in_varint { 0 } else { 2 };
                    self.in_varint = false;
                    return Ok(harmless);
                }
            }
        }
        self.buf.advance(1);
        self.in_varint = byte >= 0x80;
        Ok(byte)
    }

    fn try_get_i32(&mut self) -> Result<i32, TryGetError> {
        self.in_varint = false;
        if self.remaining() < 4 {
            return Err(TryGetError {
                requested: 4,
                available: self.remaining(),
            });
        }
        let v = self.buf.get_i32();
        let after = self.buf.len();
        if self.check && v > 0 && impossible(v as u64, after) {
            self.replaced.get_or_insert((v, after));
            return Ok(REPLACED);
        }
        Ok(v)
    }
}

impl ByteBuf for Bounded {
    fn peek_bytes(&mut self, r: Range<usize>) -> Bytes {
        let end = r.end.min(self.remaining());
        self.buf.slice(r.start.min(end)..end)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        self.in_varint = false;
        let n = size.min(self.remaining());
        self.buf.split_to(n)
    }
}

/// Decodes `frame` with `decode`, refusing a count or length that cannot
/// fit in what follows it before anything is reserved for it (see the
/// module docs). The error names the count and the bytes left, or is the
/// decoder's.
pub(crate) fn decode<T>(
    frame: Bytes,
    mut decode: impl FnMut(&mut Bounded) -> anyhow::Result<T>,
) -> Result<T, String> {
    let mut checked = Bounded::new(frame.clone(), true);
    let result = decode(&mut checked);
    if let Some((value, after)) = checked.refused {
        return Err(too_large(value, after));
    }
    match (result, checked.replaced) {
        (Ok(v), None) => Ok(v),
        // The replaced INT32 was an ordinary field (a count or a length
        // would have refused it): decode it as sent.
        (Ok(_), Some(_)) => decode(&mut Bounded::new(frame, false)).map_err(|e| e.to_string()),
        (Err(e), Some((value, after))) if e.to_string().contains(&format!("({REPLACED})")) => {
            Err(too_large(value as u64, after))
        }
        (Err(e), _) => Err(e.to_string()),
    }
}

/// Decodes one `kafka-protocol` message of `version` from `bytes` that
/// came from the network (a consumer's subscription or assignment, say),
/// with the same refusal as [`decode`]: such a decoder, run on the bytes
/// directly, reserves room for whatever count it reads first.
pub fn decode_message<T: Decodable>(bytes: Bytes, version: i16) -> Result<T, String> {
    decode(bytes, |b| T::decode(b, version))
}

/// [`decode_message`] of a message that carries its own version first, as
/// an INT16 (the consumer protocol's subscription and assignment), read at
/// the nearest version the codec knows.
pub fn decode_versioned<T: Decodable + Message>(bytes: Bytes) -> Result<T, String> {
    let [a, b, ..] = bytes[..] else {
        return Err(format!("{} bytes hold no version", bytes.len()));
    };
    let version = i16::from_be_bytes([a, b]).clamp(T::VERSIONS.min, T::VERSIONS.max);
    decode_message(bytes.slice(2..), version)
}

fn too_large(value: u64, after: usize) -> String {
    format!("a count or length of {value} where only {after} bytes follow")
}

#[cfg(test)]
mod tests;
