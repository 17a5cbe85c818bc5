//! The local metadata store: one engine behind both [`MemStore`] (in memory,
//! for unit tests) and [`EmbeddedStore`] (the `strata dev` store, persisted
//! under the data directory).
//!
//! Persistence (embedded only), under its directory:
//! - `snapshot.json`: the whole state at some revision (temp file, fsync,
//!   rename, directory fsync);
//! - `wal.log`: records `[len u32][crc32c u32][json {revision, ops}]` of every
//!   mutating transaction after the snapshot, fsync'd before it returns.
//!
//! On open the snapshot is loaded and the WAL replayed to its last intact
//! record (a torn tail is truncated). Leases live only in memory: they cannot
//! outlive the process that renews them, so keys still bound to a lease after
//! replay are deleted on open (and that deletion is logged).
//!
//! Watches: every change is kept in a bounded history (so a watch can start
//! at a recent past revision) and broadcast to live watchers, both under the
//! store lock, so a watcher sees every event after its start exactly once and
//! in revision order.

use crate::state::State;
use crate::types::{
    KeyValue, LeaseId, MetaError, MetadataStore, Op, Range, Txn, TxnResponse, WatchEvent,
    WatchStream,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// WAL records between snapshots.
const SNAPSHOT_EVERY: usize = 10_000;
/// Events kept for watches that start in the past.
const HISTORY: usize = 10_000;
/// Events buffered per live watcher before it is cancelled as lagging.
const WATCH_BUFFER: usize = 4096;
/// How often expired leases are reaped.
const REAP_EVERY: Duration = Duration::from_millis(50);

#[derive(Serialize, Deserialize)]
struct WalEntry {
    revision: i64,
    ops: Vec<Op>,
}

struct Wal {
    dir: PathBuf,
    file: File,
    records: usize,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

struct Inner {
    state: State,
    wal: Option<Wal>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    reaper_started: bool,
    history: VecDeque<WatchEvent>,
    events: broadcast::Sender<WatchEvent>,
}

/// The local store; see the module docs.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Mutex<Inner>>,
}

/// In-memory store for unit tests.
pub type MemStore = LocalStore;
/// The `strata dev` store, persisted under a directory.
pub type EmbeddedStore = LocalStore;

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(what.to_string(), e.to_string())
}

impl LocalStore {
    /// A store that lives only in memory.
    pub fn new() -> Self {
        Self::with_state(State::default(), None)
    }

    fn with_state(state: State, wal: Option<Wal>) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state,
                wal,
                leases: HashMap::new(),
                next_lease: 1,
                reaper_started: false,
                history: VecDeque::new(),
                events,
            })),
        }
    }

    /// Opens or creates a persistent store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let snap_path = dir.join("snapshot.json");
        let mut state = match std::fs::read(&snap_path) {
            Ok(b) => serde_json::from_slice::<State>(&b)
                .map_err(|e| corrupt(&snap_path.display().to_string(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&snap_path)(e)),
        };
        let wal_path = dir.join("wal.log");
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&wal_path) {
            f.read_to_end(&mut bytes).map_err(io(&wal_path))?;
        }
        let (valid, records) = replay(&bytes, &mut state);
        let file = OpenOptions::new()
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
            file.set_len(valid as u64).map_err(io(&wal_path))?;
            file.sync_all().map_err(io(&wal_path))?;
        }
        let store = Self::with_state(
            state,
            Some(Wal {
                dir: dir.to_path_buf(),
                file,
                records,
            }),
        );
        {
            // Leases died with the previous process: drop their keys.
            let mut inner = store.lock();
            let orphans: Vec<Op> = inner
                .state
                .kvs
                .values()
                .filter(|kv| kv.lease != 0)
                .map(|kv| Op::delete(kv.key.clone()))
                .collect();
            inner.commit_ops(orphans)?;
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Starts the lease reaper once; it stops when the store is dropped.
    fn ensure_reaper(&self) {
        let mut inner = self.lock();
        if inner.reaper_started {
            return;
        }
        inner.reaper_started = true;
        let weak: Weak<Mutex<Inner>> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let result = lock(&inner).expire_leases(Instant::now());
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot delete keys of expired leases");
                }
            }
        });
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // Every mutation is applied only after its WAL write succeeded, so a
    // poisoned lock still guards a consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        // Records at or below the snapshot's revision are already in it.
        if entry.revision > state.revision {
            state.apply(&entry.ops);
            state.revision = entry.revision;
        }
        pos += 8 + len;
        n += 1;
    }
    (pos, n)
}

impl Wal {
    fn append(&mut self, entry: &WalEntry) -> Result<(), MetaError> {
        let body = serde_json::to_vec(entry).map_err(|e| corrupt("wal entry", e))?;
        let mut rec = Vec::with_capacity(body.len() + 8);
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        rec.extend_from_slice(&body);
        let path = self.dir.join("wal.log");
        self.file.write_all(&rec).map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.records += 1;
        Ok(())
    }

    fn snapshot(&mut self, state: &State) -> Result<(), MetaError> {
        let tmp = self.dir.join("snapshot.json.tmp");
        let dst = self.dir.join("snapshot.json");
        let body = serde_json::to_vec(state).map_err(|e| corrupt("snapshot", e))?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        let wal = self.dir.join("wal.log");
        self.file.set_len(0).map_err(io(&wal))?;
        self.file.sync_all().map_err(io(&wal))?;
        self.records = 0;
        Ok(())
    }
}

