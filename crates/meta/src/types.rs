use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetaError {
    #[error("metadata store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    #[error("revision {requested} was compacted; the oldest available is {oldest}")]
    Compacted { requested: i64, oldest: i64 },
    #[error("watch fell behind and was cancelled; re-read and watch again")]
    WatchLagged,
    #[error("a transaction of {ops} {what} is more than the {MAX_TXN_OPS} a store takes")]
    TooManyOps { ops: usize, what: &'static str },
    #[error(
        "a transaction of {bytes} bytes of keys and values is more than the {MAX_TXN_BYTES} a store takes"
    )]
    TooLarge { bytes: usize },
    #[error("revision {0} is past the store's current revision")]
    FutureRevision(i64),
}

/// The most compares, and the most operations in either branch, one
/// transaction may hold: etcd's default `--max-txn-ops`, which refuses
/// more. Every store refuses more alike, so code tested against the
/// in-process store cannot issue a transaction etcd would refuse; writes
/// of many keys go through [`apply_in_chunks`] or chunk themselves.
pub const MAX_TXN_OPS: usize = 128;

/// The most bytes one transaction may carry, counted by [`Txn::bytes`]
/// (keys, values and [`OP_OVERHEAD`] per compare and operation, both
/// branches). etcd refuses a request past its `--max-request-bytes`
/// (1.5 MiB by default; a request of 1 572 000 bytes of value passes and
/// one of 1 572 864 does not); this leaves a third of that for its
/// framing. Every store refuses more alike, as with [`MAX_TXN_OPS`].
pub const MAX_TXN_BYTES: usize = 1 << 20;

/// What [`Txn::bytes`] counts for a compare or an operation besides its
/// key and value: its protobuf tags, lengths and revision or lease.
pub const OP_OVERHEAD: usize = 16;

/// A lease: keys put with it are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// A stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "bytes_as_vec")]
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the key is bound to (0: none).
    #[serde(default)]
    pub lease: LeaseId,
}

mod bytes_as_vec {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(Vec::<u8>::deserialize(d)?))
    }
}

/// A guard on one key; all compares of a transaction must hold for its
/// success branch to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this (0: the key is absent).
    ModRevision(String, i64),
    /// The key's `create_revision` equals this (0: the key is absent).
    CreateRevision(String, i64),
    /// The key exists with exactly this value.
    Value(String, Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "bytes_as_vec")]
        value: Bytes,
        /// Bind the key to this lease.
        #[serde(default)]
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Bytes>, lease: LeaseId) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        Self::DeletePrefix {
            prefix: prefix.into(),
        }
    }

    /// Its key and value's bytes, without [`OP_OVERHEAD`].
    fn bytes(&self) -> usize {
        match self {
            Self::Put { key, value, .. } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
            Self::DeletePrefix { prefix } => prefix.len(),
        }
    }
}

impl Compare {
    /// Its key and value's bytes, without [`OP_OVERHEAD`].
    fn bytes(&self) -> usize {
        match self {
            Self::ModRevision(k, _) | Self::CreateRevision(k, _) => k.len(),
            Self::Value(k, v) => k.len() + v.len(),
        }
    }
}

/// Splits `items` in order into runs that fit one transaction: at most
/// [`MAX_TXN_OPS`] items (each adds one entry to each list it uses) and
/// [`MAX_TXN_BYTES`] by `bytes`. An item too large alone is a run of its
/// own, which the store refuses.
fn packed<T>(items: Vec<T>, bytes: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let b = bytes(&item);
        match runs.last_mut() {
            Some(run) if run.len() < MAX_TXN_OPS && used + b <= MAX_TXN_BYTES => {
                used += b;
                run.push(item);
            }
            _ => {
                used = b;
                runs.push(vec![item]);
            }
        }
    }
    runs
}

/// Guarded operations (each an operation and the compare that must hold
/// for it) as transactions within the bounds, in order: each applies all
/// of its operations only if all of its compares hold.
pub fn guarded_chunks(pairs: Vec<(Compare, Op)>) -> Vec<Txn> {
    let size = |(c, op): &(Compare, Op)| c.bytes() + op.bytes() + 2 * OP_OVERHEAD;
    packed(pairs, size)
        .into_iter()
        .map(|run| {
            let (compares, success) = run.into_iter().unzip();
            Txn {
                compares,
                success,
                failure: Vec::new(),
            }
        })
        .collect()
}

