//! Size-capped directories of cache files, least recently used evicted first (a use refreshes
//! a file's mtime). Shared by the registry blob cache and the TOC cache.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Creates `dir` and its parents, new directories mode 0700 (the caches are root's alone).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Records a use of a cache file (its mtime is the LRU clock); `false` when it is absent.
pub(crate) fn touch(path: &Path) -> bool {
    match std::fs::File::options().append(true).open(path) {
        Ok(f) => {
            let _ = f.set_modified(SystemTime::now());
            true
        }
        Err(_) => false,
    }
}

/// Removes files of `dir` (not recursive) that `counts` selects, least recently used first,
/// until their total fits `max_bytes`. `keep` and files used within `grace` stay.
pub(crate) fn evict_least_recently_used(
    dir: &Path,
    max_bytes: u64,
    keep: &Path,
    grace: Duration,
    counts: impl Fn(&Path) -> bool,
) {
    let now = SystemTime::now();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| counts(&e.path()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (mtime, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep || now.duration_since(mtime).unwrap_or_default() < grace {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), bytes = len, "evicted cache file");
            total -= len;
        }
    }
}