impl Inner {
    /// Logs (if persistent) then applies `ops` as one revision, publishing
    /// the events. Returns the revision after.
    fn commit_ops(&mut self, ops: Vec<Op>) -> Result<i64, MetaError> {
        if ops.is_empty() {
            return Ok(self.state.revision);
        }
        if let Some(wal) = &mut self.wal {
            wal.append(&WalEntry {
                revision: self.state.revision + 1,
                ops: ops.clone(),
            })?;
        }
        for ev in self.state.apply(&ops) {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(ev.clone());
            // No receivers is fine.
            let _ = self.events.send(ev);
        }
        if let Some(wal) = &mut self.wal {
            if wal.records >= SNAPSHOT_EVERY {
                if let Err(e) = wal.snapshot(&self.state) {
                    // The WAL still holds everything; try again later.
                    tracing::warn!(error = %e, "metadata snapshot failed");
                }
            }
        }
        Ok(self.state.revision)
    }

    fn txn(&mut self, txn: &Txn) -> Result<TxnResponse, MetaError> {
        let succeeded = self.state.check(&txn.compares);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let Op::Put { lease: Some(l), .. } = op {
                if !self.leases.contains_key(l) {
                    return Err(MetaError::LeaseNotFound(*l));
                }
            }
        }
        let revision = self.commit_ops(ops.clone())?;
        Ok(TxnResponse {
            succeeded,
            revision,
        })
    }

    fn delete_lease_keys(&mut self, lease: LeaseId) -> Result<(), MetaError> {
        let ops: Vec<Op> = self
            .state
            .kvs
            .values()
            .filter(|kv| kv.lease == lease)
            .map(|kv| Op::delete(kv.key.clone()))
            .collect();
        self.commit_ops(ops).map(|_| ())
    }

    fn expire_leases(&mut self, now: Instant) -> Result<(), MetaError> {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.leases.remove(&id);
            tracing::debug!(lease = id, "lease expired");
            self.delete_lease_keys(id)?;
        }
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.lock().state.get(key))
    }

    async fn range(&self, prefix: &str) -> Result<Range, MetaError> {
        let inner = self.lock();
        Ok(Range {
            kvs: inner.state.range(prefix),
            revision: inner.state.revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, MetaError> {
        let this = self.clone();
        if self.lock().wal.is_none() {
            return this.lock().txn(&txn);
        }
        // The WAL fsync blocks; keep it off the async workers.
        tokio::task::spawn_blocking(move || this.lock().txn(&txn))
            .await
            .map_err(|e| MetaError::Unavailable(format!("metadata commit task failed: {e}")))?
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        self.ensure_reaper();
        let mut inner = self.lock();
        let id = inner.next_lease;
        inner.next_lease += 1;
        inner.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), MetaError> {
        let this = self.clone();
        let work = move || {
            let mut inner = this.lock();
            if inner.leases.remove(&lease).is_none() {
                return Err(MetaError::LeaseNotFound(lease));
            }
            inner.delete_lease_keys(lease)
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| MetaError::Unavailable(format!("lease revoke task failed: {e}")))?
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<WatchStream, MetaError> {
        let (backlog, mut live) = {
            let inner = self.lock();
            let current = inner.state.revision;
            let from = if from_revision <= 0 {
                current + 1
            } else {
                from_revision
            };
            let oldest = inner.history.front().map_or(current + 1, |e| e.revision());
            if from <= current && from < oldest {
                return Err(MetaError::Compacted {
                    requested: from,
                    oldest,
                });
            }
            let backlog: Vec<WatchEvent> = inner
                .history
                .iter()
                .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
                .cloned()
                .collect();
            (backlog, inner.events.subscribe())
        };
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let prefix = prefix.to_string();
        let task = tokio::spawn(async move {
            for ev in backlog {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) if ev.key().starts_with(&prefix) => {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(MetaError::WatchLagged)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(WatchStream::new(rx, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn memory_store_conformance() {
        conformance::run_all(&LocalStore::new()).await;
    }

    #[tokio::test]
    async fn embedded_store_conformance() {
        let d = tempfile::tempdir().unwrap();
        conformance::run_all(&LocalStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_torn_wal_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LocalStore::open(d.path()).unwrap();
            s.put("/a", "1".into()).await.unwrap();
            s.put("/b", "2".into()).await.unwrap();
            s.delete("/a").await.unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join("wal.log"))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let s = LocalStore::open(d.path()).unwrap();
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
            let s = LocalStore::open(d.path()).unwrap();
            s.put("/x", "1".into()).await.unwrap();
            {
                let mut inner = s.lock();
                let Inner { wal, state, .. } = &mut *inner;
                wal.as_mut().unwrap().snapshot(state).unwrap();
            }
            s.put("/y", "2".into()).await.unwrap();
        }
        let s = LocalStore::open(d.path()).unwrap();
        assert_eq!(s.range("/").await.unwrap().kvs.len(), 2);
        assert_eq!(s.get("/y").await.unwrap().unwrap().mod_revision, 2);
    }

    #[tokio::test]
    async fn lease_bound_keys_do_not_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LocalStore::open(d.path()).unwrap();
            let l = s.grant_lease(Duration::from_secs(60)).await.unwrap();
            s.txn(Txn::new().then(Op::put_with_lease("/leader", "me", l)))
                .await
                .unwrap();
            s.put("/durable", "x".into()).await.unwrap();
        }
        let s = LocalStore::open(d.path()).unwrap();
        assert!(s.get("/leader").await.unwrap().is_none());
        assert!(s.get("/durable").await.unwrap().is_some());
    }
}
