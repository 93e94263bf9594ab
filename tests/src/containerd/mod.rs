//! A private containerd 1.6 for tests: its own root, state, sockets, config and runc root,
//! running in its own mount namespace with a private tmpfs on `/run` (its shims put their
//! sockets under `/run/containerd/s`, a path containerd 1.6 hard-codes). The state dir is a
//! shared bind mount, so container rootfs overlays appear in the host's mountinfo as they do
//! on a node. Parallel fixtures never share a path, a container cgroup or a runc state dir,
//! and dropping the fixture kills everything it started, unmounts and removes its directory.

mod config;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::TestError;
pub use config::{ConfigPaths, CriPlugin, DISABLED_PLUGINS, render_config};

use crate::image_builder::{BuiltImage, ImageSpec, write_oci_archive};

/// The namespace CRI (and therefore the incident) uses.
pub const NAMESPACE: &str = "k8s.io";

/// Sandbox image the fixture's config names unless told otherwise.
pub const DEFAULT_SANDBOX_IMAGE: &str = "snapmend.test/pause:3.10";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`ContainerdFixture::start_with`].
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    pub sandbox_image: String,
    /// Enables CRI (see [`CriPlugin`]); its socket is the fixture's [`ContainerdFixture::socket`].
    pub cri: Option<CriPlugin>,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            sandbox_image: DEFAULT_SANDBOX_IMAGE.into(),
            cri: None,
        }
    }
}

/// Result of starting a container: runc either started it or refused with a message
/// (e.g. `exec: "/pause": stat /pause: no such file or directory`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Started,
    Failed(String),
}

impl RunOutcome {
    /// True when the start failed because the entrypoint does not exist, as in the incident.
    pub fn is_missing_entrypoint(&self) -> bool {
        matches!(self, RunOutcome::Failed(msg) if msg.contains("no such file or directory"))
    }
}

/// One private containerd. See the module docs.
pub struct ContainerdFixture {
    dir: tempfile::TempDir,
    child: Child,
    sandbox_image: String,
    archives: std::sync::atomic::AtomicUsize,
}

impl ContainerdFixture {
    /// Starts a containerd with the default options and waits until it answers.
    pub fn start() -> Result<Self, TestError> {
        Self::start_with(FixtureOptions::default())
    }

    pub fn start_with(options: FixtureOptions) -> Result<Self, TestError> {
        Self::start_in(options, &std::env::temp_dir())
    }

