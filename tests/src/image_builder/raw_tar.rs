//! Tar streams written block by block, for the format edge cases the entry-based builder
//! cannot express (GNU sparse and long names, PAX overrides and globals, base-256 numbers,
//! v7 headers, signed checksums, missing or extra end blocks), and single-platform images whose
//! layers are such raw streams.

use std::path::Path;

use serde_json::json;

use super::oci_archive::{BuiltImage, ImageLayer, Platform};
use super::tar_layer::{BuiltLayer, Compression, compress};
use super::{chain_ids, digest_of};
use crate::TestError;

pub const BLOCK: usize = 512;

/// Which header layout (magic/version and where the long fields are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// `ustar\0` `00`: POSIX, with a 155-byte name prefix.
    Ustar,
    /// `ustar ` ` \0`: GNU (no prefix; the old sparse map lives there).
    Gnu,
    /// No magic at all: the original Unix v7 layout.
    V7,
}

/// How a numeric field is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    Octal,
    /// GNU base-256: first byte 0x80, big-endian value in the rest.
    Base256,
}

/// How the checksum is summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Unsigned,
    /// Bytes summed as `i8`, as some old tars (and Sun tar) did; readers accept both.
    Signed,
}

/// One 512-byte header, field by field.
#[derive(Clone, Debug)]
pub struct RawHeader {
    pub name: Vec<u8>,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
    pub magic: Magic,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    /// Ustar only.
    pub prefix: Vec<u8>,
    /// Encoding of uid, gid, size and mtime.
    pub num: Num,
    pub checksum: Checksum,
    /// Old GNU sparse map in the header: (offset, length) pairs (at most 4) and the real size.
    pub gnu_sparse: Option<(Vec<(u64, u64)>, u64)>,
}

impl RawHeader {
    pub fn new(typeflag: u8, name: impl AsRef<[u8]>) -> Self {
        RawHeader {
            name: name.as_ref().to_vec(),
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: 0,
            mtime: super::DEFAULT_MTIME,
            typeflag,
            linkname: Vec::new(),
            magic: Magic::Ustar,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            devmajor: 0,
            devminor: 0,
            prefix: Vec::new(),
            num: Num::Octal,
            checksum: Checksum::Unsigned,
            gnu_sparse: None,
        }
    }

    pub fn file(name: impl AsRef<[u8]>, size: usize) -> Self {
        let mut h = Self::new(b'0', name);
        h.size = size as u64;
        h
    }

    pub fn link(typeflag: u8, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let mut h = Self::new(typeflag, name);
        h.linkname = target.as_ref().to_vec();
        if typeflag == b'2' {
            h.mode = 0o777;
        }
        h
    }

    /// The 512 bytes.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        put_bytes(&mut b[0..100], &self.name);
        put_octal(&mut b[100..108], self.mode);
        let num = |b: &mut [u8], v: u64| match self.num {
            Num::Octal => put_octal(b, v),
            Num::Base256 => put_base256(b, v),
        };
        num(&mut b[108..116], self.uid);
        num(&mut b[116..124], self.gid);
        num(&mut b[124..136], self.size);
        num(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        put_bytes(&mut b[157..257], &self.linkname);
        match self.magic {
            Magic::Ustar => {
                b[257..263].copy_from_slice(b"ustar\0");
                b[263..265].copy_from_slice(b"00");
            }
            Magic::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
            Magic::V7 => {}
        }
        if self.magic != Magic::V7 {
            put_bytes(&mut b[265..297], &self.uname);
            put_bytes(&mut b[297..329], &self.gname);
            put_octal(&mut b[329..337], self.devmajor);
            put_octal(&mut b[337..345], self.devminor);
        }
        if self.magic == Magic::Ustar {
            put_bytes(&mut b[345..500], &self.prefix);
        }
        if let Some((map, real)) = &self.gnu_sparse {
            // GNU header: sparse[4] at 386 (24 bytes each), isextended at 482, realsize at 483.
            for (i, (off, len)) in map.iter().take(4).enumerate() {
                let at = 386 + i * 24;
                put_octal(&mut b[at..at + 12], *off);
                put_octal(&mut b[at + 12..at + 24], *len);
            }
            put_octal(&mut b[483..495], *real);
        }
        b[148..156].copy_from_slice(b"        ");
        let sum: i64 = match self.checksum {
            Checksum::Unsigned => b.iter().map(|&x| x as i64).sum(),
            Checksum::Signed => b.iter().map(|&x| x as i8 as i64).sum(),
        };
        // 6 octal digits, NUL, space (as GNU tar writes it); negative sums cannot happen here.
        let s = format!("{:06o}\0 ", sum.max(0));
        b[148..156].copy_from_slice(s.as_bytes());
        b
    }
}

fn put_bytes(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// Zero-padded octal, NUL-terminated (`size` gets 11 digits).
fn put_octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let s = s.as_bytes();
    let start = s.len().saturating_sub(field.len() - 1);
    let s = &s[start..];
    field[..s.len()].copy_from_slice(s);
    field[field.len() - 1] = 0;
}

fn put_base256(field: &mut [u8], v: u64) {
    field.fill(0);
    field[0] = 0x80;
    let bytes = v.to_be_bytes();
    let n = bytes.len().min(field.len() - 1);
    let len = field.len();
    field[len - n..].copy_from_slice(&bytes[8 - n..]);
    field[0] |= 0x80;
}

