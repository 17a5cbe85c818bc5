//! The Kafka listener: one task per connection under a connection limit.
//!
//! Framing is a 4-byte big-endian length then the request. Requests on one
//! connection are handled concurrently but answered strictly in order (Kafka
//! clients rely on it), with a bound on how many are in flight. A malformed
//! frame (too short, too long, undecodable) closes only that connection, with
//! the reason logged; an unknown or unsupported API gets an error response.

use crate::handlers::{self, Ctx};
use bytes::{BufMut, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
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
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight: 32,
            shutdown_grace: Duration::from_secs(10),
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
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            Some(resp) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(body) = resp {
                    write_frame(&mut out, body);
                    // Keep writing while more answers are already done.
                    wr.write_all(&out).await?;
                    out.clear();
                }
                if closing && in_flight.is_empty() {
                    return Ok(());
                }
            }
            frame = frames.next(), if !closing && in_flight.len() < limits.max_in_flight => {
                match frame {
                    None => closing = true,
                    Some(Err(e)) => {
                        ctx.broker.metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                        return Err(ConnectionError::Malformed(e.to_string()));
                    }
                    Some(Ok(frame)) => {
                        ctx.broker.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
                        match handlers::prepare(ctx.clone(), frame.freeze(), peer) {
                            Ok(fut) => in_flight.push_back(fut),
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
            // Closing with nothing left in flight.
            else => return Ok(()),
        }
    }
}

fn write_frame(out: &mut BytesMut, body: BytesMut) {
    out.reserve(4 + body.len());
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
}
