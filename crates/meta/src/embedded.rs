//! The embedded metadata store of the single-node profile.
//!
//! Layout under its directory:
//! - `snapshot.json`: the whole state at some revision (written to a temp
//!   file, fsync'd, renamed, directory fsync'd);
//! - `wal.log`: records `[len u32][crc32c u32][json {revision, ops}]` of every
//!   mutating transaction after the snapshot, fsync'd before the transaction
//!   is acknowledged.
//!
//! On open the snapshot is loaded and the WAL replayed up to its last intact
//! record (a torn tail from a crash is truncated). Records at or below the
//! snapshot revision are skipped, so a crash between writing a snapshot and
//! truncating the WAL is harmless.

use crate::state::State;
use crate::types::{KeyValue, MetaError, MetadataStore, Op, Txn, TxnResponse};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// WAL records between snapshots.
const SNAPSHOT_EVERY: usize = 10_000;

#[derive(Serialize, Deserialize)]
struct WalEntry {
    revision: i64,
    ops: Vec<Op>,
}

struct Inner {
    dir: PathBuf,
    state: State,
    wal: File,
    wal_records: usize,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl EmbeddedStore {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let snap_path = dir.join("snapshot.json");
        let mut state = match std::fs::read(&snap_path) {
            Ok(b) => serde_json::from_slice::<State>(&b)
                .map_err(|e| MetaError::Corrupt(snap_path.display().to_string(), e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&snap_path)(e)),
        };
        let wal_path = dir.join("wal.log");
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&wal_path) {
            f.read_to_end(&mut bytes).map_err(io(&wal_path))?;
        }
        let (valid, records) = replay(&bytes, &mut state);
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(io(&wal_path))?;
        if valid < bytes.len() {
            tracing::warn!(
                path = %wal_path.display(),
                valid_bytes = valid,
                file_bytes = bytes.len(),
                "truncating torn tail of metadata WAL"
            );
            wal.set_len(valid as u64).map_err(io(&wal_path))?;
            wal.sync_all().map_err(io(&wal_path))?;
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                state,
                wal,
                wal_records: records,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies intact WAL records to `state`; returns the valid byte length and
/// the number of records read.
fn replay(bytes: &[u8], state: &mut State) -> (usize, usize) {
    let mut pos = 0;
    let mut n = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_be_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<WalEntry>(body) else {
            break;
        };
        if entry.revision > state.revision {
            state.apply(&entry.ops);
            // Revisions are re-derived by apply; they must agree with the log.
            state.revision = entry.revision;
        }
        pos += 8 + len;
        n += 1;
    }
    (pos, n)
}

impl Inner {
    fn commit(&mut self, txn: &Txn) -> Result<TxnResponse, MetaError> {
        let (succeeded, ops) = self.state.branch(txn);
        if ops.is_empty() {
            return Ok(TxnResponse {
                succeeded,
                revision: self.state.revision,
            });
        }
        let entry = WalEntry {
            revision: self.state.revision + 1,
            ops: ops.to_vec(),
        };
        let body = serde_json::to_vec(&entry)
            .map_err(|e| MetaError::Corrupt("wal entry".into(), e.to_string()))?;
        let mut rec = Vec::with_capacity(body.len() + 8);
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        rec.extend_from_slice(&body);
        let wal_path = self.dir.join("wal.log");
        self.wal.write_all(&rec).map_err(io(&wal_path))?;
        self.wal.sync_data().map_err(io(&wal_path))?;
        let revision = self.state.apply(&entry.ops);
        self.wal_records += 1;
        if self.wal_records >= SNAPSHOT_EVERY {
            if let Err(e) = self.snapshot() {
                // The WAL still holds everything; try again next time.
                tracing::warn!(error = %e, "metadata snapshot failed");
            }
        }
        Ok(TxnResponse {
            succeeded,
            revision,
        })
    }

    fn snapshot(&mut self) -> Result<(), MetaError> {
        let tmp = self.dir.join("snapshot.json.tmp");
        let dst = self.dir.join("snapshot.json");
        let body = serde_json::to_vec(&self.state)
            .map_err(|e| MetaError::Corrupt("snapshot".into(), e.to_string()))?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        let wal_path = self.dir.join("wal.log");
        self.wal.set_len(0).map_err(io(&wal_path))?;
        self.wal.sync_all().map_err(io(&wal_path))?;
        self.wal_records = 0;
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.lock().state.get(key))
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, MetaError> {
        Ok(self.lock().state.range(prefix))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError> {
        // The WAL fsync blocks; keep it off the async workers.
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.lock().commit(&txn))
            .await
            .map_err(|e| MetaError::Unavailable(format!("metadata commit task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn embedded_store_conformance() {
        let d = tempfile::tempdir().unwrap();
        conformance::run_all(&EmbeddedStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_torn_wal_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(d.path()).unwrap();
            s.put("/a", "1".into()).await.unwrap();
            s.put("/b", "2".into()).await.unwrap();
            s.delete("/a").await.unwrap();
        }
        // A torn record after a crash.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join("wal.log"))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let s = EmbeddedStore::open(d.path()).unwrap();
        assert!(s.get("/a").await.unwrap().is_none());
        let b = s.get("/b").await.unwrap().unwrap();
        assert_eq!(&b.value[..], b"2");
        assert_eq!(b.mod_revision, 2);
        assert_eq!(s.put("/c", "3".into()).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn snapshot_then_replay() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(d.path()).unwrap();
            s.put("/x", "1".into()).await.unwrap();
            s.lock().snapshot().unwrap();
            s.put("/y", "2".into()).await.unwrap();
        }
        let s = EmbeddedStore::open(d.path()).unwrap();
        assert_eq!(s.range("/").await.unwrap().len(), 2);
        assert_eq!(s.get("/y").await.unwrap().unwrap().mod_revision, 2);
    }
}
