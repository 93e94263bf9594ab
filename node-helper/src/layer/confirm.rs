//! After a repair: confirm from the disk that every entry the repair touched now matches the
//! model, and that every file it restored holds exactly the bytes it staged from the verified
//! blob (sha256 taken while staging, read back after the rename). Everything else was compared
//! by the repair's own pass, under the snapshot lock, so only what changed is looked at again;
//! when most of the tree was rebuilt, the whole tree is walked instead.

use crate::workers::{map_chunks, workers_for};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::OFlag;

use super::compare::{ContentVerdict, Diff, diff_scoped};
use super::expected::{EntryKind, InodeId, LayerModel};
use super::header::read_full;
use super::observe::{Observation, observe_path, observe_tree};
use super::pass::ContentDigest;
use super::safe_fs::{Beneath, fd_child_path};
use crate::stage_profile::{self as profile, Stage};

/// What a repair changed inside `fs`.
#[derive(Debug, Default)]
pub struct Touched {
    /// Model paths it restored and extra paths it removed.
    pub paths: HashSet<Vec<u8>>,
    /// It created `fs` or changed the root's opaque marker.
    pub root: bool,
}

impl Touched {
    pub fn from_diff(diff: &Diff, fs_created: bool) -> Self {
        let mut paths: HashSet<Vec<u8>> = diff.needs.keys().cloned().collect();
        paths.extend(diff.extras.iter().cloned());
        Touched {
            paths,
            root: fs_created || diff.root_opaque.is_some(),
        }
    }

    /// Walking everything beats one lookup per path once most of the tree was touched.
    fn walk_whole_tree(&self, model: &LayerModel) -> bool {
        self.paths.len() * 4 > model.len()
    }
}

/// Paths that no longer resolve beneath `fs` (gone, or a parent is not a plain directory).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
    )
}

fn observe_touched(fs: &Beneath, touched: &Touched) -> io::Result<Observation> {
    let mut obs = Observation::default();
    if touched.root {
        obs.root = Some(observe_path(fs.path())?);
    }
    for path in &touched.paths {
        let (parent, base) = match fs.open_parent(path) {
            Ok(x) => x,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e),
        };
        match observe_path(&fd_child_path(&parent, base)) {
            Ok(o) => {
                obs.entries.insert(path.clone(), o);
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(obs)
}

fn sha256_of(fs: &Beneath, path: &[u8], buf: &mut [u8]) -> io::Result<ContentDigest> {
    use sha2::Digest;
    let opening = profile::time(Stage::FileOpens);
    let mut file =
        File::from(fs.open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)?);
    drop(opening);
    let mut hasher = sha2::Sha256::new();
    loop {
        let mut reading = profile::time(Stage::FileReads);
        let n = read_full(&mut file, buf)?;
        reading.bytes(n as u64);
        drop(reading);
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        let mut hashing = profile::time(Stage::FileHashes);
        hashing.bytes(n as u64);
        hasher.update(&buf[..n]);
    }
}

/// Reads back every restored file (at one of its paths) and compares it with what was staged.
/// A file that cannot be read counts as different; the observation says why.
fn content_verdicts(
    fs: &Beneath,
    model: &LayerModel,
    touched: &Touched,
    written: &HashMap<InodeId, ContentDigest>,
) -> HashMap<InodeId, ContentVerdict> {
    let mut seen = HashSet::new();
    let jobs: Vec<(InodeId, &[u8])> = model
        .entries()
        .filter(|(p, id)| {
            matches!(model.inode(*id).kind, EntryKind::File)
                && written.contains_key(id)
                && touched.paths.contains(*p)
                && seen.insert(*id)
        })
        .map(|(p, id)| (id, p))
        .collect();
    map_chunks(&jobs, workers_for(jobs.len(), 256), |part| {
        profile::role("confirm");
        let mut buf = vec![0u8; 256 * 1024];
        part.iter()
            .map(|(id, path)| {
                let same = sha256_of(fs, path, &mut buf).ok().as_ref() == written.get(id);
                let verdict = if same {
                    ContentVerdict::Same
                } else {
                    ContentVerdict::Differs
                };
                (*id, verdict)
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The findings that remain after a repair among what it touched (all of them when the whole
/// tree was walked). Empty means the repair is confirmed.
pub fn confirm_repair(
    fs_path: &Path,
    model: &LayerModel,
    touched: &Touched,
    written: &HashMap<InodeId, ContentDigest>,
    anchors: &HashMap<InodeId, Vec<u8>>,
) -> io::Result<Diff> {
    let fs = match Beneath::open(fs_path) {
        Ok(b) => b,
        // The fs directory itself is gone again: everything is missing.
        Err(e) if is_absent(&e) => {
            return Ok(diff_scoped(
                model,
                &Observation::default(),
                &HashMap::new(),
                anchors,
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    let content = content_verdicts(&fs, model, touched, written);
    if touched.walk_whole_tree(model) {
        let obs = observe_tree(fs_path, crate::workers::io_threads())?.unwrap_or_default();
        Ok(diff_scoped(model, &obs, &content, anchors, None))
    } else {
        let obs = observe_touched(&fs, touched)?;
        Ok(diff_scoped(
            model,
            &obs,
            &content,
            anchors,
            Some(&touched.paths),
        ))
    }
}
