//! Directories of deleted topics' replicas that no reconcile removed.
//!
//! A broker deletes a replica's directory when its reconcile sees the
//! topic deleted or the replica moved away. A broker that was down
//! through the deletion keeps the directory, and nothing opens it again
//! (a topic created again under its name empties it first: see
//! `partition::incarnation`). So now and then each broker deletes the
//! directories that are not open here and that record the id of a topic
//! the cluster no longer has (none of that name, or one of another id).
//!
//! Invariant: only a directory with a recorded topic id that differs from
//! the current topic's is deleted; a directory without one (made before
//! ids were recorded), an open replica or anything else under the data
//! directory is left alone. Runs under the reconcile lock, so no replica
//! is opened in the directory meanwhile.

use crate::broker::Broker;
use crate::partition::incarnation;
use std::path::PathBuf;

impl Broker {
    /// Deletes stray replicas' directories (see the module docs); returns
    /// how many.
    pub(crate) async fn remove_stray_replicas(&self) -> usize {
        let _one = self.reconcile_lock.lock().await;
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return 0;
        };
        let open = |topic: &str, p: i32| {
            let key = (topic.to_string(), p);
            self.hosted().contains_key(&key)
                || self
                    .following
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&key)
        };
        let strays: Vec<(PathBuf, String)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (topic, p) = name.rsplit_once('-')?;
                let p: i32 = p.parse().ok()?;
                // Open replicas first: their file need not be read.
                if open(topic, p) {
                    return None;
                }
                let recorded = incarnation::recorded(&e.path())?;
                let stray = self.topic_id(topic).as_deref() != Some(recorded.as_str());
                stray.then(|| (e.path(), recorded))
            })
            .collect();
        let mut removed = 0;
        for (dir, id) in strays {
            let gone = dir.clone();
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(gone)).await {
                Ok(Ok(())) => {
                    removed += 1;
                    tracing::info!(dir = %dir.display(), topic_id = %id, "deleted the replica of a deleted topic");
                }
                Ok(Err(e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot delete the replica of a deleted topic")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "stray replica removal failed")
                }
            }
        }
        removed
    }
}
