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
//! state lock, so a watcher sees every event after its start exactly once and
//! in revision order.
//!
//! Two locks, so no reader ever waits for a disk: writers (transactions,
//! lease revocation and expiry) serialise on the commit lock, which they hold
//! across the WAL write and fsync; the state lock (the key space, leases,
//! watch history) is held only for in-memory work — a writer takes it
//! briefly to plan its operations and again to apply them once they are
//! durable. Reads, watches, lease grants and keep-alives take only the state
//! lock, so they run on async workers without blocking them; anything that
//! takes the commit lock of a persistent store runs on the blocking pool. A
//! write is visible only once it is durable, and since writers are
//! serialised, the state a writer planned against is the state it applies
//! to.

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
use std::sync::{Arc, Mutex, MutexGuard, Weak};
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
    /// Runs before each fsync (tests hold a commit there).
    #[cfg(test)]
    before_sync: Option<Box<dyn Fn() + Send>>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

/// What the state lock guards: everything but the WAL.
struct Inner {
    state: State,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    reaper_started: bool,
    history: VecDeque<WatchEvent>,
    events: broadcast::Sender<WatchEvent>,
}

/// The local store; see the module docs.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Shared>,
}

struct Shared {
    /// Whether writes go to a WAL (and so must stay off async workers);
    /// fixed at construction, so asking never takes the commit lock.
    persistent: bool,
    /// The commit lock: serialises writers, held across WAL I/O. None for
    /// a store that lives only in memory.
    commit: Mutex<Option<Wal>>,
    /// The state lock: never held across I/O.
    state: Mutex<Inner>,
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
            inner: Arc::new(Shared {
                persistent: wal.is_some(),
                commit: Mutex::new(wal),
                state: Mutex::new(Inner {
                    state,
                    leases: HashMap::new(),
                    next_lease: 1,
                    reaper_started: false,
                    history: VecDeque::new(),
                    events,
                }),
            }),
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
                #[cfg(test)]
                before_sync: None,
            }),
        );
        // Leases died with the previous process: drop their keys.
        store.inner.write(|inner| {
            let orphans = inner
                .state
                .kvs
                .values()
                .filter(|kv| kv.lease != 0)
                .map(|kv| Op::delete(kv.key.clone()))
                .collect();
            Ok((orphans, ()))
        })?;
        Ok(store)
    }

    /// Runs `f` (which takes the commit lock) on the blocking pool if the
    /// store is persistent, in place if it lives in memory.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Shared) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        if !self.inner.persistent {
            return f(&self.inner);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| MetaError::Unavailable(format!("{what} task failed: {e}")))?
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.state_lock()
    }

    /// Starts the lease reaper once; it stops when the store is dropped.
    fn ensure_reaper(&self) {
        let mut inner = self.lock();
        if inner.reaper_started {
            return;
        }
        inner.reaper_started = true;
        let weak: Weak<Shared> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = LocalStore { inner };
                // Looking is cheap and in memory; deleting keys is a write.
                if store.lock().expired(Instant::now()).next().is_none() {
                    continue;
                }
                let result = store
                    .blocking("lease expiry", |s| s.expire_leases(Instant::now()))
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot delete keys of expired leases");
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        #[cfg(test)]
        if let Some(hook) = &self.before_sync {
            hook();
        }
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

impl Shared {
    fn commit_lock(&self) -> MutexGuard<'_, Option<Wal>> {
        lock(&self.commit)
    }

    fn state_lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }

    /// One write: under the commit lock, `plan` (given the state, under the
    /// state lock) decides the operations; they are logged (if persistent)
    /// with the state lock released, then applied as one revision and their
    /// events published. Returns the revision after and what `plan` returned
    /// besides. Blocks on disk I/O for a persistent store.
    fn write<T>(
        &self,
        plan: impl FnOnce(&mut Inner) -> Result<(Vec<Op>, T), MetaError>,
    ) -> Result<(i64, T), MetaError> {
        let mut wal = self.commit_lock();
        let (ops, planned, revision) = {
            let mut inner = self.state_lock();
            let (ops, planned) = plan(&mut inner)?;
            (ops, planned, inner.state.revision)
        };
        if ops.is_empty() {
            return Ok((revision, planned));
        }
        if let Some(wal) = wal.as_mut() {
            wal.append(&WalEntry {
                revision: revision + 1,
                ops: ops.clone(),
            })?;
        }
        let (revision, snapshot) = {
            let mut inner = self.state_lock();
            inner.apply(&ops);
            // A copy to write out with the state lock released (no writer
            // can change the state meanwhile: this one holds the commit lock).
            let due = wal.as_ref().is_some_and(|w| w.records >= SNAPSHOT_EVERY);
            (inner.state.revision, due.then(|| inner.state.clone()))
        };
        if let (Some(wal), Some(state)) = (wal.as_mut(), snapshot) {
            if let Err(e) = wal.snapshot(&state) {
                // The WAL still holds everything; try again later.
                tracing::warn!(error = %e, "metadata snapshot failed");
            }
        }
        Ok((revision, planned))
    }

    fn txn(&self, txn: &Txn) -> Result<TxnResponse, MetaError> {
        txn.check_size()?;
        let (revision, succeeded) = self.write(|inner| {
            let succeeded = inner.state.check(&txn.compares);
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            for op in ops {
                if let Op::Put { lease: Some(l), .. } = op {
                    if !inner.leases.contains_key(l) {
                        return Err(MetaError::LeaseNotFound(*l));
                    }
                }
            }
            Ok((ops.clone(), succeeded))
        })?;
        Ok(TxnResponse {
            succeeded,
            revision,
        })
    }

    /// Ends `lease` and deletes the keys bound to it.
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), MetaError> {
        self.write(|inner| {
            if inner.leases.remove(&lease).is_none() {
                return Err(MetaError::LeaseNotFound(lease));
            }
            Ok((inner.lease_keys(&[lease]), ()))
        })
        .map(|_| ())
    }

    /// Ends the leases past their deadline and deletes their keys.
    fn expire_leases(&self, now: Instant) -> Result<(), MetaError> {
        self.write(|inner| {
            let expired: Vec<LeaseId> = inner.expired(now).collect();
            for id in &expired {
                inner.leases.remove(id);
                tracing::debug!(lease = id, "lease expired");
            }
            Ok((inner.lease_keys(&expired), ()))
        })
        .map(|_| ())
    }
}

