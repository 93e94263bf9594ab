//! One streaming pass over a layer blob: sha256 of the stored bytes, decompression (gzip,
//! zstd or none, chosen like containerd), sha256 of the whole tar stream (bytes after the
//! end marker included) and a walk of the tar entries.
//!
//! The inflate thread reads the blob in 1 MiB pieces and inflates it into recycled 1 MiB
//! chunks; the caller's thread walks the tar and visits entries; two more threads hash the
//! stored pieces (digest) and the inflated chunks (diffID) from the same buffers. On two cores
//! that keeps both busy: no stage waits behind a hash that another core could run.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use sha2::{Digest, Sha256};

use super::header::{TarHeader, TarReader};
use crate::stage_profile::{self as profile, Stage};

const CHUNK: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// containerd: the plain OCI tar media types are never decompressed; everything else is
/// auto-detected from its magic bytes (gzip, zstd incl. skippable frames, else none).
pub fn compression_for(media_type: &str, magic: &[u8]) -> Compression {
    const PLAIN: [&str; 2] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ];
    if PLAIN.contains(&media_type) {
        return Compression::None;
    }
    if magic.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Compression::Gzip;
    }
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Compression::Zstd;
    }
    if magic.len() >= 4 {
        let m = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
        if (0x184D_2A50..=0x184D_2A5F).contains(&m) {
            return Compression::Zstd;
        }
    }
    Compression::None
}

/// Digests of a fully read blob, `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobDigests {
    pub compressed: String,
    pub uncompressed: String,
}

#[derive(Debug)]
pub enum StreamError {
    /// The blob file does not exist.
    Missing,
    /// The stored bytes could not be read at all.
    Io(io::Error),
    /// The bytes were read, but do not inflate or do not parse as tar. `compressed` is the
    /// digest of the stored bytes (so a corrupted blob can be told from a garbage layer).
    Unreadable {
        reason: String,
        compressed: Option<String>,
    },
    /// The visitor stopped the stream.
    Visitor(crate::Error),
}

fn hex_digest(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Feeds the stored bytes to the decoder and, in the same 1 MiB pieces, to the blob-digest
/// thread: the digest costs the inflate thread nothing but a channel send.
struct DigestTee {
    file: File,
    digest: Sender<Arc<Vec<u8>>>,
    piece: Arc<Vec<u8>>,
    pos: usize,
    eof: bool,
}

impl DigestTee {
    /// Reads the next piece of the blob and hands it to the digest thread.
    fn refill(&mut self) -> io::Result<()> {
        // The digest thread usually let go of the last piece already: reuse it.
        if Arc::get_mut(&mut self.piece).is_none() {
            self.piece = Arc::new(Vec::with_capacity(CHUNK));
        }
        let buf = Arc::make_mut(&mut self.piece);
        buf.resize(CHUNK, 0);
        let mut reading = profile::time(Stage::ReadBlob);
        let read = super::header::read_full(&mut self.file, buf);
        let n = *read.as_ref().unwrap_or(&0);
        reading.bytes(n as u64);
        drop(reading);
        buf.truncate(n);
        self.pos = 0;
        read?;
        self.eof = n == 0;
        if n > 0 {
            // The digest thread is gone only when the stream is being abandoned.
            let _ = self.digest.send(Arc::clone(&self.piece));
        }
        Ok(())
    }
}

impl Read for DigestTee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.piece.len() {
            if self.eof {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.piece.len() - self.pos);
        buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl io::BufRead for DigestTee {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.piece.len() && !self.eof {
            self.refill()?;
        }
        Ok(&self.piece[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.piece.len());
    }
}

/// Hashes pieces in the order sent until the senders are gone.
/// Bytes handed to a hashing thread: inflated chunks (recycled) or shared blob pieces.
trait Piece {
    fn bytes(&self) -> &[u8];
}

impl Piece for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Piece for Arc<Vec<u8>> {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

fn hash_pieces<T: Piece>(stage: Stage, rx: Receiver<T>, recycle: Option<Sender<T>>) -> Sha256 {
    let mut hasher = Sha256::new();
    for piece in rx {
        let mut t = profile::time(stage);
        t.bytes(piece.bytes().len() as u64);
        hasher.update(piece.bytes());
        drop(t);
        if let Some(r) = &recycle {
            let _ = r.try_send(piece);
        }
    }
    hasher
}

enum Msg {
    Data(Vec<u8>),
    Failed(String),
}

/// Hands out inflated chunks to the tar reader; each chunk, once read to its end, goes to the
/// diffID thread (which recycles it to the inflate thread).
struct ChunkReader {
    rx: Receiver<Msg>,
    to_hash: Option<Sender<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChunkReader {
    /// Sends what was read of the current chunk to the diffID thread.
    fn pass_on(&mut self) {
        let mut old = std::mem::take(&mut self.current);
        old.truncate(self.pos);
        self.pos = 0;
        if !old.is_empty()
            && let Some(tx) = &self.to_hash
        {
            let _ = tx.send(old);
        }
    }

    /// The stream is over: the diffID thread gets the last bytes read, then its end.
    fn finish(&mut self) {
        self.pass_on();
        self.to_hash = None;
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            self.pass_on();
            let waited = profile::time(Stage::WaitForInflate);
            let received = self.rx.recv();
            drop(waited);
            match received {
                Ok(Msg::Data(d)) => self.current = d,
                Ok(Msg::Failed(reason)) => {
                    self.done = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
                }
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Inflate thread: reads the blob (through the digest tee) and inflates it into chunks; the
/// stored bytes are always read to their end, so the digest covers every one of them.
fn produce(
    mut src: DigestTee,
    compression: Compression,
    tx: Sender<Msg>,
    recycle: Receiver<Vec<u8>>,
    cancel: &AtomicBool,
) -> io::Result<()> {
    profile::role("inflate");
    let outcome: Result<(), String> = (|| {
        let mut decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut src),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut src)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut src)
                    .map_err(|e| format!("zstd: {e}"))?,
            ),
        };
        loop {
            let mut buf = recycle
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            let mut inflating = profile::time(Stage::Inflate);
            while filled < CHUNK {
                match decoder.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("{compression:?} stream: {e}")),
                }
            }
            inflating.bytes(filled as u64);
            drop(inflating);
            buf.truncate(filled);
            if filled == 0 {
                return Ok(());
            }
            let waiting = profile::time(Stage::WaitForTar);
            if tx.send(Msg::Data(buf)).is_err() || cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            drop(waiting);
        }
    })();
    if let Err(reason) = outcome {
        let _ = tx.send(Msg::Failed(reason));
    }
    drop(tx);
    // The digest covers every stored byte, whatever the decoder left unread.
    src.pos = src.piece.len();
    while !src.eof && !cancel.load(Ordering::Relaxed) {
        src.refill()?;
    }
    Ok(())
}

