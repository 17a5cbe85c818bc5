//! Running a broker: `strata dev` (single node, embedded metadata store
//! under the data directory, no external service) and `strata broker`
//! (cluster member on etcd). Both run the same broker; only the metadata
//! store differs.

use crate::http::{self, HttpState};
use crate::settings::Settings;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use strata_broker::BrokerBuilder;
use strata_kafka::{Ctx, ServerLimits};
use strata_meta::{EmbeddedStore, EtcdOptions, EtcdStore, MetadataStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `store` answering every request `ms` milliseconds late (none for 0).
fn with_latency(
    store: Arc<dyn object_store::ObjectStore>,
    ms: u64,
) -> Arc<dyn object_store::ObjectStore> {
    if ms == 0 {
        return store;
    }
    tracing::warn!(
        object_store_latency_ms = ms,
        "every object store request is delayed (object_store_latency_ms)"
    );
    let wait = std::time::Duration::from_millis(ms);
    Arc::new(object_store::throttle::ThrottledStore::new(
        store,
        object_store::throttle::ThrottleConfig {
            wait_get_per_call: wait,
            wait_put_per_call: wait,
            wait_delete_per_call: wait,
            wait_list_per_call: wait,
            wait_list_with_delimiter_per_call: wait,
            ..Default::default()
        },
    ))
}

/// The cold tier's object store and key prefix, from `--object-store`.
fn open_object_store(
    url: &str,
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn object_store::ObjectStore>, String)> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            bail!("object store URL {url:?} must be file:///absolute/path");
        }
        std::fs::create_dir_all(path).with_context(|| format!("cannot create {path}"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .with_context(|| format!("cannot use {path} as an object store"))?;
        return Ok((Arc::new(fs), String::new()));
    }
    if url.starts_with("memory://") {
        return Ok((
            Arc::new(object_store::memory::InMemory::new()),
            String::new(),
        ));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        // Endpoint, region and credentials come from the standard AWS
        // variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
        // AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true for plain HTTP).
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("object store URL {url:?} names no bucket");
        }
        use object_store::aws::AmazonS3ConfigKey as K;
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Config-file (or STRATA_AWS_*) values take precedence over AWS_*.
        for (key, value) in [
            (K::Endpoint, settings.aws_endpoint_url.clone()),
            (K::Region, settings.aws_region.clone()),
            (K::AccessKeyId, settings.aws_access_key_id.clone()),
            (K::SecretAccessKey, settings.aws_secret_access_key.clone()),
        ] {
            if let Some(v) = value {
                b = b.with_config(key, v);
            }
        }
        if let Some(allow) = settings.aws_allow_http {
            b = b.with_allow_http(allow);
        }
        let s3 = b
            .build()
            .with_context(|| format!("cannot configure S3 for {url}"))?;
        return Ok((Arc::new(s3), prefix.trim_matches('/').to_string()));
    }
    bail!("object store URL {url:?} must start with file:///, s3:// or memory://")
}

/// Splits an advertised `HOST:PORT`.
fn host_port(s: &str) -> anyhow::Result<(String, i32)> {
    let (h, p) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not HOST:PORT"))?;
    let port: i32 = p.parse().with_context(|| format!("bad port in {s:?}"))?;
    Ok((h.trim_matches(|c| c == '[' || c == ']').to_string(), port))
}

fn advertised(settings: &Settings, bound: SocketAddr) -> anyhow::Result<(String, i32)> {
    match &settings.advertise {
        Some(a) => host_port(a),
        None => {
            let host = if bound.ip().is_unspecified() {
                "localhost".to_string()
            } else {
                bound.ip().to_string()
            };
            Ok((host, i32::from(bound.port())))
        }
    }
}

/// `strata dev`.
pub async fn dev(settings: Settings) -> anyhow::Result<()> {
    let meta: Arc<dyn MetadataStore> = Arc::new(
        EmbeddedStore::open(&settings.data_dir.join("meta"))
            .context("cannot open the embedded metadata store")?,
    );
    run(settings, meta).await
}