impl Inner {
    /// Applies `ops` (already durable) as one revision, publishing the
    /// events.
    fn apply(&mut self, ops: &[Op]) {
        for ev in self.state.apply(ops) {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(ev.clone());
            // No receivers is fine.
            let _ = self.events.send(ev);
        }
    }

    /// Deletions of the keys bound to any of `leases`.
    fn lease_keys(&self, leases: &[LeaseId]) -> Vec<Op> {
        if leases.is_empty() {
            return Vec::new();
        }
        self.state
            .kvs
            .values()
            .filter(|kv| leases.contains(&kv.lease))
            .map(|kv| Op::delete(kv.key.clone()))
            .collect()
    }

    /// The leases past their deadline at `now`.
    fn expired(&self, now: Instant) -> impl Iterator<Item = LeaseId> + '_ {
        self.leases
            .iter()
            .filter(move |(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
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
        self.blocking("metadata commit", move |s| s.txn(&txn)).await
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
        self.blocking("lease revoke", move |s| s.revoke_lease(lease))
            .await
    }

    async fn compact(&self, revision: i64) -> Result<(), MetaError> {
        let mut inner = self.lock();
        if revision > inner.state.revision {
            return Err(MetaError::FutureRevision(revision));
        }
        // The history is bounded anyway (`HISTORY`); compaction only
        // shortens it. It lives in memory, so nothing is persisted.
        while inner
            .history
            .front()
            .is_some_and(|e| e.revision() < revision)
        {
            inner.history.pop_front();
        }
        Ok(())
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
                let state = s.lock().state.clone();
                s.inner
                    .commit_lock()
                    .as_mut()
                    .unwrap()
                    .snapshot(&state)
                    .unwrap();
            }
            s.put("/y", "2".into()).await.unwrap();
        }
        let s = LocalStore::open(d.path()).unwrap();
        assert_eq!(s.range("/").await.unwrap().kvs.len(), 2);
        assert_eq!(s.get("/y").await.unwrap().unwrap().mod_revision, 2);
    }

    /// A commit held at its fsync must not hold up reads, watches, lease
    /// grants or keep-alives (they run on async workers), and its write is
    /// not visible until it is durable. Each reader runs on a thread of its
    /// own, so a reader stuck behind the commit fails the test instead of
    /// hanging it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_do_not_wait_for_a_commits_fsync() {
        use std::sync::mpsc;
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        s.put("/before", "1".into()).await.unwrap();
        let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        s.inner.commit_lock().as_mut().unwrap().before_sync = Some(Box::new(move || {
            let _ = entered_tx.send(());
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }));
        let writer = tokio::spawn({
            let s = s.clone();
            async move { s.put("/during", "2".into()).await }
        });
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("commit reached its fsync");

        let (done_tx, done) = mpsc::channel();
        let reader = s.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let r = rt.block_on(async {
                let before = reader.get("/before").await.unwrap().is_some();
                let during = reader.get("/during").await.unwrap().is_some();
                let keys = reader.range("/").await.unwrap().kvs.len();
                reader.keep_alive(lease).await.unwrap();
                reader.grant_lease(Duration::from_secs(5)).await.unwrap();
                let _watch = reader.watch_prefix("/", 0).await.unwrap();
                (before, during, keys)
            });
            let _ = done_tx.send(r);
        });
        let got = done.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        let (before, during, keys) = got.expect("reads finished while the commit was held");
        assert!(before);
        assert!(!during, "a write must not be visible before it is durable");
        assert_eq!(keys, 1);
        writer.await.unwrap().unwrap();
        assert!(s.get("/during").await.unwrap().is_some());
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