/// Streams the blob once, calling `visit(header, ordinal, data)` for every tar entry in order.
///
/// Four threads share the work: this one (tar and `visit`), the inflate thread, and one
/// thread each for the blob digest and the diffID, fed the same buffers (nothing is copied
/// for them).
pub fn stream_layer<F>(
    blob_path: &Path,
    media_type: &str,
    mut visit: F,
) -> Result<BlobDigests, StreamError>
where
    F: FnMut(&TarHeader, u64, &mut dyn Read) -> Result<(), crate::Error>,
{
    let mut file = match File::open(blob_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StreamError::Missing),
        Err(e) => return Err(StreamError::Io(e)),
    };
    let mut magic = [0u8; 8];
    let got = super::header::read_full(&mut file, &mut magic).map_err(StreamError::Io)?;
    let compression = compression_for(media_type, &magic[..got]);
    let file = {
        use std::io::Seek;
        let mut f = file;
        f.seek(io::SeekFrom::Start(0)).map_err(StreamError::Io)?;
        f
    };
    let cancel = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = bounded::<Msg>(CHUNKS_IN_FLIGHT);
        let (hash_tx, hash_rx) = bounded::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(2 * CHUNKS_IN_FLIGHT + 2);
        let (blob_tx, blob_rx) = bounded::<Arc<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let cancel_ref = &cancel;
        let blob_digest = scope.spawn(move || {
            let _profiled = profile::ThreadGuard::new();
            profile::role("blob-digest");
            hash_pieces(Stage::BlobDigest, blob_rx, None)
        });
        let diff_id = scope.spawn(move || {
            let _profiled = profile::ThreadGuard::new();
            profile::role("diffid-hash");
            hash_pieces(Stage::DiffIdHash, hash_rx, Some(recycle_tx))
        });
        let src = DigestTee {
            file,
            digest: blob_tx,
            piece: Arc::new(Vec::new()),
            pos: 0,
            eof: false,
        };
        let producer = scope.spawn(move || {
            let _profiled = profile::ThreadGuard::new();
            produce(src, compression, tx, recycle_rx, cancel_ref)
        });
        let mut reader = ChunkReader {
            rx,
            to_hash: Some(hash_tx),
            current: Vec::new(),
            pos: 0,
            done: false,
        };
        let walked = walk_tar(&mut reader, &mut visit);
        let walked = walked.and_then(|()| {
            io::copy(&mut reader, &mut io::sink())
                .map(|_| ())
                .map_err(|e| WalkError::Tar(e.to_string()))
        });
        if matches!(walked, Err(WalkError::Visitor(_))) {
            cancel.store(true, Ordering::Relaxed);
        }
        reader.finish();
        drop(reader);
        let produced = join(producer);
        let compressed = hex_digest(join(blob_digest));
        let uncompressed = hex_digest(join(diff_id));
        match (walked, produced) {
            (Err(WalkError::Visitor(e)), _) => Err(StreamError::Visitor(e)),
            (Ok(()), Ok(())) => Ok(BlobDigests {
                compressed,
                uncompressed,
            }),
            (Err(WalkError::Tar(reason)), Ok(())) => Err(StreamError::Unreadable {
                reason,
                compressed: Some(compressed),
            }),
            (_, Err(e)) => Err(StreamError::Io(e)),
        }
    })
}