/// `strata broker`: connects to etcd, retrying with bounded backoff while it
/// is unreachable (each failure logged), until SIGTERM.
pub async fn cluster(settings: Settings) -> anyhow::Result<()> {
    let endpoints: Vec<String> = settings
        .etcd
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        bail!("strata broker needs etcd endpoints: --etcd URL[,URL...], `etcd` in the config file, or STRATA_ETCD");
    }
    let mut delay = Duration::from_millis(200);
    let store = loop {
        match EtcdStore::connect(&endpoints, EtcdOptions::default()).await {
            Ok(s) => match s.get("/").await {
                Ok(_) => break s,
                Err(e) => tracing::warn!(error = %e, "etcd not ready; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot reach etcd; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_for_signal() => bail!("interrupted while waiting for etcd"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    run(settings, Arc::new(store)).await
}

async fn run(settings: Settings, meta: Arc<dyn MetadataStore>) -> anyhow::Result<()> {
    let object_store_url = settings.object_store.clone().unwrap_or_else(|| {
        let abs = std::path::absolute(&settings.data_dir).unwrap_or(settings.data_dir.clone());
        format!("file://{}", abs.join("objects").display())
    });
    let (store, prefix) = open_object_store(&object_store_url, &settings)?;
    tracing::info!(object_store = %object_store_url, "cold tier");
    let store = with_latency(store, settings.object_store_latency_ms);

    // Bind first: the broker registers the address it really listens on.
    let kafka = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let kafka_addr = kafka.local_addr()?;
    let http_listener = TcpListener::bind(&settings.http)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http))?;
    let http_addr = http_listener.local_addr()?;
    let (host, port) = advertised(&settings, kafka_addr)?;
    let grpc = match &settings.grpc {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let bound = l.local_addr()?;
            let advertised = match &settings.advertise_grpc {
                Some(a) => a.clone(),
                None if bound.ip().is_unspecified() => format!("{host}:{}", bound.port()),
                None => bound.to_string(),
            };
            Some((l, bound, advertised))
        }
        None => None,
    };

    let mut builder = BrokerBuilder::new(settings.data_dir.join("logs"));
    if let Some(budget) = crate::settings::log_cache_budget(settings.log_cache_bytes) {
        let behind = strata_log::WriteBehind::start(budget)
            .context("cannot start the log write-behind thread")?;
        tracing::info!(
            log_cache_bytes = budget,
            "recent appends kept in the page cache"
        );
        builder = builder.write_behind(behind);
    }
    let broker = builder
        .settings(settings.broker_settings())
        .cluster(settings.cluster.clone())
        .metadata_store(meta)
        .advertise(host.clone(), port)
        .endpoints(
            grpc.as_ref().map(|g| g.2.clone()),
            Some(http_addr.to_string()),
        )
        .cold_tier(store, prefix, settings.cold_cache_bytes)
        .build()
        .await
        .context("cannot start the broker")?;
    let ctx = Arc::new(Ctx {
        broker: broker.clone(),
        advertised_host: host,
        advertised_port: port,
        cluster_id: broker.cluster_id().to_string(),
    });

    let shutdown = CancellationToken::new();
    let http_state = Arc::new(HttpState {
        broker: broker.clone(),
        ready: Default::default(),
    });
    let http_task = {
        let s = shutdown.clone();
        let app = http::router(http_state.clone());
        tokio::spawn(async move {
            let r = axum::serve(http_listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "http server failed");
            }
        })
    };
    let grpc_shutdown = CancellationToken::new();
    let grpc_task = grpc.map(|(listener, bound, _)| {
        let s = grpc_shutdown.clone();
        let service =
            strata_broker::replication::service::ReplicationService::server(broker.clone());
        let markers = strata_broker::txn::markers::TxnMarkersService::server(broker.clone());
        tracing::info!("grpc listening on {bound}");
        tokio::spawn(async move {
            // Replication sends small messages both ways (records one
            // way, positions the other), which Nagle's algorithm would
            // hold back behind an unacknowledged one. The builder's
            // `tcp_nodelay` does not reach sockets accepted from a
            // listener passed in (tonic ignores it with
            // `serve_with_incoming*`): `TcpIncoming` sets it on each
            // accepted socket.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let r = tonic::transport::Server::builder()
                .initial_stream_window_size(8 << 20)
                .initial_connection_window_size(32 << 20)
                .add_service(service)
                .add_service(markers)
                .serve_with_incoming_shutdown(incoming, async move { s.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "grpc server failed");
            }
        })
    });
    let background = tokio::spawn(broker.clone().run_background());
    let limits = ServerLimits {
        max_connections: settings.max_connections,
        max_request_bytes: settings.max_request_bytes,
        shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
        idle_timeout: (settings.connections_max_idle_ms > 0)
            .then(|| Duration::from_millis(settings.connections_max_idle_ms)),
        ..ServerLimits::default()
    };
    let kafka_task = tokio::spawn(strata_kafka::serve(kafka, ctx, limits, shutdown.clone()));
    http_state.ready.store(true, Ordering::Release);
    // Tests and scripts read these lines to find the ports (DESIGN §9).
    tracing::info!("kafka listening on {kafka_addr}");
    tracing::info!("http listening on {http_addr}");

    wait_for_signal().await;
    tracing::info!("shutting down");
    http_state.ready.store(false, Ordering::Release);
    shutdown.cancel();
    if let Err(e) = kafka_task.await {
        tracing::error!(error = %e, "kafka listener task failed");
    }
    // Lets followers catch up, flushes every replica and revokes the
    // session lease (so leadership moves at once); gRPC stays up meanwhile.
    broker
        .shutdown_with_grace(Duration::from_millis(settings.shutdown_grace_ms / 2))
        .await;
    grpc_shutdown.cancel();
    if let Some(t) = grpc_task {
        let _ = t.await;
    }
    let _ = background.await;
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{path::Path, ObjectStoreExt};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn object_store_latency_delays_every_request_and_zero_none() {
        let plain: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        assert!(Arc::ptr_eq(&with_latency(plain.clone(), 0), &plain));
        let slow = with_latency(plain.clone(), 40);
        let key = Path::from("k");
        let t = Instant::now();
        slow.put(&key, bytes::Bytes::from_static(b"v").into())
            .await
            .unwrap();
        let got = slow.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"v");
        // A lower bound only: each request sleeps at least its latency.
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
        // The same store underneath.
        assert!(plain.head(&key).await.is_ok());
    }
}
