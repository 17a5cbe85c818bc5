//! Small files written whole: a crash leaves the old file or the new one,
//! never a part of either.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file beside it
/// (`path` with the extension `tmp`), synced, renamed over `path`, and the
/// directory synced so the rename lasts.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}
