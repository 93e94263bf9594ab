//! A large single-layer image for benchmarks, streamed to disk (memory stays small whatever the
//! size): `files` entries in directories of 100, mostly small files plus every 12th a larger
//! one, some hardlinks and symlinks, content half pseudo-random and half text (compresses about
//! like a real root filesystem), gzip.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::digest_of;
use super::oci_archive::{IMAGE_NAME_ANNOTATION, Platform};
use crate::TestError;

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigLayer {
    pub digest: String,
    pub diff_id: String,
    /// Entries in the tar (files, hardlinks, symlinks, directories).
    pub entries: u64,
    /// Regular-file bytes.
    pub file_bytes: u64,
    /// Uncompressed tar stream and compressed blob sizes.
    pub tar_bytes: u64,
    pub blob_bytes: u64,
}

/// Writes everything through to `inner` while hashing it and counting bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// 64 KiB of content: pseudo-random bytes then words (xorshift, fixed seed).
fn content_pool() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pool = Vec::with_capacity(1 << 16);
    while pool.len() < 1 << 15 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        pool.extend_from_slice(&state.to_le_bytes());
    }
    let words = [
        "containerd ",
        "snapshot ",
        "overlay ",
        "layer ",
        "verify ",
        "repair ",
        "pause\n",
        "0123456789 ",
    ];
    let mut i = 0usize;
    while pool.len() < 1 << 16 {
        pool.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        i += 1;
    }
    pool.truncate(1 << 16);
    pool
}

/// Size of file `i`: every 12th between 100 and 250 KiB, the others 0.5 to 8 KiB.
pub fn big_layer_file_size(i: u64) -> u64 {
    if i.is_multiple_of(12) {
        100 * 1024 + (i * 37_171) % (150 * 1024)
    } else {
        512 + (i * 131) % (7 * 1024 + 512)
    }
}

/// A reader of `len` bytes cycling through the pool from a per-file offset.
struct PoolReader<'a> {
    pool: &'a [u8],
    pos: usize,
    left: u64,
}

impl Read for PoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64)
            .min(self.left)
            .min((self.pool.len() - self.pos) as u64) as usize;
        buf[..n].copy_from_slice(&self.pool[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.pool.len();
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(
    kind: tar::EntryType,
    path: &str,
    mode: u32,
    size: u64,
) -> Result<tar::Header, TestError> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path)
        .map_err(|e| TestError::Build(format!("{path}: {e}")))?;
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(super::DEFAULT_MTIME);
    h.set_size(size);
    Ok(h)
}