/// A tar stream under construction.
#[derive(Clone, Debug, Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn header(mut self, h: &RawHeader) -> Self {
        self.bytes.extend_from_slice(&h.encode());
        self
    }

    /// Data padded to a whole block.
    pub fn data(mut self, data: &[u8]) -> Self {
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file (ustar header) with its data.
    pub fn file(self, name: impl AsRef<[u8]>, data: &[u8]) -> Self {
        self.header(&RawHeader::file(name, data.len())).data(data)
    }

    /// A header with its data (the header's size is set to the data's length).
    pub fn entry(self, mut h: RawHeader, data: &[u8]) -> Self {
        h.size = data.len() as u64;
        self.header(&h).data(data)
    }

    /// A PAX extended (`x`) or global (`g`) header with its records.
    pub fn pax(self, typeflag: u8, records: &[(&str, &[u8])]) -> Self {
        let body = pax_records(records);
        let mut h = RawHeader::new(typeflag, "PaxHeaders.0/entry");
        h.size = body.len() as u64;
        self.header(&h).data(&body)
    }

    /// A GNU long name (`L`) or long link (`K`) pseudo-entry; `value` is written as given
    /// (GNU tar adds one NUL).
    pub fn gnu_long(self, typeflag: u8, value: &[u8]) -> Self {
        let mut h = RawHeader::new(typeflag, "././@LongLink");
        h.magic = Magic::Gnu;
        h.size = value.len() as u64;
        self.header(&h).data(value)
    }

    /// The two zero blocks that end an archive.
    pub fn end(mut self) -> Self {
        self.bytes.extend(std::iter::repeat_n(0u8, 2 * BLOCK));
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }
}

/// `"%d %s=%s\n"` records, the length counting itself.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body_len = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A single-platform image whose layers are raw tar streams.
#[derive(Clone, Debug)]
pub struct RawImage {
    pub name: String,
    pub layers: Vec<RawLayer>,
}

/// A layer: its tar stream (whose digest is the diffID), the stored blob and its media type.
#[derive(Clone, Debug)]
pub struct RawLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
    pub compression: Compression,
}

impl RawLayer {
    /// The tar compressed as asked, with the matching OCI media type.
    pub fn new(tar: Vec<u8>, compression: Compression) -> Result<Self, TestError> {
        Ok(RawLayer {
            blob: compress(&tar, compression)?,
            media_type: layer_type(compression).into(),
            tar,
            compression,
        })
    }

    /// Any stored bytes under any media type (a blob that does not match its media type).
    pub fn custom(tar: Vec<u8>, blob: Vec<u8>, media_type: &str) -> Self {
        RawLayer {
            tar,
            blob,
            media_type: media_type.into(),
            compression: Compression::None,
        }
    }
}

fn layer_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Writes the images as one OCI layout tarball for `ctr images import`.
pub fn write_raw_oci_archive(
    images: &[RawImage],
    path: &Path,
) -> Result<Vec<BuiltImage>, TestError> {
    let js = |v: &serde_json::Value| {
        serde_json::to_vec(v).map_err(|e| TestError::Build(format!("JSON: {e}")))
    };
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |bytes: Vec<u8>, media: &str| {
        let d = digest_of(&bytes);
        let desc = json!({"mediaType": media, "digest": d, "size": bytes.len()});
        if !blobs.iter().any(|(x, _)| *x == d) {
            blobs.push((d, bytes));
        }
        desc
    };
    let mut entries = Vec::new();
    let mut built = Vec::new();
    let host = Platform::host();
    for image in images {
        let diff_ids: Vec<String> = image.layers.iter().map(|l| digest_of(&l.tar)).collect();
        let mut descs = Vec::new();
        let mut image_layers = Vec::new();
        for (layer, chain_id) in image.layers.iter().zip(chain_ids(&diff_ids)) {
            descs.push(add(layer.blob.clone(), &layer.media_type));
            image_layers.push(ImageLayer {
                media_type: layer.media_type.clone(),
                chain_id,
                built: BuiltLayer {
                    compression: layer.compression,
                    digest: digest_of(&layer.blob),
                    diff_id: digest_of(&layer.tar),
                    tar: layer.tar.clone(),
                    blob: layer.blob.clone(),
                },
            });
        }
        let config = json!({
            "architecture": host.architecture, "os": host.os,
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_desc = add(js(&config)?, "application/vnd.oci.image.config.v1+json");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc, "layers": descs,
        });
        let mut desc = add(js(&manifest)?, "application/vnd.oci.image.manifest.v1+json");
        let manifest_digest = desc["digest"].as_str().unwrap_or_default().to_string();
        built.push(BuiltImage {
            name: image.name.clone(),
            target_digest: manifest_digest.clone(),
            manifest_digest,
            config_digest: config_desc["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            layers: image_layers,
        });
        desc["annotations"] = json!({ super::IMAGE_NAME_ANNOTATION: image.name });
        entries.push(desc);
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let mut out = RawTar::new()
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", &js(&index)?);
    for (digest, bytes) in &blobs {
        let hex = digest.trim_start_matches("sha256:");
        out = out.file(format!("blobs/sha256/{hex}"), bytes);
    }
    let out = out.end();
    std::fs::write(path, out.bytes).map_err(|e| TestError::io(path, e))?;
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_records(&[("path", b"a")]), b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_records(&[("path", &long)]);
        let len: usize = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn headers_read_back_with_the_tar_crate() {
        let mut h = RawHeader::file("a/b", 3);
        h.num = Num::Base256;
        h.uid = 70000;
        let tar = RawTar::new().entry(h, b"abc").end().bytes;
        let mut ar = tar::Archive::new(tar.as_slice());
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), b"a/b");
        assert_eq!(e.header().uid().unwrap(), 70000);
        assert_eq!(e.size(), 3);
    }
}
