//! Layer tarballs written header by header, so that tests control every byte containerd's
//! applier sees: raw names (also `..` and absolute ones), PAX long names and xattrs,
//! whiteouts, hardlinks whose header mode differs from the original's, devices and fifos.

use std::io::Write;

use super::digest_of;
use crate::TestError;

/// Default mtime of generated entries (2020-09-13); fixed so that layers are deterministic.
pub const DEFAULT_MTIME: u64 = 1_600_000_000;

/// What an entry is, with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryBody {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    /// Link name as written in the header (relative to the layer root).
    Hardlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One tar header (plus PAX records) of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// Name exactly as written into the archive (no cleaning).
    pub name: Vec<u8>,
    pub body: EntryBody,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Write the name as a PAX `path` record even when it would fit the header.
    pub pax_path: bool,
}

impl TarEntry {
    fn new(name: impl AsRef<[u8]>, body: EntryBody, mode: u32) -> Self {
        TarEntry {
            name: name.as_ref().to_vec(),
            body,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
            pax_path: false,
        }
    }

    pub fn dir(name: impl AsRef<[u8]>) -> Self {
        Self::new(name, EntryBody::Dir, 0o755)
    }

    pub fn file(name: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Self {
        Self::new(name, EntryBody::File(content.as_ref().to_vec()), 0o644)
    }

    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self::new(name, EntryBody::Symlink(target.as_ref().to_vec()), 0o777)
    }

    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self::new(name, EntryBody::Hardlink(target.as_ref().to_vec()), 0o644)
    }

    pub fn char_device(name: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        Self::new(name, EntryBody::CharDevice { major, minor }, 0o666)
    }

    pub fn block_device(name: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        Self::new(name, EntryBody::BlockDevice { major, minor }, 0o660)
    }

    pub fn fifo(name: impl AsRef<[u8]>) -> Self {
        Self::new(name, EntryBody::Fifo, 0o644)
    }

    /// `<dir>/.wh.<name>`: hides `<dir>/<name>` of the lower layers.
    pub fn whiteout(hidden_path: &str) -> Self {
        let (dir, base) = split_parent(hidden_path);
        Self::file(format!("{dir}.wh.{base}"), b"")
    }

    /// `<dir>/.wh..wh..opq`: hides everything of the lower layers in `dir`.
    pub fn opaque(dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        let name = if dir.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{dir}/.wh..wh..opq")
        };
        Self::file(name, b"")
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    pub fn pax_path(mut self) -> Self {
        self.pax_path = true;
        self
    }

    fn entry_type(&self) -> tar::EntryType {
        match self.body {
            EntryBody::Dir => tar::EntryType::Directory,
            EntryBody::File(_) => tar::EntryType::Regular,
            EntryBody::Symlink(_) => tar::EntryType::Symlink,
            EntryBody::Hardlink(_) => tar::EntryType::Link,
            EntryBody::CharDevice { .. } => tar::EntryType::Char,
            EntryBody::BlockDevice { .. } => tar::EntryType::Block,
            EntryBody::Fifo => tar::EntryType::Fifo,
        }
    }
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer to build: its entries in stream order and its compression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub entries: Vec<TarEntry>,
    pub compression: Compression,
}

impl LayerSpec {
    pub fn new(compression: Compression, entries: Vec<TarEntry>) -> Self {
        LayerSpec {
            entries,
            compression,
        }
    }

    pub fn gzip(entries: Vec<TarEntry>) -> Self {
        Self::new(Compression::Gzip, entries)
    }
}

/// A built layer: the blob as stored in the content store and its identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayer {
    pub compression: Compression,
    /// The uncompressed tar stream.
    pub tar: Vec<u8>,
    /// The blob (compressed as requested).
    pub blob: Vec<u8>,
    /// `sha256:<hex>` of `blob`.
    pub digest: String,
    /// `sha256:<hex>` of `tar`.
    pub diff_id: String,
}

/// Writes the entries as a tar stream, then compresses it.
pub fn build_layer(spec: &LayerSpec) -> Result<BuiltLayer, TestError> {
    let tar = write_tar(&spec.entries)?;
    let blob = compress(&tar, spec.compression)?;
    Ok(BuiltLayer {
        compression: spec.compression,
        digest: digest_of(&blob),
        diff_id: digest_of(&tar),
        tar,
        blob,
    })
}

/// Compresses deterministically (gzip header without mtime or name; fixed zstd level).
pub fn compress(data: &[u8], compression: Compression) -> Result<Vec<u8>, TestError> {
    let io = |e| TestError::Build(format!("compressing a layer: {e}"));
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).map_err(io)?;
            enc.finish().map_err(io)
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).map_err(io),
    }
}