/// Streams the layer blob (gzip) to `blob_path`.
pub fn write_big_layer_blob(blob_path: &Path, files: u64) -> Result<BigLayer, TestError> {
    let io = |e: std::io::Error| TestError::io(blob_path, e);
    let pool = content_pool();
    let out = File::create(blob_path).map_err(io)?;
    let blob_writer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let gz = flate2::write::GzEncoder::new(blob_writer, flate2::Compression::fast());
    let tar_writer = HashingWriter {
        inner: gz,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut builder = tar::Builder::new(tar_writer);
    let (mut entries, mut file_bytes) = (0u64, 0u64);
    for i in 0..files {
        let dir = format!("data/{:03}/{:03}", i / 10_000, (i / 100) % 100);
        if i % 100 == 0 {
            let mut h = header(tar::EntryType::Directory, &format!("{dir}/"), 0o755, 0)?;
            h.set_cksum();
            builder.append(&h, std::io::empty()).map_err(io)?;
            entries += 1;
        }
        let path = format!("{dir}/f{i:06}");
        match i % 50 {
            // A hardlink to the previous file, a symlink to the one before it.
            49 => {
                let mut h = header(tar::EntryType::Link, &path, 0o644, 0)?;
                h.set_link_name(format!("{dir}/f{:06}", i - 1))
                    .map_err(io)?;
                h.set_cksum();
                builder.append(&h, std::io::empty()).map_err(io)?;
            }
            48 => {
                let mut h = header(tar::EntryType::Symlink, &path, 0o777, 0)?;
                h.set_link_name(format!("f{:06}", i - 2)).map_err(io)?;
                h.set_cksum();
                builder.append(&h, std::io::empty()).map_err(io)?;
            }
            _ => {
                let size = big_layer_file_size(i);
                let mut h = header(tar::EntryType::Regular, &path, 0o644, size)?;
                h.set_cksum();
                let reader = PoolReader {
                    pool: &pool,
                    pos: ((i * 4099) % pool.len() as u64) as usize,
                    left: size,
                };
                builder.append(&h, reader).map_err(io)?;
                file_bytes += size;
            }
        }
        entries += 1;
    }
    let tar_writer = builder.into_inner().map_err(io)?;
    let diff_id = format!("sha256:{}", hex::encode(tar_writer.hasher.finalize()));
    let tar_bytes = tar_writer.bytes;
    let mut blob_writer = tar_writer.inner.finish().map_err(io)?;
    blob_writer.flush().map_err(io)?;
    Ok(BigLayer {
        digest: format!("sha256:{}", hex::encode(blob_writer.hasher.finalize())),
        diff_id,
        entries,
        file_bytes,
        tar_bytes,
        blob_bytes: blob_writer.bytes,
    })
}

/// Writes a one-layer OCI image archive around a blob written by [`write_big_layer_blob`].
pub fn write_big_layer_archive(
    archive: &Path,
    blob_path: &Path,
    layer: &BigLayer,
    name: &str,
) -> Result<(), TestError> {
    let io = |e: std::io::Error| TestError::io(archive, e);
    let json_bytes =
        |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| TestError::Build(e.to_string()));
    let host = Platform::host();
    let config = json_bytes(&json!({
        "architecture": host.architecture, "os": host.os,
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }))?;
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest, "size": layer.blob_bytes}],
    }))?;
    let index = json_bytes(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest_of(&manifest), "size": manifest.len(),
            "annotations": {IMAGE_NAME_ANNOTATION: name},
        }],
    }))?;
    let out = File::create(archive).map_err(io)?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    let mut add = |path: String, size: u64, data: &mut dyn Read| -> Result<(), TestError> {
        let mut h = header(tar::EntryType::Regular, &path, 0o644, size)?;
        h.set_cksum();
        builder.append(&h, data).map_err(io)
    };
    add(
        "oci-layout".into(),
        30,
        &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
    )?;
    add(
        "index.json".into(),
        index.len() as u64,
        &mut index.as_slice(),
    )?;
    for blob in [&config, &manifest] {
        add(
            format!(
                "blobs/sha256/{}",
                digest_of(blob).trim_start_matches("sha256:")
            ),
            blob.len() as u64,
            &mut blob.as_slice(),
        )?;
    }
    let mut blob = File::open(blob_path).map_err(|e| TestError::io(blob_path, e))?;
    add(
        format!(
            "blobs/sha256/{}",
            layer.digest.trim_start_matches("sha256:")
        ),
        layer.blob_bytes,
        &mut blob,
    )?;
    builder.into_inner().map_err(io)?.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_big_layer_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        let layer = write_big_layer_blob(&blob, 230).unwrap();
        let bytes = std::fs::read(&blob).unwrap();
        assert_eq!(digest_of(&bytes), layer.digest);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(digest_of(&tar), layer.diff_id);
        assert_eq!(tar.len() as u64, layer.tar_bytes);
        let mut archive = tar::Archive::new(tar.as_slice());
        assert_eq!(archive.entries().unwrap().count() as u64, layer.entries);
        // 230 files in 3 dirs; sizes follow big_layer_file_size.
        assert_eq!(layer.entries, 233);
        let expected: u64 = (0..230)
            .filter(|i| i % 50 < 48)
            .map(big_layer_file_size)
            .sum();
        assert_eq!(layer.file_bytes, expected);
        write_big_layer_archive(&dir.path().join("a.tar"), &blob, &layer, "t/big:1").unwrap();
    }
}
