//! Classify a kubelet/containerd event message: does it point at a damaged image snapshot on the node?
//!
//! A pure function over (reason, message). Vetoes are checked first, so a look-alike (CNI, volumes,
//! cgroups, registry, disk full, host runtime binaries) never reaches a repair; strong signatures
//! (missing snapshot directories, missing parents, lowerdir gone, a sandbox whose pause binary is
//! gone) lead to a repair; ambiguous ones (an application's absolute entrypoint missing, exec format
//! error, a blob missing from the content store, a user lookup without `/etc/passwd` or
//! `/etc/group`) lead at most to a read-only verification.

use std::fmt;

/// What the event justifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing: not a snapshot problem, or vetoed.
    Ignore,
    /// A read-only verification; cordoning can follow only if it finds damage.
    Verify,
    /// Verify, and repair what is found.
    Repair,
}

/// The verdict and the named signature that produced it (for logs and the SR annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    pub signature: Signature,
    /// The failure happened while creating a pod sandbox (target: the node's sandbox image).
    pub sandbox: bool,
}

/// Every rule the classifier knows, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signature {
    // Vetoes.
    VetoReason,
    VetoNetwork,
    VetoVolume,
    VetoCgroup,
    VetoSecurityProfile,
    VetoNamespace,
    VetoRegistry,
    VetoTimeout,
    VetoDiskFull,
    VetoHostIo,
    VetoRuntimeBinary,
    VetoImageRecordMissing,
    VetoNameConflict,
    VetoExecInRunningContainer,
    VetoHostMount,
    // Strong signatures.
    SnapshotDirMissing,
    MissingParent,
    LowerdirMissing,
    TmpmountMissing,
    SnapshotRecordMissing,
    SandboxEntrypointBroken,
    // Ambiguous signatures.
    ContentBlobMissing,
    LayerBlobCorrupt,
    EntrypointMissing,
    ExecUserProcessEnoent,
    ExecFormatError,
    EntrypointPermissionDenied,
    EntrypointNotInPath,
    UserDatabaseMissing,
    // Nothing matched.
    NoSignature,
}

