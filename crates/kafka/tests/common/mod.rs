//! A broker behind the real Kafka listener on a loopback port, with its
//! background work running as in `strata dev` (the metadata session's
//! renewals among it: without them the broker refuses produces once its
//! session lapses, a few seconds in), for the integration tests.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::sync::Arc;
use strata_broker::config::BrokerSettings;
use strata_broker::BrokerBuilder;
use strata_kafka::{Ctx, ServerLimits};
use strata_meta::{EmbeddedStore, MetadataStore};
use tokio_util::sync::CancellationToken;

/// A broker serving Kafka clients until [`Running::shutdown`].
pub struct Running {
    pub addr: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    background: tokio::task::JoinHandle<()>,
    pub broker: Arc<strata_broker::Broker>,
}

pub async fn start(dir: &Path) -> Running {
    start_with(dir, ServerLimits::default()).await
}

pub async fn start_with(dir: &Path, limits: ServerLimits) -> Running {
    start_full(dir, limits, BrokerSettings::default()).await
}

/// A broker whose groups rebalance as soon as their members have joined
/// (no initial rebalance delay), for tests that join groups.
pub async fn start_groups_at_once(dir: &Path) -> Running {
    let settings = BrokerSettings {
        group_initial_rebalance_delay_ms: 0,
        ..BrokerSettings::default()
    };
    start_full(dir, ServerLimits::default(), settings).await
}

/// A broker with its embedded metadata store under `dir`, these listener
/// limits and broker settings.
pub async fn start_full(dir: &Path, limits: ServerLimits, settings: BrokerSettings) -> Running {
    let meta: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(&dir.join("meta")).unwrap());
    let broker = BrokerBuilder::new(dir.join("logs"))
        .settings(settings)
        .metadata_store(meta)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = Arc::new(Ctx {
        broker: broker.clone(),
        advertised_host: "127.0.0.1".into(),
        advertised_port: i32::from(addr.port()),
        cluster_id: broker.cluster_id().to_string(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(strata_kafka::serve(listener, ctx, limits, stop.clone()));
    let background = tokio::spawn(broker.clone().run_background());
    Running {
        addr: addr.to_string(),
        stop,
        task,
        background,
        broker,
    }
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.broker.shutdown().await;
        self.background.await.unwrap();
    }
}