/// Keys under a prefix and the store revision they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> i64 {
        match self {
            Self::Put(kv) => kv.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Events under a prefix in revision order. Ends (`None`) when the store
/// goes away; an `Err` ends it too (re-read with `range` and watch again).
pub struct WatchStream {
    rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, MetaError>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchStream {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, MetaError>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self { rx, task }
    }

    pub async fn next(&mut self) -> Option<Result<WatchEvent, MetaError>> {
        self.rx.recv().await
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An etcd-style transaction: if every compare holds, apply `success`,
/// otherwise apply `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }
    pub fn or_else(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }

    /// The bytes this transaction carries, as [`MAX_TXN_BYTES`] bounds.
    pub fn bytes(&self) -> usize {
        let compares = self.compares.iter().map(Compare::bytes);
        let ops = self.success.iter().chain(&self.failure).map(Op::bytes);
        compares.chain(ops).map(|b| b + OP_OVERHEAD).sum()
    }

    /// Refuses a transaction larger than [`MAX_TXN_OPS`] or
    /// [`MAX_TXN_BYTES`] allows.
    pub fn check_size(&self) -> Result<(), MetaError> {
        for (ops, what) in [
            (self.compares.len(), "compares"),
            (self.success.len(), "operations on success"),
            (self.failure.len(), "operations on failure"),
        ] {
            if ops > MAX_TXN_OPS {
                return Err(MetaError::TooManyOps { ops, what });
            }
        }
        match self.bytes() {
            bytes if bytes > MAX_TXN_BYTES => Err(MetaError::TooLarge { bytes }),
            _ => Ok(()),
        }
    }
}

/// Applies `ops` in order, in unconditional transactions of at most
/// [`MAX_TXN_OPS`] operations and [`MAX_TXN_BYTES`] each: atomic within a
/// chunk, not across chunks (a failure leaves the chunks before it
/// applied). For writes whose parts stand alone, such as committed
/// offsets, one key per partition. An operation too large on its own is
/// refused ([`MetaError::TooLarge`]) after the chunks before it. Returns
/// the revision after the last chunk (0 when `ops` is empty).
pub async fn apply_in_chunks(store: &dyn MetadataStore, ops: Vec<Op>) -> Result<i64, MetaError> {
    let mut revision = 0;
    for success in packed(ops, |op| op.bytes() + OP_OVERHEAD) {
        let txn = Txn {
            success,
            ..Txn::default()
        };
        revision = store.txn(txn).await?.revision;
    }
    Ok(revision)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: i64,
}

/// The metadata store port. Keys are full paths (callers add the cluster
/// prefix); `range` returns keys in lexicographic order.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError>;
    /// Keys under `prefix`, in order, with the revision they were read at.
    async fn range(&self, prefix: &str) -> Result<Range, MetaError>;
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: std::time::Duration) -> Result<LeaseId, MetaError>;
    /// Renews a lease; `LeaseNotFound` once it has expired or been revoked.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError>;
    /// Revokes a lease, deleting every key bound to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), MetaError>;
    /// Discards the history of changes before `revision`, as etcd's
    /// compaction does: a watch from an earlier revision then fails with
    /// [`MetaError::Compacted`] (from `watch_prefix` or as its stream's
    /// first item); reads are unchanged. A revision at or below one already
    /// compacted is a no-op; one past the current revision is refused
    /// ([`MetaError::FutureRevision`]).
    async fn compact(&self, revision: i64) -> Result<(), MetaError>;
    /// Changes under `prefix` from `from_revision` on (0: from now).
    async fn watch_prefix(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<WatchStream, MetaError>;

    async fn put(&self, key: &str, value: Bytes) -> Result<i64, MetaError> {
        Ok(self
            .txn(Txn::new().then(Op::put(key, value)))
            .await?
            .revision)
    }

    async fn delete(&self, key: &str) -> Result<i64, MetaError> {
        Ok(self.txn(Txn::new().then(Op::delete(key))).await?.revision)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<i64, MetaError> {
        Ok(self
            .txn(Txn::new().then(Op::delete_prefix(prefix)))
            .await?
            .revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_chunks_fit_both_bounds_in_order() {
        let pair = |i: usize, value: usize| {
            let key = format!("/k/{i:04}");
            (
                Compare::Value(key.clone(), vec![b'v'; value].into()),
                Op::delete(key),
            )
        };
        // Small: split by count.
        let small: Vec<_> = (0..300).map(|i| pair(i, 1)).collect();
        let txns = guarded_chunks(small);
        let sizes: Vec<usize> = txns.iter().map(|t| t.success.len()).collect();
        assert_eq!(sizes, [MAX_TXN_OPS, MAX_TXN_OPS, 300 - 2 * MAX_TXN_OPS]);
        // Large: split by bytes; each passes the store's check.
        let large: Vec<_> = (0..10).map(|i| pair(i, 300 << 10)).collect();
        let txns = guarded_chunks(large);
        assert_eq!(txns.len(), 4);
        assert!(txns.iter().all(|t| t.check_size().is_ok()));
        let keys: Vec<&str> = txns
            .iter()
            .flat_map(|t| &t.success)
            .map(|op| match op {
                Op::Delete { key } => key.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            (0..10).map(|i| format!("/k/{i:04}")).collect::<Vec<_>>()
        );
        assert!(txns.iter().all(|t| t.compares.len() == t.success.len()));
    }
}