    /// [`Self::start_with`] with containerd's directories under `parent` (say a tmpfs, to
    /// keep the disk out of a benchmark).
    pub fn start_in(options: FixtureOptions, parent: &Path) -> Result<Self, TestError> {
        let dir = tempfile::Builder::new()
            .prefix("snapmend-ctd-")
            .tempdir_in(parent)
            .map_err(|e| TestError::io(parent, e))?;
        let base = dir.path().to_path_buf();
        let paths = ConfigPaths {
            root: &base.join("root"),
            state: &base.join("state"),
            socket: &base.join("containerd.sock"),
            sandbox_image: &options.sandbox_image,
            cri: options.cri.as_ref(),
        };
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, render_config(&paths))
            .map_err(|e| TestError::io(&config_path, e))?;
        share_mounts_beneath(paths.state)?;
        let log_path = base.join("containerd.log");
        let log = File::create(&log_path).map_err(|e| TestError::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| TestError::io(&log_path, e))?;
        // unshare and sh exec into containerd, so the child's pid is containerd's. The mount
        // holding /run becomes a slave first, so the tmpfs never propagates to the host even
        // where / is shared; the state bind mount stays shared.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--", "sh", "-c"])
            .arg(
                "mount --make-slave \"$(findmnt -n -o TARGET --target /run)\" \
                 && mount -t tmpfs -o mode=0755 snapmend-run /run && exec containerd --config \"$0\"",
            )
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                unmount_beneath(&base);
                TestError::Start {
                reason: format!("spawning unshare/containerd: {e}"),
                log: String::new(),
            }
            })?;
        let mut fixture = ContainerdFixture {
            dir,
            child,
            sandbox_image: options.sandbox_image,
            archives: Default::default(),
        };
        fixture.wait_until_serving()?;
        tracing::debug!(dir = %fixture.dir().display(), pid = fixture.pid(), "private containerd started");
        Ok(fixture)
    }

    fn wait_until_serving(&mut self) -> Result<(), TestError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestError::Start {
                    reason: format!("containerd exited: {status}"),
                    log: self.log_tail(),
                });
            }
            if self.socket().exists()
                && self
                    .ctr_output(&["version"])
                    .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestError::Start {
                    reason: format!("no answer within {START_TIMEOUT:?}"),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of containerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The fixture's own directory (root, state, config, socket, archives).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config.toml")
    }

    pub fn runc_root(&self) -> PathBuf {
        self.dir().join("runc")
    }

    pub fn sandbox_image(&self) -> &str {
        &self.sandbox_image
    }

    /// containerd's pid (its mount namespace is `/proc/<pid>/ns/mnt`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `<root>/io.containerd.snapshotter.v1.overlayfs`.
    pub fn snapshotter_root(&self) -> PathBuf {
        self.root().join("io.containerd.snapshotter.v1.overlayfs")
    }

    /// Where the content store keeps a blob (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root()
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(hex)
    }

    /// Container cgroups live under this parent (one per fixture).
    fn cgroup_parent(&self) -> String {
        let name = self
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("/{name}")
    }

    /// A command that runs `program` inside containerd's mount namespace, where the
    /// container rootfs overlays are mounted (e.g. to count mounts from mountinfo).
    pub fn command_in_mount_namespace(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `ctr` against this containerd (namespace `k8s.io`) and returns its raw output.
    pub fn ctr_output(&self, args: &[&str]) -> Result<Output, TestError> {
        let socket = self.socket();
        self.command_in_mount_namespace("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestError::Command {
                command: format!("ctr {}", args.join(" ")),
                status: "not started".into(),
                stderr: e.to_string(),
            })
    }

    /// Runs `ctr` and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn ctr(&self, args: &[&str]) -> Result<String, TestError> {
        let out = self.ctr_output(args)?;
        if !out.status.success() {
            return Err(TestError::Command {
                command: format!("ctr {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr images import` of an OCI layout tarball (unpacks with the overlayfs snapshotter).
    /// Waits until containerd has finished the garbage collection an import triggers.
    pub fn import(&self, archive: &Path) -> Result<(), TestError> {
        let path = archive.to_string_lossy();
        self.ctr(&["images", "import", path.as_ref()])?;
        self.settle()
    }

    /// Runs a synchronous garbage collection (deleting a fresh lease with `--sync`), then
    /// waits until `meta.db` has not changed for a while: after an import, containerd
    /// collects the archive's own index blob asynchronously, which would otherwise race with
    /// tests that hash the whole root.
    pub fn settle(&self) -> Result<(), TestError> {
        self.ctr(&["leases", "create", "--id", "snapmend-settle"])?;
        self.ctr(&["leases", "delete", "--sync", "snapmend-settle"])?;
        let meta = self.root().join("io.containerd.metadata.v1.bolt/meta.db");
        let stamp = || {
            std::fs::metadata(&meta)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = stamp();
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
            let now = stamp();
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }
        Ok(())
    }

    /// Builds the images into one archive in the fixture's directory and imports it.
    pub fn import_images(&self, images: &[ImageSpec]) -> Result<Vec<BuiltImage>, TestError> {
        let n = self
            .archives
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir().join(format!("images-{n}.tar"));
        let built = write_oci_archive(images, &path)?;
        self.import(&path)?;
        Ok(built)
    }

    /// Names of the images containerd knows in `k8s.io`.
    pub fn image_names(&self) -> Result<Vec<String>, TestError> {
        Ok(self
            .ctr(&["images", "ls", "-q"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Starts a detached container (`ctr run -d`) from an image, with its own cgroup under
    /// the fixture's parent and the fixture's runc root. A refused start is removed again.
    pub fn run_container(
        &self,
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Result<RunOutcome, TestError> {
        let runc_root = self.runc_root().to_string_lossy().into_owned();
        let cgroup = format!("{}/{id}", self.cgroup_parent());
        let mut argv = vec![
            "run",
            "-d",
            "--null-io",
            "--runc-root",
            &runc_root,
            "--cgroup",
            &cgroup,
            image,
            id,
        ];
        argv.extend_from_slice(args);
        let out = self.ctr_output(&argv)?;
        if out.status.success() {
            return Ok(RunOutcome::Started);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // `ctr run` leaves the container record (and its snapshot) behind on a failed start.
        let _ = self.ctr_output(&["tasks", "delete", "--force", id]);
        let _ = self.ctr_output(&["containers", "delete", id]);
        Ok(RunOutcome::Failed(message))
    }

    /// The task status (`RUNNING`, `STOPPED`, …) of a container, or None without a task.
    pub fn task_status(&self, id: &str) -> Result<Option<String>, TestError> {
        let listing = self.ctr(&["tasks", "ls"])?;
        Ok(parse_task_status(&listing, id))
    }

    /// Kills a container's task, deletes the task and the container.
    pub fn remove_container(&self, id: &str) -> Result<(), TestError> {
        let _ = self.ctr_output(&["tasks", "kill", "--signal", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.task_status(id)?.is_some_and(|s| s == "RUNNING") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ctr_output(&["tasks", "delete", "--force", id]);
        self.ctr(&["containers", "delete", id]).map(drop)
    }

    /// Pids of every process in the fixture's container cgroups (any v1 hierarchy or v2).
    fn container_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in cgroup_dirs(&self.cgroup_parent()) {
            for d in walk_dirs(&dir) {
                if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Pids of the shims serving this containerd (they outlive it otherwise).
    fn shim_pids(&self) -> Vec<i32> {
        let socket = self.socket().to_string_lossy().into_owned();
        let Ok(proc_dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        proc_dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                    && args.contains(&socket.as_bytes())
            })
            .collect()
    }
}

impl Drop for ContainerdFixture {
    fn drop(&mut self) {
        kill_and_wait(&self.container_pids());
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_and_wait(&self.shim_pids());
        for dir in cgroup_dirs(&self.cgroup_parent()) {
            let mut dirs = walk_dirs(&dir);
            dirs.reverse();
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
        unmount_beneath(self.dir.path());
    }
}

/// Parses `ctr tasks ls` (`TASK PID STATUS`) for one container.
pub fn parse_task_status(listing: &str, id: &str) -> Option<String> {
    listing.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next()? == id)
            .then(|| cols.nth(1).map(str::to_string))
            .flatten()
    })
}

fn kill_and_wait(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: kill(2) with a pid read from /proc or cgroup.procs; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mount_call(path: &Path, source: Option<&Path>, flags: libc::c_ulong) -> Result<(), TestError> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| TestError::io(p, std::io::Error::from(std::io::ErrorKind::InvalidInput)))
    };
    let target = c(path)?;
    let source = source.map(c).transpose()?;
    let src_ptr = source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: mount(2) with NUL-terminated paths (or null source) and no data.
    let rc = unsafe {
        libc::mount(
            src_ptr,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TestError::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes `dir` a shared bind mount of itself, so mounts made beneath it inside containerd's
/// mount namespace propagate back to this one.
fn share_mounts_beneath(dir: &Path) -> Result<(), TestError> {
    std::fs::create_dir_all(dir).map_err(|e| TestError::io(dir, e))?;
    mount_call(dir, Some(dir), libc::MS_BIND)?;
    mount_call(dir, None, libc::MS_SHARED)
}

/// `<hierarchy>/<parent>` for every mounted cgroup hierarchy that has it.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        out.push(root.join(rel));
    } else if let Ok(entries) = std::fs::read_dir(root) {
        out.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join(rel)));
    }
    out.retain(|p| p.is_dir());
    out
}

/// A directory and all directories beneath it, parents before children.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            let children: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// Mount points at or beneath `dir` in this mount namespace, deepest first.
pub fn mounts_beneath(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unmount_beneath(dir: &Path) {
    for point in mounts_beneath(dir) {
        if let Ok(c) = std::ffi::CString::new(point.to_string_lossy().as_bytes()) {
            // SAFETY: umount2 with a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_status_is_read_from_the_listing() {
        let listing =
            "TASK    PID     STATUS    \np1      4242    RUNNING\np2      0       STOPPED\n";
        assert_eq!(parse_task_status(listing, "p1").as_deref(), Some("RUNNING"));
        assert_eq!(parse_task_status(listing, "p2").as_deref(), Some("STOPPED"));
        assert_eq!(parse_task_status(listing, "p3"), None);
        assert_eq!(parse_task_status(listing, "TASK"), None);
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn missing_entrypoint_is_recognised_from_runc_output() {
        let msg = "ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/pause\": stat /pause: no such file or directory: unknown";
        assert!(RunOutcome::Failed(msg.into()).is_missing_entrypoint());
        assert!(!RunOutcome::Failed("permission denied".into()).is_missing_entrypoint());
        assert!(!RunOutcome::Started.is_missing_entrypoint());
    }
}
