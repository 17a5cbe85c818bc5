//! Which topic a partition directory holds.
//!
//! A topic deleted and created again under its name is another topic in a
//! directory of the same name, `<topic>-<p>`. A broker that was down when
//! the old topic was deleted keeps its directory, and when the new topic
//! places a replica there it would open the old records as the new topic's
//! (measured before this check: a topic created again served 500 records
//! of its deleted predecessor from the restarted broker that led one of
//! its partitions). So each directory records the id of its topic in
//! `partition.metadata` (as Kafka's KIP-516 does), and a directory that
//! belongs to another topic is emptied before its replica is opened.
//!
//! A directory without the file (made before it existed) is taken as the
//! current topic's and gets one. The file is written whole (a temporary
//! file, synced, renamed), so a crash leaves the old file or the new one;
//! one that does not parse is rewritten.

use std::path::Path;

/// The file, inside the partition's directory. Its stem is not a number,
/// so the log's recovery leaves it alone.
pub(crate) const FILE: &str = "partition.metadata";

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// The directory was the topic's already.
    Same,
    /// No directory, or one without a topic id: now the topic's.
    New,
    /// The directory held topic `previous`'s replica, now deleted.
    Replaced { previous: String },
}

/// The topic id recorded in `dir`, if any.
pub(crate) fn recorded(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// Makes `dir` topic `id`'s partition directory: created if absent,
/// emptied first if it holds another topic's replica.
pub(crate) fn claim(dir: &Path, id: &str) -> std::io::Result<Claimed> {
    let claimed = match recorded(dir) {
        Some(r) if r == id => return Ok(Claimed::Same),
        Some(previous) => {
            std::fs::remove_dir_all(dir)?;
            Claimed::Replaced { previous }
        }
        None => Claimed::New,
    };
    std::fs::create_dir_all(dir)?;
    let text = format!("version: 0\ntopic_id: {id}\n");
    crate::fsutil::write_whole(&dir.join(FILE), text.as_bytes())?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_kept_or_emptied() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        assert_eq!(claim(&dir, "a").unwrap(), Claimed::New);
        assert_eq!(recorded(&dir).as_deref(), Some("a"));
        std::fs::write(dir.join("00000000000000000000.log"), b"records").unwrap();
        assert_eq!(claim(&dir, "a").unwrap(), Claimed::Same);
        assert!(dir.join("00000000000000000000.log").exists());
        let replaced = claim(&dir, "b").unwrap();
        assert_eq!(
            replaced,
            Claimed::Replaced {
                previous: "a".into()
            }
        );
        assert!(!dir.join("00000000000000000000.log").exists());
        assert_eq!(recorded(&dir).as_deref(), Some("b"));
        // Made before ids were recorded (or a torn file): adopted, data kept.
        std::fs::write(dir.join("00000000000000000000.log"), b"records").unwrap();
        std::fs::write(dir.join(FILE), b"").unwrap();
        assert_eq!(claim(&dir, "c").unwrap(), Claimed::New);
        assert!(dir.join("00000000000000000000.log").exists());
        assert_eq!(recorded(&dir).as_deref(), Some("c"));
    }
}
