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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Seal threads running in this process, and how many may: many
/// partitions rolling at once (time-based rolls of idle partitions come due
/// together) must not start a thread each; past the bound a roll syncs
/// inline, as rolls always used to.
static SEAL_THREADS: AtomicUsize = AtomicUsize::new(0);
const MAX_SEAL_THREADS: usize = 8;

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
    /// Starts syncing `files` on a thread of their own (inline if
    /// [`MAX_SEAL_THREADS`] are running or no thread can be started).
    pub(crate) fn start(files: SealFiles, hook: Option<SealHook>) -> Self {
        Self::start_bounded(files, hook, &SEAL_THREADS, MAX_SEAL_THREADS)
    }

    /// [`Self::start`] with its own count of running threads and bound.
    fn start_bounded(
        files: SealFiles,
        hook: Option<SealHook>,
        running: &'static AtomicUsize,
        max: usize,
    ) -> Self {
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
        if running.fetch_add(1, Ordering::AcqRel) >= max {
            running.fetch_sub(1, Ordering::AcqRel);
            work();
            return Self(state);
        }
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
                running.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            running.fetch_sub(1, Ordering::AcqRel);
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
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.0.done).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are written whole; a panic cannot leave them torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Past the bound, a seal runs inline (done when `start` returns); a
    /// finished thread frees its place.
    #[test]
    fn seals_past_the_thread_bound_run_inline() {
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        let d = tempfile::tempdir().unwrap();
        let files = |n: usize| {
            let p = d.path().join(format!("f{n}"));
            SealFiles {
                files: vec![(File::create(&p).unwrap(), p)],
            }
        };
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // Seal threads wait at the gate; an inline seal (on this thread)
        // does not.
        let hook: SealHook = Arc::new(move || {
            if std::thread::current().name() == Some("strata-seal") {
                let _ = lock(&gate).recv_timeout(Duration::from_secs(30));
            }
        });
        let held: Vec<Sealing> = (0..2)
            .map(|n| Sealing::start_bounded(files(n), Some(hook.clone()), &RUNNING, 2))
            .collect();
        let inline = Sealing::start_bounded(files(2), Some(hook.clone()), &RUNNING, 2);
        assert!(inline.is_done(), "the third seal ran inline");
        assert!(held.iter().all(|s| !s.is_done()));
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for s in &held {
            s.wait().unwrap();
        }
        // The threads are gone once they said so; give them a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while RUNNING.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(RUNNING.load(Ordering::Acquire), 0);
        let again = Sealing::start_bounded(files(3), Some(hook), &RUNNING, 2);
        assert!(
            !again.is_done(),
            "a freed place runs a seal on a thread again"
        );
        release.send(()).unwrap();
        again.wait().unwrap();
    }
}