/// Writes raw ustar headers, with a PAX header in front when a name, link name or xattr needs it.
pub fn write_tar(entries: &[TarEntry]) -> Result<Vec<u8>, TestError> {
    let io = |e: std::io::Error| TestError::Build(format!("writing a tar stream: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(entry.entry_type());
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(entry.mtime);
        let ustar = header
            .as_ustar_mut()
            .ok_or_else(|| TestError::Build("new_ustar header is not ustar".into()))?;
        if entry.pax_path || entry.name.len() > ustar.name.len() {
            pax.push(("path".into(), entry.name.clone()));
            let short = &entry.name[..entry.name.len().min(ustar.name.len())];
            ustar.name[..short.len()].copy_from_slice(short);
        } else {
            ustar.name[..entry.name.len()].copy_from_slice(&entry.name);
        }
        let link = match &entry.body {
            EntryBody::Symlink(t) | EntryBody::Hardlink(t) => Some(t),
            _ => None,
        };
        if let Some(link) = link {
            if link.len() > ustar.linkname.len() {
                pax.push(("linkpath".into(), link.clone()));
            } else {
                ustar.linkname[..link.len()].copy_from_slice(link);
            }
        }
        let data: &[u8] = match &entry.body {
            EntryBody::File(content) => content,
            _ => &[],
        };
        header.set_size(data.len() as u64);
        if let EntryBody::CharDevice { major, minor } | EntryBody::BlockDevice { major, minor } =
            entry.body
        {
            header.set_device_major(major).map_err(io)?;
            header.set_device_minor(minor).map_err(io)?;
        }
        for (name, value) in &entry.xattrs {
            pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
        header.set_cksum();
        if !pax.is_empty() {
            builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io)?;
        }
        builder.append(&header, data).map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, type, mode, link name) of each entry.
    type ReadBack = (Vec<u8>, tar::EntryType, u32, Option<Vec<u8>>);

    fn read_back(tar: &[u8]) -> Vec<ReadBack> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                (
                    e.path_bytes().into_owned(),
                    e.header().entry_type(),
                    e.header().mode().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn long_names_and_links_go_into_pax_records() {
        let long = format!("{}/file", "d".repeat(150));
        let target = format!("/{}", "t".repeat(120));
        let tar =
            write_tar(&[TarEntry::file(&long, b"x"), TarEntry::symlink("s", &target)]).unwrap();
        let back = read_back(&tar);
        assert_eq!(back[0].0, long.as_bytes());
        assert_eq!(back[1].3.as_deref(), Some(target.as_bytes()));
    }

    #[test]
    fn raw_names_are_written_uncleaned() {
        let tar = write_tar(&[
            TarEntry::file("../escape", b"x"),
            TarEntry::file("/abs", b"y"),
        ])
        .unwrap();
        let names: Vec<_> = read_back(&tar).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec![b"../escape".to_vec(), b"/abs".to_vec()]);
    }

    #[test]
    fn whiteout_and_opaque_names() {
        assert_eq!(TarEntry::whiteout("etc/foo").name, b"etc/.wh.foo");
        assert_eq!(TarEntry::whiteout("top").name, b".wh.top");
        assert_eq!(TarEntry::opaque("var/lib/").name, b"var/lib/.wh..wh..opq");
        assert_eq!(TarEntry::opaque("").name, b".wh..wh..opq");
    }

    #[test]
    fn xattrs_are_schily_pax_records() {
        let tar = write_tar(&[TarEntry::file("f", b"").xattr("user.k", b"v")]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let pax: Vec<(String, Vec<u8>)> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_string(), r.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            pax,
            vec![("SCHILY.xattr.user.k".to_string(), b"v".to_vec())]
        );
    }

    #[test]
    fn layers_are_deterministic_and_digests_match() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let spec = LayerSpec::new(
                c,
                vec![
                    TarEntry::dir("a"),
                    TarEntry::file("a/b", b"hello").mode(0o4755),
                ],
            );
            let one = build_layer(&spec).unwrap();
            let two = build_layer(&spec).unwrap();
            assert_eq!(one, two, "{c:?}");
            assert_eq!(one.diff_id, digest_of(&one.tar));
            assert_eq!(one.digest, digest_of(&one.blob));
            assert_eq!(c == Compression::None, one.digest == one.diff_id);
        }
    }

    #[test]
    fn devices_carry_their_numbers() {
        let tar = write_tar(&[
            TarEntry::char_device("dev/null", 1, 3),
            TarEntry::block_device("dev/loop9", 7, 9),
        ])
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let majors: Vec<(u32, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.header().device_major().unwrap().unwrap(),
                    e.header().device_minor().unwrap().unwrap(),
                )
            })
            .collect();
        assert_eq!(majors, vec![(1, 3), (7, 9)]);
    }
}