impl Signature {
    /// Stable kebab-case name, used in logs and annotations.
    pub fn name(self) -> &'static str {
        match self {
            Signature::VetoReason => "veto-reason",
            Signature::VetoNetwork => "veto-network",
            Signature::VetoVolume => "veto-volume",
            Signature::VetoCgroup => "veto-cgroup",
            Signature::VetoSecurityProfile => "veto-security-profile",
            Signature::VetoNamespace => "veto-namespace",
            Signature::VetoRegistry => "veto-registry",
            Signature::VetoTimeout => "veto-timeout",
            Signature::VetoDiskFull => "veto-disk-full",
            Signature::VetoHostIo => "veto-host-io",
            Signature::VetoRuntimeBinary => "veto-runtime-binary",
            Signature::VetoImageRecordMissing => "veto-image-record-missing",
            Signature::VetoNameConflict => "veto-name-conflict",
            Signature::VetoExecInRunningContainer => "veto-exec-in-running-container",
            Signature::VetoHostMount => "veto-host-mount",
            Signature::SnapshotDirMissing => "snapshot-dir-missing",
            Signature::MissingParent => "missing-parent",
            Signature::LowerdirMissing => "lowerdir-missing",
            Signature::TmpmountMissing => "tmpmount-missing",
            Signature::SnapshotRecordMissing => "snapshot-record-missing",
            Signature::SandboxEntrypointBroken => "sandbox-entrypoint-broken",
            Signature::ContentBlobMissing => "content-blob-missing",
            Signature::LayerBlobCorrupt => "layer-blob-corrupt",
            Signature::EntrypointMissing => "entrypoint-missing",
            Signature::ExecUserProcessEnoent => "exec-user-process-enoent",
            Signature::ExecFormatError => "exec-format-error",
            Signature::EntrypointPermissionDenied => "entrypoint-permission-denied",
            Signature::EntrypointNotInPath => "entrypoint-not-in-path",
            Signature::UserDatabaseMissing => "user-database-missing",
            Signature::NoSignature => "no-signature",
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Event reasons that are about something else entirely (volumes, network, scheduling, pulls).
const VETOED_REASONS: &[&str] = &[
    "failedmount",
    "failedattachvolume",
    "failedmapvolume",
    "networknotready",
    "failedscheduling",
    "imagepullbackoff",
    "errimagepull",
    "evicted",
    "oomkilling",
    "failedkillpod",
    "failedsync",
    "kubeletnotready",
    "unhealthy",
];

const ENOENT: &str = "no such file or directory";

/// Classify one event. `reason` is the event's reason (extra words after the first are ignored);
/// `message` is its message with whatever escaping the poster used.
pub fn classify(reason: &str, message: &str) -> Classification {
    let reason = reason
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let text = normalize_message(message).to_lowercase();
    let exec = ExecTarget::find(&text);
    // Paths and image names chosen by image authors must not trigger vetoes ("/usr/bin/network-agent").
    let masked = mask_names(&text, exec.as_ref());
    let sandbox = reason == "failedcreatepodsandbox"
        || [
            "failed to create pod sandbox",
            "failed create pod sandbox",
            "runpodsandbox",
            "sandbox container",
        ]
        .iter()
        .any(|s| text.contains(s))
        || exec.as_ref().is_some_and(|e| e.path == "/pause");
    let verdict_of = |signature: Signature| Classification {
        verdict: verdict_for(signature),
        signature,
        sandbox,
    };

    if exec.as_ref().is_some_and(ExecTarget::is_host_runtime) {
        return verdict_of(Signature::VetoRuntimeBinary);
    }
    if let Some(veto) = find_veto(&reason, &masked) {
        return verdict_of(veto);
    }
    if let Some(strong) = find_strong(&text, exec.as_ref(), sandbox) {
        return verdict_of(strong);
    }
    if let Some(ambiguous) = find_ambiguous(&text, exec.as_ref()) {
        return verdict_of(ambiguous);
    }
    verdict_of(Signature::NoSignature)
}

fn verdict_for(signature: Signature) -> Verdict {
    match signature {
        Signature::SnapshotDirMissing
        | Signature::MissingParent
        | Signature::LowerdirMissing
        | Signature::TmpmountMissing
        | Signature::SnapshotRecordMissing
        | Signature::SandboxEntrypointBroken => Verdict::Repair,
        Signature::ContentBlobMissing
        | Signature::LayerBlobCorrupt
        | Signature::EntrypointMissing
        | Signature::ExecUserProcessEnoent
        | Signature::ExecFormatError
        | Signature::EntrypointPermissionDenied
        | Signature::EntrypointNotInPath
        | Signature::UserDatabaseMissing => Verdict::Verify,
        _ => Verdict::Ignore,
    }
}

/// Undo the escaping that event messages pick up on their way to issue threads and logs:
/// `\"`, `\\\"` and literal `\n`/`\t` become plain characters; whitespace runs become one space;
/// kubelet's "(combined from similar events): " prefix is dropped.
pub fn normalize_message(message: &str) -> String {
    let mut s = message.replace("\\n", " ").replace("\\t", " ");
    loop {
        let next = s.replace("\\\"", "\"").replace("\\\\", "\\");
        if next == s {
            break;
        }
        s = next;
    }
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    const COMBINED: &str = "(combined from similar events): ";
    if out.to_ascii_lowercase().starts_with(COMBINED) {
        out.drain(..COMBINED.len());
    }
    out
}

/// The program the runtime tried to start, as quoted in the message, and what went wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ExecTarget {
    path: String,
    failure: ExecFailure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExecFailure {
    NotFound,
    NotInPath,
    PermissionDenied,
    FormatError,
    Other,
}

impl ExecTarget {
    /// Finds `exec: "X": …` (runc), ``executable file `X` not found`` (crun) or `exec X: …` (Go).
    fn find(text: &str) -> Option<ExecTarget> {
        let (path, rest) = if let Some(i) = text.find("exec: \"") {
            let after = &text[i + "exec: \"".len()..];
            let end = after.find('"')?;
            (&after[..end], &after[end + 1..])
        } else if let Some(i) = text.find("executable file `") {
            let after = &text[i + "executable file `".len()..];
            let end = after.find('`')?;
            (&after[..end], "executable file not found in $path")
        } else {
            let i = find_go_exec(text)?;
            let after = &text[i + "exec ".len()..];
            let end = after.find(':')?;
            (&after[..end], &after[end..])
        };
        if path.is_empty() {
            return None;
        }
        let rest = rest.trim_start_matches([':', ' ']);
        let failure =
            if rest.starts_with("stat ") && rest.contains(ENOENT) || rest.starts_with(ENOENT) {
                ExecFailure::NotFound
            } else if rest.starts_with("executable file not found") {
                ExecFailure::NotInPath
            } else if rest.starts_with("permission denied") {
                ExecFailure::PermissionDenied
            } else if rest.starts_with("exec format error") {
                ExecFailure::FormatError
            } else {
                ExecFailure::Other
            };
        Some(ExecTarget {
            path: path.to_string(),
            failure,
        })
    }

    /// The program is one of the node's runtime tools (runc, a shim, …), not the image's entrypoint.
    fn is_host_runtime(&self) -> bool {
        let name = self.path.rsplit('/').next().unwrap_or_default();
        const HOST_TOOLS: &[&str] = &[
            "runc",
            "docker-runc",
            "crun",
            "runsc",
            "youki",
            "conmon",
            "apparmor_parser",
            "nvidia-container-runtime",
            "kata-runtime",
        ];
        HOST_TOOLS.contains(&name)
            || name.starts_with("containerd-shim")
            || name.starts_with("mount.")
    }

    fn is_absolute(&self) -> bool {
        self.path.starts_with('/')
    }
}

/// `exec /docker-entrypoint.sh: no such file or directory`: Go's os/exec wording printed by
/// shell-less images, with an absolute path right after "exec ".
fn find_go_exec(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("exec /") {
        let at = from + i;
        let preceded_ok = at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric();
        // "fork/exec /usr/bin/runtime" is the runtime binary, not the container's entrypoint.
        if preceded_ok && !text[..at].ends_with("fork/") {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Replace the entrypoint path and quoted image names with placeholders, so words chosen by image
/// authors ("network", "volume") do not trigger vetoes.
fn mask_names(text: &str, exec: Option<&ExecTarget>) -> String {
    let mut masked = text.to_string();
    if let Some(e) = exec
        && e.path.len() > 1
    {
        masked = masked.replace(&e.path, "<entrypoint>");
    }
    for marker in [
        "pull image \"",
        "unpack image \"",
        "apply layer error for \"",
    ] {
        while let Some(i) = masked.find(marker) {
            let start = i + marker.len();
            let Some(len) = masked[start..].find('"') else {
                break;
            };
            masked.replace_range(i..start + len + 1, "<image>");
        }
    }
    masked
}

fn has_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

fn find_veto(reason: &str, text: &str) -> Option<Signature> {
    if VETOED_REASONS.contains(&reason) {
        return Some(Signature::VetoReason);
    }
    let rules: &[(Signature, &[&str])] = &[
        (
            Signature::VetoNetwork,
            &[
                "cni",
                "network",
                "plugin type=",
                "failed to set up pod",
                "failed to setup pod",
                "netns",
                "ipam",
            ],
        ),
        (
            Signature::VetoVolume,
            &[
                "volume",
                "subpath",
                "kubelet/pods/",
                "configmap",
                "persistentvolumeclaim",
            ],
        ),
        (Signature::VetoCgroup, &["cgroup"]),
        (
            Signature::VetoSecurityProfile,
            &["seccomp", "apparmor", "selinux"],
        ),
        (
            Signature::VetoNamespace,
            &["namespace path", "/ns/ipc", "/ns/net", "/ns/pid", "/ns/mnt"],
        ),
        (
            Signature::VetoRegistry,
            &[
                "failed to resolve reference",
                "failed to do request",
                "httpreadseeker",
                "failed to copy:",
                "unauthorized",
                "authorization failed",
                "authentication required",
                "pull access denied",
                "manifest unknown",
                "toomanyrequests",
                "too many requests",
                "x509",
                "tls:",
                "dial tcp",
                "i/o timeout",
                "connection refused",
                "connection reset",
                "no such host",
                "back-off pulling",
                "context canceled",
                "failed to fetch",
            ],
        ),
        (
            Signature::VetoTimeout,
            &["context deadline exceeded", "deadlineexceeded"],
        ),
        (
            Signature::VetoDiskFull,
            &[
                "no space left",
                "disk quota exceeded",
                "quota exceeded",
                "read-only file system",
            ],
        ),
        (
            Signature::VetoHostIo,
            &[
                "input/output error",
                "device or resource busy",
                "too many open files",
                "cannot allocate memory",
                "out of memory",
                "oom-kill",
                "oomkill",
                "read init-p",
            ],
        ),
        (
            Signature::VetoRuntimeBinary,
            &[
                "fork/exec",
                "unable to retrieve oci runtime error",
                "docker-runc",
                "runtime binary",
                "failed to start shim",
                "mount helper",
                "containerd-shim",
                "nvidia-container",
                "conmon",
                "exec: \"runc\"",
                "exec: \"crun\"",
                "exec: \"runsc\"",
                "no such runtime",
                "runtime handler",
            ],
        ),
        (
            Signature::VetoImageRecordMissing,
            &[
                "failed to get image from containerd",
                "failed to get sandbox image",
            ],
        ),
        (
            Signature::VetoNameConflict,
            &[
                "already exists",
                "error reserving pod name",
                "name is reserved",
                "is reserved for",
                "failed to reserve",
            ],
        ),
        (
            Signature::VetoExecInRunningContainer,
            &[
                "oci runtime exec failed",
                "failed to exec in container",
                "exec failed:",
            ],
        ),
        // A bind mount from the host (hostPath, kubelet files, device): not the image's snapshot.
        (
            Signature::VetoHostMount,
            &["to rootfs at", "error mounting \""],
        ),
    ];
    rules
        .iter()
        .find(|(_, needles)| has_any(text, needles))
        .map(|(signature, _)| *signature)
}

fn find_strong(text: &str, exec: Option<&ExecTarget>, sandbox: bool) -> Option<Signature> {
    let enoent = text.contains(ENOENT);
    if text.contains("missing parent")
        || text.contains("parent snapshot") && text.contains("does not exist")
        || text.contains("failed to stat parent") && enoent
    {
        return Some(Signature::MissingParent);
    }
    if enoent
        && has_any(
            text,
            &[
                "lowerdir",
                "failed to mount rootfs component",
                "mount source: \"overlay\"",
            ],
        )
    {
        return Some(Signature::LowerdirMissing);
    }
    if enoent && (has_snapshot_dir(text) || text.contains("io.containerd.snapshotter.v1.")) {
        return Some(Signature::SnapshotDirMissing);
    }
    // Mounting (not unmounting) a snapshot's temporary mount failed because a directory is gone.
    if text.contains("tmpmounts/") && text.contains("failed to mount") && enoent {
        return Some(Signature::TmpmountMissing);
    }
    if text.contains("snapshot")
        && (text.contains("does not exist") || text.contains("snapshot not found"))
    {
        return Some(Signature::SnapshotRecordMissing);
    }
    if sandbox {
        let broken_entrypoint = exec.is_some_and(|e| {
            e.is_absolute()
                && matches!(
                    e.failure,
                    ExecFailure::NotFound
                        | ExecFailure::NotInPath
                        | ExecFailure::PermissionDenied
                        | ExecFailure::FormatError
                )
        });
        let user_process = text.contains("exec user process caused")
            && (enoent || text.contains("exec format error") || text.contains("permission denied"));
        if broken_entrypoint || user_process {
            return Some(Signature::SandboxEntrypointBroken);
        }
    }
    None
}

/// `…/snapshots/<digits>/fs` or `/work`: an overlayfs snapshot directory of containerd.
fn has_snapshot_dir(text: &str) -> bool {
    text.match_indices("/snapshots/").any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = &rest[digits..];
        digits > 0
            && (after.starts_with("/fs")
                || after.starts_with("/work")
                || after.starts_with(':')
                || after.is_empty())
    })
}

fn find_ambiguous(text: &str, exec: Option<&ExecTarget>) -> Option<Signature> {
    if text.contains("content store") && text.contains("not found")
        || text.contains("blob not found")
        || text.contains("content digest") && text.contains("not found")
    {
        return Some(Signature::ContentBlobMissing);
    }
    if text.contains("failed to extract layer")
        && has_any(
            text,
            &[
                "unexpected eof",
                "invalid tar header",
                "digest mismatch",
                "diffid mismatch",
                "gzip: invalid",
            ],
        )
    {
        return Some(Signature::LayerBlobCorrupt);
    }
    if let Some(e) = exec {
        match e.failure {
            ExecFailure::NotFound if e.is_absolute() => return Some(Signature::EntrypointMissing),
            ExecFailure::PermissionDenied => return Some(Signature::EntrypointPermissionDenied),
            ExecFailure::FormatError => return Some(Signature::ExecFormatError),
            // A bare name not found can be an empty rootfs too (the command is looked up in it).
            ExecFailure::NotInPath => return Some(Signature::EntrypointNotInPath),
            _ => {}
        }
    }
    if text.contains("exec user process caused") && text.contains(ENOENT) {
        return Some(Signature::ExecUserProcessEnoent);
    }
    // The runtime looked a user or group up in the mounted rootfs and found no database (or
    // no entry): a damaged layer, or an image built without that user; verification tells.
    if text.contains(ENOENT) && has_any(text, &["/etc/passwd", "/etc/group"])
        || has_any(
            text,
            &[
                "unable to find user",
                "unable to find group",
                "no matching entries in passwd file",
                "no matching entries in group file",
            ],
        )
    {
        return Some(Signature::UserDatabaseMissing);
    }
    if text.contains("exec format error") {
        return Some(Signature::ExecFormatError);
    }
    None
}

#[cfg(test)]
mod tests;
