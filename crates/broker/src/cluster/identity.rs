//! Which cluster a data directory's replicas belong to.
//!
//! A broker started against another cluster's metadata (another etcd, or
//! a mistyped `--cluster` name, which finds none and makes a new cluster)
//! would take its directories for that cluster's: a topic of the same name
//! empties them (`partition::incarnation`), and the rest are removed as
//! strays (`strays`). As Kafka's `meta.properties` does, the data
//! directory records its cluster's id (`cluster.id`, written at the first
//! start), and a broker whose metadata store holds another cluster, or
//! none, refuses to start, naming both.
//!
//! A data directory without the file (from before it existed, or new)
//! takes the metadata store's cluster.

use crate::error::BrokerError;
use crate::keys::Keys;
use std::path::Path;
use strata_meta::{Compare, MetadataStore, Op, Txn};

/// The file, at the data directory's root.
pub(crate) const FILE: &str = "cluster.id";

fn read(dir: &Path) -> Result<Option<String>, BrokerError> {
    match std::fs::read_to_string(dir.join(FILE)) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        // Torn at its first write: written again below.
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::Storage(format!(
            "cannot read {}: {e}",
            dir.join(FILE).display()
        ))),
    }
}

/// The cluster's id, which `dir` then records: the metadata store's
/// (created there if the store holds none and `dir` records none), or an
/// error if `dir` records another, or one the store does not hold.
pub(crate) async fn bind(
    dir: &Path,
    meta: &dyn MetadataStore,
    keys: &Keys,
) -> Result<String, BrokerError> {
    let key = format!("{}cluster_id", keys.root());
    let recorded = read(dir)?;
    if recorded.is_none() {
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        meta.txn(
            Txn::new()
                .when(Compare::CreateRevision(key.clone(), 0))
                .then(Op::put(key.clone(), fresh)),
        )
        .await?;
    }
    let stored = meta
        .get(&key)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    let mismatch = |what: String| {
        BrokerError::InvalidConfig(format!(
            "data directory {} holds replicas of cluster {}, but the metadata store {what}: \
             point the broker at its cluster's metadata (--etcd, --cluster) or at an empty \
             data directory",
            dir.display(),
            recorded.as_deref().unwrap_or_default(),
        ))
    };
    match (stored, &recorded) {
        (None, None) => Err(BrokerError::Metadata("cluster id vanished".into())),
        (None, Some(_)) => Err(mismatch(format!("has no cluster under {}", keys.root()))),
        (Some(s), Some(r)) if &s != r => {
            Err(mismatch(format!("under {} is cluster {s}", keys.root())))
        }
        (Some(s), Some(_)) => Ok(s),
        (Some(s), None) => {
            crate::fsutil::write_whole(&dir.join(FILE), format!("{s}\n").as_bytes()).map_err(
                |e| BrokerError::Storage(format!("cannot write {}: {e}", dir.join(FILE).display())),
            )?;
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_meta::MemStore;

    #[tokio::test]
    async fn a_data_directory_stays_with_its_cluster() {
        let d = tempfile::tempdir().unwrap();
        let (store, keys) = (MemStore::new(), Keys::new("c"));
        let id = bind(d.path(), &store, &keys).await.unwrap();
        assert_eq!(read(d.path()).unwrap().as_deref(), Some(id.as_str()));
        assert_eq!(bind(d.path(), &store, &keys).await.unwrap(), id);

        // Another cluster name in the same store, or another store: none.
        for (store, keys) in [
            (&store, Keys::new("typo")),
            (&MemStore::new(), keys.clone()),
        ] {
            let e = bind(d.path(), store, &keys).await.unwrap_err();
            assert!(
                matches!(&e, BrokerError::InvalidConfig(m) if m.contains("has no cluster")),
                "{e}"
            );
        }
        // A store holding another cluster.
        let other = MemStore::new();
        bind(tempfile::tempdir().unwrap().path(), &other, &keys)
            .await
            .unwrap();
        let e = bind(d.path(), &other, &keys).await.unwrap_err();
        assert!(
            matches!(&e, BrokerError::InvalidConfig(m) if m.contains("is cluster")),
            "{e}"
        );
        // Nothing was created for the refused starts.
        let typo = format!("{}cluster_id", Keys::new("typo").root());
        assert!(store.get(&typo).await.unwrap().is_none());
    }
}
