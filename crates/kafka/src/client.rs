//! A minimal async Kafka client over one connection: enough for the CLI's
//! admin, produce and consume commands and for tests. It negotiates versions
//! with ApiVersions and speaks only through `kafka-protocol` message types.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request, StrBytes};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the broker does not support {0:?}")]
    Unsupported(ApiKey),
    #[error("timed out waiting for the broker")]
    Timeout,
}

pub struct KafkaClient {
    stream: TcpStream,
    correlation: i32,
    client_id: String,
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

/// Largest response the client accepts.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

impl KafkaClient {
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut c = Self {
            stream,
            correlation: 0,
            client_id: client_id.to_string(),
            versions: HashMap::new(),
            timeout: Duration::from_secs(60),
        };
        let resp: ApiVersionsResponse = c.send(ApiVersionsRequest::default(), 0).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Protocol(format!(
                "ApiVersions failed with error {}",
                resp.error_code
            )));
        }
        c.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(c)
    }

    /// The highest version both sides support, capped at `max`.
    pub fn version<R: Request>(&self, max: i16) -> Result<i16, ClientError> {
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let (lo, hi) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or(ClientError::Unsupported(key))?;
        let v = hi.min(max).min(R::VERSIONS.max);
        if v < lo || v < R::VERSIONS.min {
            return Err(ClientError::Unsupported(key));
        }
        Ok(v)
    }

    /// Sends `req` at the negotiated version (at most `max`) and decodes the answer.
    pub async fn call<R: Request>(&mut self, req: R, max: i16) -> Result<R::Response, ClientError> {
        let v = self.version::<R>(max)?;
        self.send(req, v).await
    }

    /// Encodes `req` with a fresh correlation id into a length-prefixed frame.
    fn frame<R: Request>(&mut self, req: R, version: i16) -> Result<(BytesMut, i32), ClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        let frame = encode_frame(&self.client_id, self.correlation, req, version)?;
        Ok((frame, self.correlation))
    }

    pub async fn send<R: Request>(
        &mut self,
        req: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let (frame, correlation) = self.frame(req, version)?;
        let fut = async {
            self.stream.write_all(&frame).await?;
            read_frame(&mut self.stream).await
        };
        let buf = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout)??;
        decode_response::<R>(buf, correlation, version)
    }

    /// Splits the connection for pipelining: requests go out through the
    /// [`RequestWriter`] without waiting, and the [`ResponseReader`] reads the
    /// answers, which a Kafka broker sends in request order. Negotiate
    /// versions (see [`KafkaClient::version`]) before splitting.
    pub fn into_pipeline(self) -> (RequestWriter, ResponseReader) {
        let (read, write) = self.stream.into_split();
        (
            RequestWriter {
                stream: write,
                correlation: self.correlation,
                client_id: self.client_id,
            },
            ResponseReader {
                stream: read,
                timeout: self.timeout,
            },
        )
    }
}

/// The sending half of a pipelined connection.
pub struct RequestWriter {
    stream: OwnedWriteHalf,
    correlation: i32,
    client_id: String,
}

impl RequestWriter {
    /// Writes `req` at `version`; returns its correlation id, which the
    /// matching [`ResponseReader::recv`] checks.
    pub async fn send<R: Request>(&mut self, req: R, version: i16) -> Result<i32, ClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        let frame = encode_frame(&self.client_id, self.correlation, req, version)?;
        self.stream.write_all(&frame).await?;
        Ok(self.correlation)
    }
}

/// The receiving half of a pipelined connection.
pub struct ResponseReader {
    stream: OwnedReadHalf,
    timeout: Duration,
}

impl ResponseReader {
    /// Reads the next response, which must answer the request `correlation`
    /// sent at `version`.
    pub async fn recv<R: Request>(
        &mut self,
        correlation: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let buf = tokio::time::timeout(self.timeout, read_frame(&mut self.stream))
            .await
            .map_err(|_| ClientError::Timeout)??;
        decode_response::<R>(buf, correlation, version)
    }
}

/// `req` at `version` as a length-prefixed request frame (the request
/// header with `client_id` and `correlation`, then the body).
pub fn encode_frame<R: Request>(
    client_id: &str,
    correlation: i32,
    req: R,
    version: i16,
) -> Result<BytesMut, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut frame = BytesMut::new();
    frame.put_u32(0); // length, filled in below
    header
        .encode(&mut frame, R::header_version(version))
        .and_then(|_| req.encode(&mut frame, version))
        .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Reads one length-prefixed response frame.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Bytes, ClientError> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_RESPONSE {
        return Err(ClientError::Protocol(format!(
            "response of {len} bytes is too large"
        )));
    }
    // Read into spare capacity: zeroing a megabyte first cost the bench's
    // consumer as much as a copy of it.
    let mut buf = BytesMut::with_capacity(len);
    let mut frame = (&mut *stream).take(len as u64);
    while buf.len() < len {
        if frame.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(buf.freeze())
}

/// Checks the correlation id, skips the response header and decodes the body.
fn decode_response<R: Request>(
    mut buf: Bytes,
    correlation: i32,
    version: i16,
) -> Result<R::Response, ClientError> {
    if buf.len() < 4 {
        return Err(ClientError::Protocol(
            "response shorter than its header".into(),
        ));
    }
    let got = buf.get_i32();
    if got != correlation {
        return Err(ClientError::Protocol(format!(
            "correlation id {got} does not match request {correlation}"
        )));
    }
    // Flexible response headers carry tagged fields after the correlation id.
    if <R::Response as HeaderVersion>::header_version(version) >= 1 {
        skip_tagged_fields(&mut buf)?;
    }
    crate::bounded::decode_message(buf, version)
        .map_err(|e| ClientError::Protocol(format!("cannot decode response: {e}")))
}

fn read_uvarint(buf: &mut Bytes) -> Result<u64, ClientError> {
    let mut v = 0u64;
    for i in 0..10 {
        if !buf.has_remaining() {
            break;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ClientError::Protocol(
        "bad varint in response header".into(),
    ))
}

fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), ClientError> {
    let n = read_uvarint(buf)?;
    for _ in 0..n {
        let _tag = read_uvarint(buf)?;
        let len = read_uvarint(buf)? as usize;
        if buf.remaining() < len {
            return Err(ClientError::Protocol("truncated tagged field".into()));
        }
        buf.advance(len);
    }
    Ok(())
}

impl KafkaClient {
    /// Sends a request the broker will not answer (Produce with acks=0).
    pub async fn send_no_response<R: Request>(
        &mut self,
        req: R,
        version: i16,
    ) -> Result<(), ClientError> {
        let (frame, _) = self.frame(req, version)?;
        self.stream.write_all(&frame).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_is_read_whole_across_reads_and_never_past_its_end() {
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            for _ in 0..2 {
                tx.write_all(&(body.len() as u32).to_be_bytes()).await?;
                // In pieces smaller than the frame: the reader waits for all.
                for part in body.chunks(100) {
                    tx.write_all(part).await?;
                }
            }
            tx.write_all(&8u32.to_be_bytes()).await?;
            tx.write_all(b"half").await // then the stream ends
        });
        let expected: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for _ in 0..2 {
            assert_eq!(read_frame(&mut rx).await.unwrap(), expected);
        }
        writer.await.unwrap().unwrap();
        let err = read_frame(&mut rx).await.unwrap_err();
        assert!(err.to_string().contains("end of file"), "{err}");
    }
}