/// A thread's result; its panic is re-raised (the engine's one panic policy, `workers`),
/// never reported as a bad blob.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

enum WalkError {
    Tar(String),
    Visitor(crate::Error),
}

fn walk_tar<F>(reader: &mut ChunkReader, visit: &mut F) -> Result<(), WalkError>
where
    F: FnMut(&TarHeader, u64, &mut dyn Read) -> Result<(), crate::Error>,
{
    let mut tar = TarReader::new(reader);
    let mut ordinal = 0u64;
    while let Some(header) = profile::timed(Stage::TarParse, || tar.next_header())
        .map_err(|e| WalkError::Tar(format!("tar: {e}")))?
    {
        let mut data = tar.data();
        visit(&header, ordinal, &mut data).map_err(WalkError::Visitor)?;
        // A short (or, sparse, overlong) data section is a broken tar: read it to its end
        // here, as containerd's copy does, so the error is the tar's.
        profile::timed(Stage::TarParse, || io::copy(&mut data, &mut io::sink()))
            .map_err(|e| WalkError::Tar(format!("tar data: {e}")))?;
        ordinal += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "a/b", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn collect(path: &Path, media: &str) -> Result<(BlobDigests, Entries), StreamError> {
        let mut seen = Vec::new();
        let d = stream_layer(path, media, |h, _, data| {
            let mut v = Vec::new();
            data.read_to_end(&mut v).unwrap();
            seen.push((h.name.clone(), v));
            Ok(())
        })?;
        Ok((d, seen))
    }

    #[test]
    fn gzip_zstd_and_plain_layers_give_the_same_entries_and_diff_id() {
        let tar = sample_tar();
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&tar[..], 3).unwrap();
        for (name, bytes, media) in [
            (
                "gz",
                &gz,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            ("zst", &zs, "application/vnd.oci.image.layer.v1.tar+zstd"),
            ("tar", &tar, "application/vnd.oci.image.layer.v1.tar"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let (d, seen) = collect(&p, media).unwrap();
            assert_eq!(d.compressed, sha(bytes), "{name}");
            assert_eq!(
                d.uncompressed,
                sha(&tar),
                "{name}: diffID covers bytes after the end marker"
            );
            assert_eq!(seen, vec![(b"a/b".to_vec(), b"hello".to_vec())]);
        }
    }

    #[test]
    fn plain_oci_tar_media_type_is_never_decompressed() {
        assert_eq!(
            compression_for(
                "application/vnd.oci.image.layer.v1.tar",
                &[0x1f, 0x8b, 0x08]
            ),
            Compression::None
        );
        assert_eq!(
            compression_for(
                "application/vnd.docker.image.rootfs.diff.tar",
                &[0x1f, 0x8b, 0x08]
            ),
            Compression::Gzip
        );
        assert_eq!(
            compression_for("x", &[0x5e, 0x2a, 0x4d, 0x18]),
            Compression::Zstd
        );
    }

    #[test]
    fn truncated_gzip_is_unreadable_with_the_stored_digest() {
        let tar = sample_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let cut = &gz[..gz.len() / 2];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, cut).unwrap();
        match collect(&p, "application/vnd.oci.image.layer.v1.tar+gzip") {
            Err(StreamError::Unreadable { compressed, .. }) => {
                assert_eq!(compressed, Some(sha(cut)))
            }
            other => panic!("expected Unreadable, got {:?}", other.map(|r| r.0)),
        }
    }

    #[test]
    fn garbage_and_missing_blobs_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let mut garbage = vec![0x1f, 0x8b, 0x08];
        garbage.extend(std::iter::repeat_n(0xAB, 4000));
        std::fs::write(&p, &garbage).unwrap();
        assert!(matches!(
            collect(&p, "application/vnd.oci.image.layer.v1.tar+gzip"),
            Err(StreamError::Unreadable { .. })
        ));
        assert!(matches!(
            collect(&dir.path().join("none"), "x"),
            Err(StreamError::Missing)
        ));
    }
}
