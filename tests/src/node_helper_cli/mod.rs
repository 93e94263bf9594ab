//! Runs the real `snapmend-node-helper` binary against a private containerd and reads its
//! JSON Report. The binary is looked up next to the test executable
//! (`target/<profile>/deps/<test>` → `target/<profile>/snapmend-node-helper`), or at
//! `$SNAPMEND_NODE_HELPER`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use snapmend_crds::{FindingKind, Report};

use crate::TestError;
use crate::containerd::ContainerdFixture;

mod corruptions;
mod scenario;

pub use corruptions::{CaseImage, Corruption, corruption, corruptions, empty_dir, flip_blob_byte};
pub use scenario::{PristineImage, PristineLayer, Scenario};

pub const BINARY_NAME: &str = "snapmend-node-helper";

/// Where the node-helper binary is, or an error telling how to build it.
pub fn node_helper_binary() -> Result<PathBuf, TestError> {
    if let Some(path) = std::env::var_os("SNAPMEND_NODE_HELPER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| TestError::io("/proc/self/exe", e))?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(BINARY_NAME))
        .collect();
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            TestError::NodeHelper(format!(
                "{BINARY_NAME} not found (looked at {candidates:?}); build it first with \
             `cargo build -p snapmend-node-helper --features fault-injection` (`make test` \
             does this), or point SNAPMEND_NODE_HELPER at it"
            ))
        })?;
    refuse_stale(&found)?;
    Ok(found)
}

/// Newest modification time of the files beneath `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// A binary older than the node-helper sources of this checkout would test old code.
fn refuse_stale(binary: &Path) -> Result<(), TestError> {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-helper/src");
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .map_err(|e| TestError::io(binary, e))?;
    match newest_mtime(&sources) {
        Some(changed) if changed > built => Err(TestError::NodeHelper(format!(
            "{} is older than the sources in {}; rebuild it with \
             `cargo build -p snapmend-node-helper --features fault-injection` (`make test` \
             does this), or point SNAPMEND_NODE_HELPER at a binary to test",
            binary.display(),
            sources.display()
        ))),
        _ => Ok(()),
    }
}

/// `--content` of verify and repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    Full,
    Metadata,
}

impl Content {
    fn arg(self) -> &'static str {
        match self {
            Content::Full => "full",
            Content::Metadata => "metadata",
        }
    }
}

/// One finished run of the helper.
#[derive(Debug)]
pub struct HelperRun {
    pub args: Vec<String>,
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl HelperRun {
    pub fn from_output(args: Vec<String>, out: Output) -> Self {
        HelperRun {
            args,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The Report on stdout (`--json`).
    pub fn report(&self) -> Result<Report, TestError> {
        serde_json::from_str(&self.stdout)
            .map_err(|e| TestError::NodeHelper(format!("{self}\nstdout is not a JSON Report: {e}")))
    }

    /// (layer index, path, kind) of every listed finding.
    pub fn findings(&self) -> Result<Vec<(u32, String, FindingKind)>, TestError> {
        Ok(self
            .report()?
            .layers
            .iter()
            .flat_map(|l| {
                l.findings
                    .iter()
                    .map(move |f| (l.index, f.path.clone(), f.kind))
            })
            .collect())
    }
}

impl std::fmt::Display for HelperRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{BINARY_NAME} {} exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// `["--toc-cache", "none"]` for a subcommand that keeps TOCs and was given no cache.
pub fn toc_guard(subcommand: &str, args: &[&str]) -> &'static [&'static str] {
    let keeps_tocs = matches!(subcommand, "verify" | "repair" | "scan" | "agent");
    if keeps_tocs && !args.iter().any(|a| a.starts_with("--toc-cache")) {
        &["--toc-cache", "none"]
    } else {
        &[]
    }
}

/// The helper bound to one private containerd (its root and config).
#[derive(Clone, Debug)]
pub struct NodeHelper {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
}

impl NodeHelper {
    pub fn for_fixture(fixture: &ContainerdFixture) -> Result<Self, TestError> {
        Ok(NodeHelper {
            binary: node_helper_binary()?,
            root: fixture.root(),
            config: fixture.config_path(),
        })
    }

    /// `snapmend-node-helper <subcommand> --root R --config C <args>`, not yet run. Commands
    /// that keep TOCs get `--toc-cache none` unless `args` name a cache: a test never writes
    /// to the machine's /var/lib/snapmend (and reads the blob, as before the TOC cache).
    pub fn command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(subcommand)
            .arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args(toc_guard(subcommand, args))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a subcommand to completion.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Result<HelperRun, TestError> {
        let mut all = vec![subcommand.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let out = self
            .command(subcommand, args)
            .output()
            .map_err(|e| TestError::io(&self.binary, e))?;
        Ok(HelperRun::from_output(all, out))
    }

    /// `verify --image IMAGE --content C --json`.
    pub fn verify(&self, image: &str, content: Content) -> Result<HelperRun, TestError> {
        self.run(
            "verify",
            &["--image", image, "--content", content.arg(), "--json"],
        )
    }

    /// `repair --image IMAGE --json`.
    pub fn repair(&self, image: &str) -> Result<HelperRun, TestError> {
        self.run("repair", &["--image", image, "--json"])
    }

    /// The snapshot `fs` of each layer of an image (bottom first), from a verify report.
    pub fn snapshot_paths(&self, image: &str) -> Result<Vec<PathBuf>, TestError> {
        let run = self.verify(image, Content::Metadata)?;
        let report = run.report()?;
        report
            .layers
            .iter()
            .map(|l| {
                l.snapshot_path
                    .as_deref()
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        TestError::NodeHelper(format!(
                            "layer {} has no snapshotPath\n{run}",
                            l.index
                        ))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod toc_guard_tests {
    use super::*;

    #[test]
    fn every_toc_keeping_command_gets_a_cache_that_is_not_the_machines() {
        let h = NodeHelper {
            binary: "snapmend-node-helper".into(),
            root: "/r".into(),
            config: "/c".into(),
        };
        for sub in ["verify", "repair", "scan", "agent"] {
            let cmd = h.command(sub, &["--json"]);
            let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
            let at = args.iter().position(|a| a == "--toc-cache").expect(sub);
            assert_eq!(args[at + 1], "none", "{sub}");
            let own = h.command(sub, &["--toc-cache", "/tmp/t"]);
            assert_eq!(
                own.get_args().filter(|a| *a == "--toc-cache").count(),
                1,
                "{sub}: a test's own cache is kept"
            );
        }
        let guard = h.command("guard", &[]);
        assert!(
            guard.get_args().all(|a| a != "--toc-cache"),
            "guard has no TOC"
        );
    }
}
