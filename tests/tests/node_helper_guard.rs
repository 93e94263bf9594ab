//! `snapmend-node-helper guard` against a real containerd (issue 17): a process that deletes,
//! modifies and chmods files in committed snapshots is named with its pid, command line,
//! cgroup, snapshot and path; containerd's own removal, garbage collection and unpack and
//! snapmend's repair are not reported; a burst of 100,000 deletions is reported aggregated
//! or as a queue overflow. Needs root (fanotify filesystem marks need CAP_SYS_ADMIN).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use snapmend_crds::Outcome;
use snapmend_tests::image_builder::{
    ImageSpec, LayerSpec, ManifestStyle, TarEntry, pause_image, rich_image,
};
use snapmend_tests::node_helper_cli::Scenario;

const RICH: &str = "snapmend.test/rich:1";
const PAUSE: &str = "snapmend.test/pause:3.10";
const CULPRIT: &str = "snapmend-culprit-test";

/// A running `guard --json`, its lines arriving on a channel.
struct GuardRun {
    child: Child,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl GuardRun {
    fn start(s: &Scenario) -> GuardRun {
        let mut child = s
            .helper
            .command("guard", &["--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (ready_tx, ready) = channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("watching") {
                    let _ = ready_tx.send(());
                }
                all.push_str(&line);
                line.clear();
            }
            all
        });
        if ready.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the guard did not start:\n{}", stderr.join().unwrap());
        }
        GuardRun {
            child,
            lines,
            stderr,
        }
    }

    /// Lines until `done` says enough, or `quiet` passes without a line, or `limit`.
    fn collect_until(
        &self,
        quiet: Duration,
        limit: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let end = Instant::now() + limit;
        let mut got = Vec::new();
        while Instant::now() < end && !done(&got) {
            match self.lines.recv_timeout(quiet) {
                Ok(line) => got.push(serde_json::from_str(&line).unwrap()),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        got
    }

    /// SIGTERM; the remaining lines and the final statistics.
    fn stop(mut self) -> (Vec<Value>, Value) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert_eq!(status.code(), Some(0), "guard exit {status}:\n{stderr}");
        let rest = self
            .lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        let stats = stderr
            .lines()
            .find_map(|l| l.strip_prefix("snapmend guard: stopped; "))
            .unwrap_or_else(|| panic!("no statistics in:\n{stderr}"));
        (rest, serde_json::from_str(stats).unwrap())
    }
}

/// A perl process named `snapmend-culprit-test` that waits for a line on stdin, runs
/// `script`, prints "done" and waits for stdin to close (so it is alive while the guard
/// reads /proc).
struct Culprit {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Culprit {
    fn spawn(script: &str, args: &[&Path]) -> Culprit {
        let program =
            format!("my $go = <STDIN>; {script}; $| = 1; print \"done\\n\"; my $end = <STDIN>;");
        let mut child = Command::new("perl")
            .arg0(CULPRIT)
            .arg("-e")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Culprit {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    fn run(&mut self) {
        self.stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done", "the culprit script failed");
    }

    fn finish(mut self) {
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

fn snapshot_id(fs: &Path) -> String {
    fs.parent()
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn changes_by(lines: &[Value], pid: i64) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["process"]["pid"].as_i64() == Some(pid))
        .collect()
}

fn find<'a>(lines: &[&'a Value], op: &str, path: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["op"] == op && l["path"] == path)
        .copied()
        .unwrap_or_else(|| panic!("no {op} of {path} in {lines:#?}"))
}

/// A cgroup of its own for a test process: on the unified hierarchy (cgroup v2, or the
/// `unified` mount of a hybrid host).
struct OwnCgroup {
    dir: PathBuf,
    name: String,
}

impl OwnCgroup {
    fn create() -> OwnCgroup {
        let base = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            PathBuf::from("/sys/fs/cgroup/unified")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let name = format!("snapmend-culprit-{}", std::process::id());
        let dir = base.join(&name);
        std::fs::create_dir(&dir).unwrap();
        OwnCgroup { dir, name }
    }

    fn adopt(&self, pid: i64) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn the_guard_names_the_process_its_cgroup_the_snapshot_and_the_path() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let layers = s.layer_fs(RICH).unwrap();
    let (base, top) = (&layers[0], &layers[2]);
    let guard = GuardRun::start(&s);

    // Delete, modify and chmod in the base layer.
    let mut culprit = Culprit::spawn(
        "unlink $ARGV[0] or die; open(my $f, '>>', $ARGV[1]) or die; print $f \"x\\n\"; close $f or die; chmod 0600, $ARGV[2] or die",
        &[
            &base.join("etc/hostname"),
            &base.join("etc/passwd"),
            &base.join("usr/bin/tool"),
        ],
    );
    culprit.run();
    let pid = culprit.pid();
    let lines = guard.collect_until(Duration::from_secs(3), Duration::from_secs(10), |got| {
        changes_by(got, pid).len() >= 3
    });
    culprit.finish();
    let mine = changes_by(&lines, pid);
    let base_id = snapshot_id(base);
    for (op, path) in [
        ("delete", "/etc/hostname"),
        ("modify", "/etc/passwd"),
        ("attrib", "/usr/bin/tool"),
    ] {
        let change = find(&mine, op, path);
        assert_eq!(change["snapshotId"], base_id.as_str(), "{change}");
        assert_eq!(change["count"], 1, "{change}");
        let process = &change["process"];
        assert!(
            process["cmdline"].as_str().unwrap().starts_with(CULPRIT),
            "{change}"
        );
        assert_eq!(
            process["ppid"].as_i64(),
            Some(i64::from(std::process::id())),
            "{change}"
        );
        assert_eq!(
            process["uid"].as_u64(),
            Some(u64::from(unsafe { libc::getuid() }))
        );
        assert!(
            process["exe"].as_str().unwrap().ends_with("perl"),
            "{change}"
        );
        assert!(process["cgroup"].is_string(), "{change}");
        assert!(time_is_rfc3339(&change["time"]), "{change}");
    }

