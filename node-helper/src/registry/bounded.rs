//! Reading small input files (hosts.toml, docker config.json, PEM files) with a size cap, so a
//! huge or endless file (a FIFO, /dev/zero) is refused with its path instead of exhausting memory.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The whole file, or an error naming it when it is larger than `cap` bytes.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {cap} bytes, not read"),
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("x");
        std::fs::write(&f, b"12345").expect("write");
        assert_eq!(read_bounded(&f, 5).expect("fits"), b"12345");
        let err = read_bounded(&f, 4).expect_err("too big").to_string();
        assert!(
            err.contains("larger than 4 bytes") && err.contains(&f.display().to_string()),
            "{err}"
        );
        let err = read_bounded(&dir.path().join("none"), 4)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("none"), "{err}");
        // An endless file is cut at the cap.
        assert!(read_bounded(Path::new("/dev/zero"), 1024).is_err());
    }
}
