//! A private containerd with images imported and the node helper bound to it, plus the
//! snapshot captures the verify/repair/crash/hostile tests compare against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::fs_tree::{TreeSnapshot, capture_tree, capture_tree_except, tar_mtime_paths};
use crate::image_builder::{BuiltImage, ImageSpec};

use super::{Content, NodeHelper};

pub struct Scenario {
    pub fixture: ContainerdFixture,
    pub helper: NodeHelper,
    pub images: Vec<BuiltImage>,
}

/// The snapshots of one image right after import: what containerd's own unpack produced.
pub struct PristineImage {
    pub name: String,
    pub layers: Vec<PristineLayer>,
}

pub struct PristineLayer {
    /// `snapshots/<id>/fs`.
    pub fs: PathBuf,
    pub tree: TreeSnapshot,
    /// Entries whose mtime comes from the tar.
    pub mtime_paths: BTreeSet<String>,
}

impl Scenario {
    /// Locates the helper binary (first, so a missing build fails fast), starts a private
    /// containerd and imports the images.
    pub fn start(images: &[ImageSpec]) -> Result<Self, TestError> {
        let binary = super::node_helper_binary()?;
        let fixture = ContainerdFixture::start()?;
        let built = fixture.import_images(images)?;
        let helper = NodeHelper {
            binary,
            root: fixture.root(),
            config: fixture.config_path(),
        };
        Ok(Scenario {
            fixture,
            helper,
            images: built,
        })
    }

    pub fn image(&self, name: &str) -> &BuiltImage {
        self.images
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("test bug: image {name} was not imported"))
    }

    /// Snapshot `fs` of each layer, bottom first, as the helper reports them.
    pub fn layer_fs(&self, name: &str) -> Result<Vec<PathBuf>, TestError> {
        self.helper.snapshot_paths(name)
    }

    /// Captures every layer of an image (call right after import).
    pub fn capture_pristine(&self, name: &str) -> Result<PristineImage, TestError> {
        let image = self.image(name);
        let fs = self.layer_fs(name)?;
        if fs.len() != image.layers.len() {
            return Err(TestError::NodeHelper(format!(
                "{name}: report has {} layers, the image {}",
                fs.len(),
                image.layers.len()
            )));
        }
        let layers = fs
            .into_iter()
            .zip(&image.layers)
            .map(|(fs, layer)| {
                Ok(PristineLayer {
                    tree: capture_tree(&fs)?,
                    mtime_paths: tar_mtime_paths(&layer.built.tar)?,
                    fs,
                })
            })
            .collect::<Result<_, TestError>>()?;
        Ok(PristineImage {
            name: name.into(),
            layers,
        })
    }

    /// Everything under the containerd root except the given snapshot dirs (`snapshots/<id>`),
    /// for "nothing outside that snapshot changed".
    pub fn capture_root_except(
        &self,
        snapshot_dirs: &[PathBuf],
    ) -> Result<TreeSnapshot, TestError> {
        capture_tree_except(&self.fixture.root(), snapshot_dirs)
    }

    /// Verify must call the image Healthy (exit 0).
    pub fn assert_healthy(&self, name: &str) {
        let run = self.helper.verify(name, Content::Full).expect("run verify");
        assert_eq!(run.code, Some(0), "{run}");
        let report = run.report().expect("report");
        assert_eq!(report.outcome, snapmend_crds::Outcome::Healthy, "{run}");
    }
}

impl PristineImage {
    /// Differences of the current snapshots from the pristine ones, prefixed by layer index.
    pub fn differences_now(&self) -> Result<Vec<String>, TestError> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let now = if layer.fs.exists() {
                capture_tree(&layer.fs)?
            } else {
                empty_tree()
            };
            out.extend(
                now.differences_from(&layer.tree, &layer.mtime_paths)
                    .into_iter()
                    .map(|d| format!("layer {i}: {d}")),
            );
        }
        Ok(out)
    }

    /// `layer <i>: <path>` of every entry that differs from the pristine capture in anything
    /// but mtime: the measure of "no worse" after a crash.
    pub fn damaged_entries(&self) -> Result<BTreeSet<String>, TestError> {
        let mut out = BTreeSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let now = if layer.fs.exists() {
                capture_tree(&layer.fs)?
            } else {
                empty_tree()
            };
            for d in now.differences_from(&layer.tree, &BTreeSet::new()) {
                let path = d.split(": ").next().unwrap_or_default().to_string();
                out.insert(format!("layer {i}: {path}"));
            }
        }
        Ok(out)
    }

    /// Entries a repair left in `snapshots/<id>` besides `fs` and `work`: staging leftovers
    /// (non-empty directories); a lock file is allowed.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, TestError> {
        let mut out = Vec::new();
        for i in 0..self.layers.len() {
            let dir = self.snapshot_dir(i);
            for entry in std::fs::read_dir(&dir).map_err(|e| TestError::io(&dir, e))? {
                let path = entry.map_err(|e| TestError::io(&dir, e))?.path();
                let name = path.file_name().unwrap_or_default();
                if name == "fs" || name == "work" || !path.is_dir() {
                    continue;
                }
                if std::fs::read_dir(&path)
                    .map_err(|e| TestError::io(&path, e))?
                    .next()
                    .is_some()
                {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    /// `snapshots/<id>` of a layer (the parent of its `fs`).
    pub fn snapshot_dir(&self, layer: usize) -> PathBuf {
        self.layers[layer]
            .fs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

fn empty_tree() -> TreeSnapshot {
    TreeSnapshot {
        nodes: Default::default(),
    }
}