    // A process in a cgroup of its own, deleting in the top layer.
    let cgroup = OwnCgroup::create();
    let mut culprit = Culprit::spawn("unlink $ARGV[0] or die", &[&top.join("newdir/file")]);
    cgroup.adopt(culprit.pid());
    culprit.run();
    let pid = culprit.pid();
    let lines = guard.collect_until(Duration::from_secs(3), Duration::from_secs(10), |got| {
        !changes_by(got, pid).is_empty()
    });
    culprit.finish();
    let mine = changes_by(&lines, pid);
    let change = find(&mine, "delete", "/newdir/file");
    assert_eq!(change["snapshotId"], snapshot_id(top).as_str(), "{change}");
    assert_eq!(
        change["process"]["cgroup"],
        format!("/{}", cgroup.name).as_str(),
        "{change}"
    );

    let (rest, stats) = guard.stop();
    assert!(rest.is_empty(), "nothing else changed: {rest:#?}");
    assert_eq!(stats["overflows"], 0, "{stats}");
}

fn time_is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
}

/// A small image of its own, so the import unpacks new snapshots while the guard runs.
fn fresh_image() -> ImageSpec {
    ImageSpec::new(
        "snapmend.test/fresh:1",
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::dir("data/"),
            TarEntry::file("data/a", "fresh a\n"),
            TarEntry::file("data/b", "fresh b\n"),
        ])],
    )
}

#[test]
fn containerd_and_snapmend_are_legitimate_writers() {
    let s = Scenario::start(&[rich_image(RICH).unwrap(), pause_image(PAUSE).unwrap()]).unwrap();
    // Damage before the guard starts, so that the repair has work to do.
    let layers = s.layer_fs(RICH).unwrap();
    std::fs::remove_file(layers[0].join("etc/passwd")).unwrap();
    std::fs::remove_file(layers[0].join("pause")).unwrap();
    let guard = GuardRun::start(&s);

    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    // containerd removes an image; the garbage collection deletes its snapshot.
    let pause_fs = s.layer_fs(PAUSE).unwrap();
    s.fixture.ctr(&["images", "rm", "--sync", PAUSE]).unwrap();
    s.fixture.settle().unwrap();
    assert!(
        !pause_fs[0].exists(),
        "the GC kept {}",
        pause_fs[0].display()
    );
    // A fresh import unpacks into new snapshots.
    s.fixture.import_images(&[fresh_image()]).unwrap();

    let lines = guard.collect_until(Duration::from_millis(800), Duration::from_secs(5), |_| {
        false
    });
    let (rest, stats) = guard.stop();
    assert!(
        lines.is_empty() && rest.is_empty(),
        "reported: {lines:#?} {rest:#?}"
    );
    // The guard did see these writes and judged them.
    assert!(stats["inSnapshots"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["legitimate"].as_u64().unwrap() + stats["notCommitted"].as_u64().unwrap() > 0,
        "{stats}"
    );
}

#[test]
fn a_burst_of_100000_deletions_is_aggregated_or_reported_as_overflow() {
    const FILES: u64 = 100_000;
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    let fs = s.layer_fs(PAUSE).unwrap().remove(0);
    let burst = fs.join("burst");
    std::fs::create_dir(&burst).unwrap();
    for i in 0..FILES {
        std::fs::File::create(burst.join(i.to_string())).unwrap();
    }
    let guard = GuardRun::start(&s);
    let mut culprit = Culprit::spawn(
        "opendir(my $d, $ARGV[0]) or die; for (readdir $d) { next if /^\\./; unlink \"$ARGV[0]/$_\" or die }",
        &[&burst],
    );
    let pid = culprit.pid();
    culprit.run();
    let counted = |got: &[Value]| -> u64 {
        changes_by(got, pid)
            .iter()
            .filter(|c| c["op"] == "delete")
            .map(|c| c["count"].as_u64().unwrap())
            .sum()
    };
    let overflowed = |got: &[Value]| got.iter().any(|l| l["overflow"].as_u64().unwrap_or(0) > 0);
    let mut lines = guard.collect_until(Duration::from_secs(3), Duration::from_secs(20), |got| {
        counted(got) >= FILES
    });
    culprit.finish();
    let (rest, stats) = guard.stop();
    eprintln!("guard statistics: {stats}");
    lines.extend(rest);
    let total = counted(&lines);
    let id = snapshot_id(&fs);
    assert!(
        changes_by(&lines, pid)
            .iter()
            .all(|c| c["snapshotId"] == id.as_str()),
        "{lines:#?}"
    );
    eprintln!(
        "burst: {total} of {FILES} deletions counted in {} lines, overflow reported: {}",
        changes_by(&lines, pid).len(),
        overflowed(&lines)
    );
    if overflowed(&lines) {
        // The kernel dropped events (ours or others' on this filesystem): never more than done.
        assert!(total <= FILES, "{total} deletions counted");
    } else {
        assert_eq!(
            total, FILES,
            "no overflow reported, so every deletion must be counted"
        );
        // Aggregated: a handful of lines, not one per file.
        assert!(changes_by(&lines, pid).len() < 100, "{} lines", lines.len());
    }
}

#[test]
fn without_cap_sys_admin_the_guard_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir
        .path()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let binary = snapmend_tests::node_helper_cli::node_helper_binary().unwrap();
    // setpriv (util-linux) drops to nobody, and with it every capability.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .arg("guard")
        .arg("--root")
        .arg(dir.path())
        .args(["--config", "/nonexistent/config.toml", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
}
