//! The metadata-store conformance suite against a real etcd (Debian's
//! `etcd-server`, installed by `scripts/test.sh`), started here on free
//! loopback ports with a temporary data directory and fast elections.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_meta::{conformance, EtcdOptions, EtcdStore, MetadataStore};

/// An etcd process that is killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_etcd() -> (Etcd, EtcdStore) {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(&bin)
        .args(["--name", "conformance", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("conformance={peer_url}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin} (install etcd-server): {e}"));
    let etcd = Etcd {
        child,
        endpoint: endpoint.clone(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(store) =
            EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), EtcdOptions::default()).await
        {
            if store.get("/ping").await.is_ok() {
                return (etcd, store);
            }
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conformance() {
    let (_etcd, store) = start_etcd().await;
    conformance::run_all(&store).await;
    conformance::concurrent_create_if_absent(Arc::new(store)).await;
}
