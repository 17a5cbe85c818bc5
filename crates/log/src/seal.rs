//! Sealing a rolled segment: its fsync, off the append path.
//!
//! A roll used to fsync the segment it sealed (and its indexes) inline, in
//! the append that filled it: with `segment.bytes` of mostly dirty data that
//! is a disk-bound wait of up to seconds, holding the partition's lock and
//! the thread that appended (an async worker). Now the roll hands the sealed
//! segment's files to a thread of its own and returns.
//!
//! Invariants:
//! - at most one sealed segment per log is not yet known durable: a roll
//!   first waits for the previous one's seal (normally long finished);
//! - so every segment but the last two is durable, and opening a log
//!   verifies the last two (`PartitionLog::open`);
//! - an fsync of the log ([`crate::FlushHandle`], acks=all and `flush.*`)
//!   waits for a pending seal first, so what it acknowledges as durable is,
//!   whichever segment it is in.

use crate::error::LogError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// The files of a sealed segment (data and indexes), opened anew so they
/// can be synced away from the log.
pub(crate) struct SealFiles {
    pub(crate) files: Vec<(File, PathBuf)>,
}

impl SealFiles {
    fn sync(&self) -> Result<(), (PathBuf, std::io::Error)> {
        for (f, p) in &self.files {
            f.sync_data().map_err(|e| (p.clone(), e))?;
        }
        Ok(())
    }
}

/// Called on the seal thread before it syncs (tests hold a seal there).
pub(crate) type SealHook = Arc<dyn Fn() + Send + Sync>;

/// A seal in progress or done; cheap to clone, any clone can wait for it.
#[derive(Clone)]
pub(crate) struct Sealing(Arc<State>);

/// Why a seal failed: the file, the error's message and kind (kept apart
/// because `io::Error` cannot be cloned to every waiter).
type SealError = (PathBuf, String, std::io::ErrorKind);

struct State {
    /// None while syncing; then Ok, or what failed.
    done: Mutex<Option<Result<(), SealError>>>,
    cv: Condvar,
}

impl Sealing {
    /// Starts syncing `files` on a thread of their own (inline if no thread
    /// can be started).
    pub(crate) fn start(files: SealFiles, hook: Option<SealHook>) -> Self {
        let state = Arc::new(State {
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        let s = state.clone();
        let work = move || {
            if let Some(h) = &hook {
                h();
            }
            let r = files.sync().map_err(|(p, e)| {
                tracing::error!(file = %p.display(), error = %e, "cannot fsync a sealed segment");
                (p, e.to_string(), e.kind())
            });
            *lock(&s.done) = Some(r);
            s.cv.notify_all();
        };
        // The closure is moved into the thread; if spawning fails it is
        // dropped with the error, so keep a second way to run it.
        let work = Arc::new(Mutex::new(Some(work)));
        let w = work.clone();
        let spawned = std::thread::Builder::new()
            .name("strata-seal".into())
            .spawn(move || {
                if let Some(f) = lock(&w).take() {
                    f()
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a seal thread; syncing inline");
            if let Some(f) = lock(&work).take() {
                f()
            }
        }
        Self(state)
    }

    /// Waits until the seal is done; its error, if the fsync failed.
    pub(crate) fn wait(&self) -> Result<(), LogError> {
        let mut done = lock(&self.0.done);
        loop {
            match &*done {
                Some(Ok(())) => return Ok(()),
                Some(Err((path, msg, kind))) => {
                    return Err(LogError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(*kind, msg.clone()),
                    })
                }
                None => done = self.0.cv.wait(done).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Whether the seal has finished (successfully or not).
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.0.done).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are written whole; a panic cannot leave them torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
