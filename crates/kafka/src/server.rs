//! The Kafka listener: one task per connection under a connection limit.
//!
//! Framing is a 4-byte big-endian length then the request. Requests on one
//! connection are handled concurrently but answered strictly in order (Kafka
//! clients rely on it), with a bound on how many are in flight. A malformed
//! frame (too short, too long, undecodable) closes only that connection, with
//! the reason logged; an unknown or unsupported API gets an error response.

use crate::handlers::{self, Ctx};
use bytes::Buf;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Listener limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `max.connections`
    pub max_connections: usize,
    /// `socket.request.max.bytes`
    pub max_request_bytes: usize,
    /// Requests handled at once per connection.
    pub max_in_flight: usize,
    /// Request bytes handled at once per connection: no new request is read
    /// while the ones in flight hold this much (one always may be), so a
    /// client pipelining large produce requests into a slow disk costs
    /// bounded memory.
    pub max_in_flight_bytes: usize,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// `connections.max.idle.ms`: a connection with nothing in flight that
    /// completes no request for this long is closed (so silent or
    /// trickling clients do not hold connection slots and buffers); None
    /// never closes one.
    pub idle_timeout: Option<Duration>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight: 32,
            max_in_flight_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// Accepts connections until `shutdown` fires, then waits (bounded by the
/// grace period) for open connections to finish their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let ctx = ctx.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("conn", %peer);
        tasks.spawn(
            async move {
                let m = &ctx.broker.metrics;
                m.connections_total.fetch_add(1, Ordering::Relaxed);
                m.connections_active.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = connection(stream, peer, &ctx, &limits, &shutdown).await {
                    tracing::info!(reason = %e, "closing connection");
                }
                m.connections_active.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(span),
        );
    }
    tasks.close();
    if tokio::time::timeout(limits.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    limits: &ServerLimits,
    shutdown: &CancellationToken,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(limits.max_request_bytes)
        .new_codec();
    let mut frames = FramedRead::new(rd, codec);
    let mut in_flight = FuturesOrdered::new();
    // Request bytes in flight; each answer carries its request's size back.
    let mut in_flight_bytes = 0usize;
    let mut closing = false;
    // Reset by every request read and every response written; fires only
    // while nothing is in flight.
    let idle_for = limits.idle_timeout.unwrap_or(Duration::MAX);
    let idle = tokio::time::sleep(idle_for.min(FAR));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            Some((size, resp)) = in_flight.next(), if !in_flight.is_empty() => {
                idle.as_mut().reset(tokio::time::Instant::now() + idle_for.min(FAR));
                in_flight_bytes = in_flight_bytes.saturating_sub(size);
                if let Some(chunks) = resp {
                    // Length prefix and body chunks in vectored writes: a
                    // fetch response's record sets are not copied again.
                    let mut frame = Frame::new(chunks);
                    wr.write_all_buf(&mut frame).await?;
                }
                if closing && in_flight.is_empty() {
                    return Ok(());
                }
            }
            frame = frames.next(), if !closing
                && in_flight.len() < limits.max_in_flight
                && (in_flight.is_empty() || in_flight_bytes < limits.max_in_flight_bytes) => {
                match frame {
                    None => closing = true,
                    Some(Err(e)) => {
                        ctx.broker.metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                        return Err(ConnectionError::Malformed(e.to_string()));
                    }
                    Some(Ok(frame)) => {
                        idle.as_mut().reset(tokio::time::Instant::now() + idle_for.min(FAR));
                        ctx.broker.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
                        let size = frame.len();
                        // Timed from here to its response being ready (not
                        // written: that waits for the requests before it).
                        let arrived = Instant::now();
                        match handlers::prepare(ctx.clone(), frame.freeze(), peer) {
                            Ok((api, fut)) => {
                                let ctx = ctx.clone();
                                in_flight.push_back(fut.map(move |resp| {
                                    ctx.broker.metrics.request_times.record(api, arrived.elapsed());
                                    (size, resp)
                                }));
                                in_flight_bytes += size;
                            }
                            Err(e) => {
                                ctx.broker.metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                                return Err(ConnectionError::Malformed(e));
                            }
                        }
                    }
                }
                if closing && in_flight.is_empty() {
                    return Ok(());
                }
            }
            _ = shutdown.cancelled(), if !closing => closing = true,
            _ = &mut idle, if !closing && in_flight.is_empty() && limits.idle_timeout.is_some() => {
                tracing::info!(idle_ms = idle_for.as_millis() as u64, "closing an idle connection (connections_max_idle_ms)");
                return Ok(());
            }
            // Closing with nothing left in flight.
            else => return Ok(()),
        }
    }
}

/// A deadline far enough to mean never, near enough for `Instant` to add.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One response frame: the length prefix, then the body's chunks, as a
/// [`Buf`] that hands out several chunks per vectored write.
struct Frame {
    parts: std::collections::VecDeque<bytes::Bytes>,
    remaining: usize,
}

impl Frame {
    fn new(chunks: Vec<bytes::Bytes>) -> Self {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        let mut parts = std::collections::VecDeque::with_capacity(chunks.len() + 1);
        parts.push_back(bytes::Bytes::copy_from_slice(&(len as u32).to_be_bytes()));
        parts.extend(chunks.into_iter().filter(|c| !c.is_empty()));
        Self {
            parts,
            remaining: len + 4,
        }
    }
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_length_then_the_chunks_whatever_the_advances() {
        let chunks = vec![
            bytes::Bytes::from_static(b"ab"),
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"cdef"),
        ];
        for step in 1..=10 {
            let mut f = Frame::new(chunks.clone());
            let mut out = Vec::new();
            while f.has_remaining() {
                let c = f.chunk();
                let take = c.len().min(step);
                out.extend_from_slice(&c[..take]);
                f.advance(take);
            }
            assert_eq!(out, b"\0\0\0\x06abcdef", "step {step}");
        }
        let f = Frame::new(chunks);
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(f.chunks_vectored(&mut slices), 3);
    }
}
