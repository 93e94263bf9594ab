//! Reads of files named on the command line or found in the store, each with a cap: a
//! `--config /dev/zero`, a FIFO or a runaway file must end in a clear error, not in memory
//! exhaustion.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// containerd's config.toml and each file it imports.
pub const CONFIG_CAP: u64 = 4 << 20;
/// A bolt database (meta.db holds every image, lease and snapshot key of the node; real ones
/// are tens of MiB).
pub const BOLT_CAP: u64 = 1 << 30;
/// `/proc/*/mountinfo` (thousands of mounts on a busy node are well below this).
pub const MOUNTINFO_CAP: u64 = 64 << 20;
/// Small files snapmend writes itself (e.g. staging bookkeeping).
pub const OWN_RECORD_CAP: u64 = 4 << 10;

/// The whole of `path`, or an error naming it when it holds more than `cap` bytes.
pub fn read_capped(path: &Path, what: &'static str, cap: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let hint = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if hint.is_some_and(|len| len > cap) {
        return Err(too_large(path, what, cap));
    }
    let mut bytes = Vec::with_capacity(hint.unwrap_or(0).min(cap) as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, what, cap));
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, what: &'static str, cap: u64) -> Result<String> {
    String::from_utf8(read_capped(path, what, cap)?).map_err(|e| Error::InputInvalid {
        path: path.to_path_buf(),
        what,
        reason: format!("not UTF-8 text ({e})"),
    })
}

fn too_large(path: &Path, what: &'static str, cap: u64) -> Error {
    Error::InputInvalid {
        path: path.to_path_buf(),
        what,
        reason: format!("larger than {cap} bytes; not read (is it the right file?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "version = 2\n").unwrap();
        assert_eq!(
            read_text_capped(&p, "config", 100).unwrap(),
            "version = 2\n"
        );
        assert_eq!(read_capped(&p, "config", 12).unwrap().len(), 12);
    }

    #[test]
    fn a_file_over_the_cap_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 101]).unwrap();
        let e = read_capped(&p, "containerd config", 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big") && e.contains("containerd config") && e.contains("larger than 100"),
            "{e}"
        );
    }

    #[test]
    fn an_endless_device_is_refused_quickly() {
        let started = std::time::Instant::now();
        let e = read_capped(Path::new("/dev/zero"), "config", CONFIG_CAP).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        let e = read_text_capped(&p, "config", 100).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
