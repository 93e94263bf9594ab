//! The content store: where a blob lives, and reading small JSON documents (manifests,
//! indexes, configs) with their digest verified.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Manifests, indexes and configs are small; anything bigger than this is not one.
pub const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentStore {
    /// `<root>/io.containerd.content.v1.content`
    pub root: PathBuf,
}

/// Splits `sha256:<64 hex>` into its parts; anything else (other algorithms, bad hex, path
/// separators) is rejected so a digest can never escape the blobs directory.
pub fn parse_sha256_digest(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

impl ContentStore {
    pub fn new(root: &Path) -> ContentStore {
        ContentStore {
            root: root.to_path_buf(),
        }
    }

    /// `blobs/sha256/<hex>` for a digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = parse_sha256_digest(digest).ok_or_else(|| Error::Image {
            reference: digest.to_string(),
            reason: "not a sha256 digest (sha256:<64 lower-case hex>)".into(),
        })?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// Reads a small blob and checks that its sha256 is `digest`.
    pub fn read_document(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_DOCUMENT_SIZE + 1).read_to_end(&mut bytes))
            .map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(Error::Image {
                reference: digest.to_string(),
                reason: format!(
                    "{} is larger than {MAX_DOCUMENT_SIZE} bytes",
                    path.display()
                ),
            });
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest {
            return Err(Error::Image {
                reference: digest.to_string(),
                reason: format!("{} has digest {actual}", path.display()),
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn digests_are_parsed_strictly() {
        assert_eq!(parse_sha256_digest(HELLO), Some(&HELLO[7..]));
        assert_eq!(parse_sha256_digest("sha512:abcd"), None);
        assert_eq!(parse_sha256_digest("sha256:../../etc/passwd"), None);
        assert_eq!(
            parse_sha256_digest(&HELLO.to_uppercase().replace("SHA256", "sha256")),
            None
        );
        assert_eq!(parse_sha256_digest(&HELLO[..70]), None);
    }

    #[test]
    fn documents_are_read_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path());
        let path = store.blob_path(HELLO).unwrap();
        assert_eq!(path, dir.path().join("blobs/sha256").join(&HELLO[7..]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(store.read_document(HELLO).unwrap(), b"hello");
        std::fs::write(&path, b"hellO").unwrap();
        let e = store.read_document(HELLO).unwrap_err().to_string();
        assert!(e.contains("has digest sha256:"), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.read_document(HELLO), Err(Error::Io { .. })));
    }
}
