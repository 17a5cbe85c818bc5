//! Connection lifetime through the real listener: idle connections are
//! closed after `connections.max.idle.ms`, busy ones are not.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use kafka_protocol::messages::ApiVersionsRequest;
use std::time::Duration;
use strata_kafka::client::KafkaClient;
use strata_kafka::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerLimits::default()
    };
    let b = common::start_with(dir.path(), limits).await;

    // Silent, and trickling a frame that never completes: both closed.
    let mut silent = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    trickle
        .write_all(&(100u32 << 20).to_be_bytes())
        .await
        .unwrap();
    // A client sending a request every 100 ms for 1.2 s: kept.
    let mut busy = KafkaClient::connect(&b.addr, "busy").await.unwrap();
    for _ in 0..12 {
        busy.call(ApiVersionsRequest::default(), 3).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = trickle.write_all(&[0]).await;
    }
    for s in [&mut silent, &mut trickle] {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    }
    busy.call(ApiVersionsRequest::default(), 3).await.unwrap();
    b.shutdown().await;
}
