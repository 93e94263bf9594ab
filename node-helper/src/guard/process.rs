//! The process behind an event, read from /proc, and whether it is a legitimate writer.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::cgroup;

/// Longest command line kept (bytes).
const CMDLINE_CAP: usize = 4096;
/// Longest ancestor chain walked when looking for containerd.
const ANCESTRY_CAP: usize = 64;

/// What /proc said about the writer when the guard first saw it; the same type a Report's
/// layer `culprit` carries.
pub use snapmend_crds::CulpritProcess as ProcessInfo;

/// Reads /proc/<pid>; `exited` when it is already gone.
pub fn read(pid: i32) -> ProcessInfo {
    let dir = Path::new("/proc").join(pid.to_string());
    let Some(stat) = fs::read_to_string(dir.join("stat")).ok() else {
        return ProcessInfo {
            pid,
            exited: true,
            ..Default::default()
        };
    };
    let cgroup_text = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let owner = cgroup::owner_of_proc_cgroup(&cgroup_text);
    ProcessInfo {
        pid,
        ppid: parent_of_stat(&stat),
        exe: exe_of(&dir),
        cmdline: fs::read(dir.join("cmdline")).ok().map(|b| cmdline_text(&b)),
        uid: fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| uid_of_status(&s)),
        cgroup: cgroup::display_path(&cgroup_text),
        pod_uid: owner.pod_uid,
        container_id: owner.container_id,
        systemd_unit: owner.systemd_unit,
        exited: false,
    }
}

fn exe_of(proc_dir: &Path) -> Option<String> {
    fs::read_link(proc_dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The ppid field of /proc/<pid>/stat (after the command name, which may hold spaces and parens).
pub fn parent_of_stat(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The real uid of /proc/<pid>/status.
pub fn uid_of_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// NUL-separated arguments as one space-separated line, capped.
pub fn cmdline_text(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(CMDLINE_CAP)];
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// Who wrote, as far as legitimacy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// containerd, a shim, or a non-container descendant of containerd; or snapmend itself.
    Legitimate,
    /// Anyone else, including processes inside containers.
    Suspect,
}

/// Decides from the executables of a process and its ancestors (the process first). A
/// shim's children are containers, so walking up through a shim makes a process suspect;
/// only containerd itself, a shim itself, and containerd's own non-shim children are
/// legitimate.
pub fn classify_ancestry<S: AsRef<str>>(exes: &[S]) -> Writer {
    for (i, exe) in exes.iter().enumerate() {
        let name = exe_name(exe.as_ref());
        if name.starts_with("containerd-shim") {
            return if i == 0 {
                Writer::Legitimate
            } else {
                Writer::Suspect
            };
        }
        if name == "containerd" {
            return Writer::Legitimate;
        }
    }
    Writer::Suspect
}

/// The file name of an exe link, without the " (deleted)" of an upgraded binary.
fn exe_name(exe: &str) -> &str {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    exe.rsplit('/').next().unwrap_or(exe)
}

/// Identifies snapmend's own writers: this process and any running the same binary.
#[derive(Clone, Debug)]
pub struct SelfIdentity {
    pid: i32,
    binary: Option<(u64, u64)>,
}

impl SelfIdentity {
    pub fn current() -> SelfIdentity {
        SelfIdentity {
            pid: std::process::id() as i32,
            binary: fs::metadata("/proc/self/exe")
                .ok()
                .map(|m| (m.dev(), m.ino())),
        }
    }

    fn is_snapmend(&self, pid: i32) -> bool {
        pid == self.pid
            || self.binary.is_some_and(|b| {
                fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| (m.dev(), m.ino()) == b)
            })
    }

    /// Legitimate or suspect, reading /proc for `pid` and its ancestors. A process that is
    /// gone cannot be cleared, so it stays suspect.
    pub fn writer(&self, pid: i32) -> Writer {
        if self.is_snapmend(pid) {
            return Writer::Legitimate;
        }
        let mut exes = Vec::new();
        let mut current = pid;
        while current > 1 && exes.len() < ANCESTRY_CAP {
            let dir = Path::new("/proc").join(current.to_string());
            let Some(exe) = exe_of(&dir) else { break };
            exes.push(exe);
            let Some(parent) = fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| parent_of_stat(&s))
            else {
                break;
            };
            current = parent;
        }
        classify_ancestry(&exes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_and_its_own_children_are_legitimate() {
        use Writer::*;
        assert_eq!(classify_ancestry(&["/usr/bin/containerd"]), Legitimate);
        assert_eq!(
            classify_ancestry(&["/usr/bin/containerd (deleted)"]),
            Legitimate
        );
        assert_eq!(
            classify_ancestry(&["/usr/bin/unpigz", "/usr/bin/containerd", "/sbin/init"]),
            Legitimate
        );
        assert_eq!(
            classify_ancestry(&["/usr/bin/containerd-shim-runc-v2", "/sbin/init"]),
            Legitimate
        );
    }

    #[test]
    fn container_processes_and_strangers_are_suspect() {
        use Writer::*;
        assert_eq!(
            classify_ancestry(&[
                "/bin/busybox",
                "/usr/bin/containerd-shim-runc-v2",
                "/usr/bin/containerd"
            ]),
            Suspect
        );
        assert_eq!(
            classify_ancestry(&["/bin/rm", "/bin/bash", "/usr/sbin/cron", "/sbin/init"]),
            Suspect
        );
        // A lookalike name is not containerd.
        assert_eq!(classify_ancestry(&["/tmp/containerd-cleanup"]), Suspect);
        assert_eq!(classify_ancestry::<&str>(&[]), Suspect);
    }

    #[test]
    fn proc_text_fields() {
        assert_eq!(parent_of_stat("4711 (sh) S 1 4711 4711 0 -1"), Some(1));
        assert_eq!(
            parent_of_stat("4711 (a) (b c) R 99 4711 4711 0 -1"),
            Some(99)
        );
        assert_eq!(parent_of_stat("garbage"), None);
        assert_eq!(
            uid_of_status("Name:\tsh\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(uid_of_status("Name:\tsh\n"), None);
        assert_eq!(
            cmdline_text(b"/bin/sh\0/etc/cron.daily/cleanup\0"),
            "/bin/sh /etc/cron.daily/cleanup"
        );
        assert_eq!(cmdline_text(b""), "");
        assert_eq!(cmdline_text(&vec![b'a'; 10_000]).len(), CMDLINE_CAP);
    }

    #[test]
    fn this_process_is_read_and_is_snapmend() {
        let me = std::process::id() as i32;
        let info = read(me);
        assert!(!info.exited);
        assert!(info.exe.is_some() && info.cmdline.is_some() && info.uid.is_some());
        assert_eq!(SelfIdentity::current().writer(me), Writer::Legitimate);
        let gone = read(i32::MAX);
        assert!(gone.exited);
        assert_eq!(
            gone.describe(),
            format!("pid {} (exited before it could be identified)", i32::MAX)
        );
    }
}
