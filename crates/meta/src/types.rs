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
}

/// A stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "bytes_as_vec")]
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
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
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
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
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError>;
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError>;

    async fn put(&self, key: &str, value: Bytes) -> Result<i64, MetaError> {
        let r = self
            .txn(Txn::new().then(Op::Put {
                key: key.to_string(),
                value,
            }))
            .await?;
        Ok(r.revision)
    }

    async fn delete(&self, key: &str) -> Result<i64, MetaError> {
        let r = self
            .txn(Txn::new().then(Op::Delete {
                key: key.to_string(),
            }))
            .await?;
        Ok(r.revision)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<i64, MetaError> {
        let r = self
            .txn(Txn::new().then(Op::DeletePrefix {
                prefix: prefix.to_string(),
            }))
            .await?;
        Ok(r.revision)
    }
}
