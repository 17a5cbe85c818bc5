//! [`EtcdStore`]: the metadata store port over a real etcd (v3 API), for the
//! cluster profile. Revisions, compares, leases and watches map one to one
//! onto etcd's, which is what the port was modelled on.

use crate::types::{
    Compare, KeyValue, LeaseId, MetaError, MetadataStore, Op, Range, Txn, TxnResponse, WatchEvent,
    WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as etcd;
use std::time::Duration;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    client: etcd::Client,
}

fn unavailable(what: &str, e: etcd::Error) -> MetaError {
    MetaError::Unavailable(format!("etcd {what} failed: {e}"))
}

fn convert(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn header_revision(h: Option<&etcd::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

/// etcd reports a missing lease as "requested lease not found" (gRPC) or
/// "lease keep alive error: lease not found" (keep-alive stream).
fn is_lease_not_found(e: &etcd::Error) -> bool {
    e.to_string().contains("lease not found")
}

/// The request never reached a server: the balanced channel picked an
/// endpoint that refuses connections (e.g. a dead member of a 3-member
/// cluster). Any request, a transaction included, may then be retried.
fn never_sent(e: &etcd::Error) -> bool {
    let s = e.to_string();
    s.contains("tcp connect error") || s.contains("Connection refused")
}

/// Attempts at a request whose connection could not be made; the channel
/// balances over every endpoint, so another attempt usually reaches a live one.
const CONNECT_ATTEMPTS: u32 = 6;

/// Runs `f` again (bounded, with a short backoff) while it fails before
/// reaching a server.
async fn retry_unsent<T, F, Fut>(mut f: F) -> Result<T, etcd::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd::Error>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if never_sent(&e) && attempt + 1 < CONNECT_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            r => return r,
        }
    }
}

/// The largest response a store call takes (etcd's own send limit).
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

impl EtcdStore {
    /// Connects to any of `endpoints` (`http://host:port`).
    pub async fn connect(endpoints: &[String], opts: EtcdOptions) -> Result<Self, MetaError> {
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = etcd::Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| unavailable(&format!("connect to {}", endpoints.join(",")), e))?;
        Ok(Self { client })
    }

    /// The KV client, taking responses of any size etcd sends. gRPC's
    /// default cap is 4 MiB, and a broker's view is one range of the whole
    /// cluster root (partition states and leaders, committed offsets, …):
    /// past 4 MiB, a cluster of some thousands of partitions, every resync
    /// failed and no broker could start. etcd itself sends up to 2 GiB.
    fn kv(&self) -> etcd::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn compare(c: &Compare) -> etcd::Compare {
        use etcd::CompareOp::Equal;
        match c {
            Compare::ModRevision(k, r) => etcd::Compare::mod_revision(k.as_str(), Equal, *r),
            Compare::CreateRevision(k, r) => etcd::Compare::create_revision(k.as_str(), Equal, *r),
            Compare::Value(k, v) => etcd::Compare::value(k.as_str(), Equal, v.to_vec()),
        }
    }

    fn op(o: &Op) -> etcd::TxnOp {
        match o {
            Op::Put { key, value, lease } => etcd::TxnOp::put(
                key.as_str(),
                value.to_vec(),
                lease.map(|l| etcd::PutOptions::new().with_lease(l)),
            ),
            Op::Delete { key } => etcd::TxnOp::delete(key.as_str(), None),
            Op::DeletePrefix { prefix } => etcd::TxnOp::delete(
                prefix.as_str(),
                Some(etcd::DeleteOptions::new().with_prefix()),
            ),
        }
    }
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        let resp = retry_unsent(|| async { self.kv().get(key, None).await })
            .await
            .map_err(|e| unavailable("get", e))?;
        Ok(resp.kvs().first().map(convert))
    }

    async fn range(&self, prefix: &str) -> Result<Range, MetaError> {
        let resp = retry_unsent(|| async {
            self.kv()
                .get(prefix, Some(etcd::GetOptions::new().with_prefix()))
                .await
        })
        .await
        .map_err(|e| unavailable("range", e))?;
        Ok(Range {
            kvs: resp.kvs().iter().map(convert).collect(),
            revision: header_revision(resp.header()),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError> {
        // Refused here as the server would (its default limit), with an
        // error that says so rather than a gRPC status.
        txn.check_size()?;
        let t = etcd::Txn::new()
            .when(txn.compares.iter().map(Self::compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(Self::op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(Self::op).collect::<Vec<_>>());
        let resp = retry_unsent(|| async { self.kv().txn(t.clone()).await })
            .await
            .map_err(|e| {
                if is_lease_not_found(&e) {
                    let lease = txn
                        .success
                        .iter()
                        .chain(txn.failure.iter())
                        .find_map(|o| match o {
                            Op::Put { lease: Some(l), .. } => Some(*l),
                            _ => None,
                        })
                        .unwrap_or(0);
                    MetaError::LeaseNotFound(lease)
                } else {
                    unavailable("txn", e)
                }
            })?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header()),
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        // etcd leases have whole-second TTLs.
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = retry_unsent(|| async { self.client.lease_client().grant(secs, None).await })
            .await
            .map_err(|e| unavailable("lease grant", e))?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        let not_found_or = |e: etcd::Error| {
            if is_lease_not_found(&e) {
                MetaError::LeaseNotFound(lease)
            } else {
                unavailable("lease keep-alive", e)
            }
        };
        let (mut keeper, mut stream) =
            retry_unsent(|| async { self.client.lease_client().keep_alive(lease).await })
                .await
                .map_err(not_found_or)?;
        keeper.keep_alive().await.map_err(not_found_or)?;
        match stream.message().await {
            Ok(Some(resp)) if resp.ttl() > 0 => Ok(()),
            Ok(_) => Err(MetaError::LeaseNotFound(lease)),
            Err(e) => Err(not_found_or(e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), MetaError> {
        match retry_unsent(|| async { self.client.lease_client().revoke(lease).await }).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(MetaError::LeaseNotFound(lease)),
            Err(e) => Err(unavailable("lease revoke", e)),
        }
    }

    async fn compact(&self, revision: i64) -> Result<(), MetaError> {
        match retry_unsent(|| async { self.kv().compact(revision, None).await }).await {
            Ok(_) => Ok(()),
            // "mvcc: required revision has been compacted": nothing to do.
            Err(e) if e.to_string().contains("has been compacted") => Ok(()),
            Err(e) if e.to_string().contains("future revision") => {
                Err(MetaError::FutureRevision(revision))
            }
            Err(e) => Err(unavailable("compact", e)),
        }
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<WatchStream, MetaError> {
        let mut opts = etcd::WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let mut stream = retry_unsent(|| async {
            self.client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .watch(prefix, Some(opts.clone()))
                .await
        })
        .await
        .map_err(|e| unavailable("watch", e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = tokio::spawn(async move {
            loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(unavailable("watch", e))).await;
                        return;
                    }
                };
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        MetaError::Compacted {
                            requested: from_revision,
                            oldest: resp.compact_revision(),
                        }
                    } else {
                        MetaError::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            resp.cancel_reason()
                        ))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let event = match ev.event_type() {
                        etcd::EventType::Put => WatchEvent::Put(convert(kv)),
                        etcd::EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            mod_revision: kv.mod_revision(),
                        },
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(WatchStream::new(rx, task))
    }
}
