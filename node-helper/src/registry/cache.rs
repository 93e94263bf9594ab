//! snapmend's cache of fetched blobs (`--cache-dir`, default `/var/lib/snapmend/blobs`):
//! `sha256/<hex>` holds only blobs whose digest was checked while they were downloaded;
//! `tmp/` holds downloads in flight. Size-capped, least recently used evicted first (use
//! refreshes a file's mtime). Never containerd's content store.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::lru_dir::{create_private_dir, touch};
use crate::store::content::parse_sha256_digest;

/// Files used this recently are never evicted: another layer thread may be about to read them.
const IN_USE_GRACE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl BlobCache {
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        parse_sha256_digest(digest).map(|hex| self.dir.join("sha256").join(hex))
    }

    /// The cached blob, its use recorded; `None` when absent.
    pub fn lookup(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(digest)?;
        touch(&path).then_some(path)
    }

    /// A fresh file for a download in flight (the directory is created 0700).
    pub fn temp_file(&self, digest: &str) -> Result<(PathBuf, std::fs::File)> {
        let tmp = self.dir.join("tmp");
        create_private_dir(&tmp)?;
        let hex = parse_sha256_digest(digest).unwrap_or("unknown");
        for n in 0u32..1000 {
            let path = tmp.join(format!("{hex}.{}.{n}", std::process::id()));
            match std::fs::File::options()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::io(
            &tmp,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "no free temporary blob name",
            ),
        ))
    }

    /// Moves a verified download into place, then evicts down to the cap.
    pub fn commit(&self, temp: &Path, file: &std::fs::File, digest: &str) -> Result<PathBuf> {
        let dest = self.blob_path(digest).ok_or_else(|| Error::Layer {
            digest: digest.to_string(),
            reason: "not a sha256 digest".into(),
        })?;
        create_private_dir(dest.parent().unwrap_or(&self.dir))?;
        file.sync_all().map_err(|e| Error::io(temp, e))?;
        std::fs::rename(temp, &dest).map_err(|e| Error::io(&dest, e))?;
        self.evict(&dest);
        Ok(dest)
    }

    /// Removes a cached blob that turned out unusable.
    pub fn forget(&self, digest: &str) {
        if let Some(p) = self.blob_path(digest) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Least recently used first, until the total fits `max_bytes`; `keep` and recently used
    /// files stay. Stale partial downloads (older than the grace period) go first.
    fn evict(&self, keep: &Path) {
        let now = SystemTime::now();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("tmp")) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() > Duration::from_secs(3600))
                    .unwrap_or(false);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        crate::lru_dir::evict_least_recently_used(
            &self.dir.join("sha256"),
            self.max_bytes,
            keep,
            IN_USE_GRACE,
            |_| true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn add(cache: &BlobCache, n: u8, len: usize, age_secs: u64) -> PathBuf {
        let (tmp, mut f) = cache.temp_file(&digest(n)).expect("temp");
        std::io::Write::write_all(&mut f, &vec![n; len]).expect("write");
        let path = cache.commit(&tmp, &f, &digest(n)).expect("commit");
        let t = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .expect("open")
            .set_modified(t)
            .expect("mtime");
        path
    }

    #[test]
    fn least_recently_used_goes_first_and_recent_files_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache {
            dir: dir.path().to_path_buf(),
            max_bytes: 250,
        };
        let a = add(&cache, 1, 100, 3000);
        let b = add(&cache, 2, 100, 2000);
        assert!(
            cache.lookup(&digest(1)).is_some(),
            "a used again: now the most recent"
        );
        let c = add(&cache, 3, 100, 1000);
        // 300 > 250: b (least recently used) goes; a was just used, c just added.
        assert!(a.exists() && !b.exists() && c.exists());
        assert_eq!(cache.lookup(&digest(2)), None);
        assert_eq!(cache.blob_path("md5:x"), None);
    }

    #[test]
    fn temp_files_are_unique_and_forget_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
        };
        let (p1, _f1) = cache.temp_file(&digest(1)).expect("temp");
        let (p2, _f2) = cache.temp_file(&digest(1)).expect("temp");
        assert_ne!(p1, p2);
        add(&cache, 4, 10, 0);
        cache.forget(&digest(4));
        assert_eq!(cache.lookup(&digest(4)), None);
    }
}
