use super::*;

const CORPUS: &str = include_str!("../../../testdata/events.tsv");

struct Row<'a> {
    group: &'a str,
    reason: &'a str,
    message: &'a str,
    why: &'a str,
}

fn corpus_rows() -> Vec<Row<'static>> {
    CORPUS
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert!(cols.len() >= 5, "malformed corpus row: {l}");
            Row {
                group: cols[0],
                reason: cols[1],
                message: cols[3],
                why: cols[4],
            }
        })
        .collect()
}

fn verdict(reason: &str, message: &str) -> Verdict {
    classify(reason, message).verdict
}

/// Signatures a look-alike may land on: read-only checks about the entrypoint, nothing stronger.
const AMBIGUOUS: &[Signature] = &[
    Signature::EntrypointMissing,
    Signature::ExecUserProcessEnoent,
    Signature::ExecFormatError,
    Signature::EntrypointPermissionDenied,
    Signature::EntrypointNotInPath,
];

#[test]
fn corpus_group_a_leads_at_least_to_a_verification() {
    let rows = corpus_rows();
    let a: Vec<_> = rows.iter().filter(|r| r.group == "A").collect();
    assert!(a.len() >= 15, "corpus has {} group A rows", a.len());
    for r in a {
        let c = classify(r.reason, r.message);
        assert_ne!(
            c.verdict,
            Verdict::Ignore,
            "A row ignored ({}): {}",
            c.signature,
            r.message
        );
    }
}

#[test]
fn corpus_group_b_never_leads_to_a_repair() {
    let rows = corpus_rows();
    let b: Vec<_> = rows.iter().filter(|r| r.group == "B").collect();
    assert!(b.len() >= 30, "corpus has {} group B rows", b.len());
    for r in b {
        let c = classify(r.reason, r.message);
        assert_ne!(
            c.verdict,
            Verdict::Repair,
            "B row repaired ({}): {}",
            c.signature,
            r.message
        );
        if c.verdict == Verdict::Verify {
            assert!(
                AMBIGUOUS.contains(&c.signature),
                "B row verified by a non-ambiguous signature {}: {} ({})",
                c.signature,
                r.message,
                r.why
            );
        }
    }
}

#[test]
fn corpus_strong_signatures_repair() {
    let rows = corpus_rows();
    let strong: Vec<_> = rows
        .iter()
        .filter(|r| r.group == "A")
        .filter(|r| {
            r.message.contains("missing parent")
                || r.message.contains("/fs: no such file")
                || r.message.contains("tmpmounts")
                || r.message.contains("stat /pause")
        })
        .collect();
    assert_eq!(strong.len(), 6);
    for r in strong {
        let c = classify(r.reason, r.message);
        assert_eq!(c.verdict, Verdict::Repair, "{}: {}", c.signature, r.message);
    }
}

#[test]
fn corpus_cni_volume_cgroup_disk_and_registry_rows_are_ignored() {
    for r in corpus_rows().iter().filter(|r| r.group == "B") {
        let m = r.message.to_lowercase();
        let vetoed_topic = [
            "cni",
            "network",
            "volume",
            "cgroup",
            "no space",
            "pull image",
            "seccomp",
        ]
        .iter()
        .any(|w| m.contains(w));
        if vetoed_topic {
            assert_eq!(
                verdict(r.reason, r.message),
                Verdict::Ignore,
                "{}",
                r.message
            );
        }
    }
}

// --- The incident, in the wordings of each runc / containerd generation. ---

const SANDBOX: &str = "FailedCreatePodSandBox";

#[test]
fn pause_missing_in_a_sandbox_is_a_repair_in_every_runc_wording() {
    let messages = [
        // containerd 1.6/1.7 + runc 1.1 (kubelet's exact format).
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#,
        // containerd 2.x + runc 1.2 ("error during container init").
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to start sandbox "3f1c2e9a": failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: "/pause": stat /pause: no such file or directory"#,
        // containerd 1.5 + runc 1.0.
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "/pause": stat /pause: no such file or directory: unknown"#,
        // runc 1.0-rc, escaped quotes as kubectl describe prints them.
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: OCI runtime create failed: container_linux.go:349: starting container process caused "exec: \"/pause\": stat /pause: no such file or directory": unknown"#,
        // Double-escaped copy from a JSON log.
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \\\"/pause\\\": stat /pause: no such file or directory: unknown"#,
        // Permission bits lost, ELF truncated.
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": permission denied: unknown"#,
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": exec format error: unknown"#,
        // Old runc init wording.
        r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to start sandbox container: OCI runtime create failed: standard_init_linux.go:228: exec user process caused: no such file or directory: unknown"#,
    ];
    for m in messages {
        let c = classify(SANDBOX, m);
        assert_eq!(c.verdict, Verdict::Repair, "{m}");
        assert_eq!(c.signature, Signature::SandboxEntrypointBroken, "{m}");
        assert!(c.sandbox);
    }
}

#[test]
fn sandbox_detected_from_the_message_when_the_reason_is_unknown() {
    let m = r#"RunPodSandbox from runtime service failed: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;
    let c = classify("", m);
    assert!(c.sandbox);
    assert_eq!(c.verdict, Verdict::Repair);
}

#[test]
fn snapshot_store_damage_is_a_repair_for_any_container() {
    let cases = [
        (
            "Failed",
            "Error: failed to create containerd container: failed to create snapshot: missing parent \"k8s.io/12/sha256:0d3f2c\" bucket: not found",
            Signature::MissingParent,
        ),
        (
            "CreateContainerError",
            "failed to create containerd container: failed to prepare snapshot: failed to stat parent: stat /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/33/fs: no such file or directory",
            Signature::MissingParent,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: failed to mount rootfs component: no such file or directory: unknown",
            Signature::LowerdirMissing,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: failed to mount /var/lib/containerd/tmpmounts/containerd-mount2201: mount source: \"overlay\", target: \"/var/lib/containerd/tmpmounts/containerd-mount2201\", fstype: overlay, flags: 0, data: \"workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/9/work,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/9/fs,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs\", err: no such file or directory",
            Signature::LowerdirMissing,
        ),
        (
            "Failed",
            "Error: failed to create containerd task: failed to create shim task: mkdir /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/41/work/work: no such file or directory: unknown",
            Signature::SnapshotDirMissing,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: failed to mount /var/lib/containerd/tmpmounts/containerd-mount99: no such file or directory",
            Signature::TmpmountMissing,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: parent snapshot sha256:ab12 does not exist: not found",
            Signature::MissingParent,
        ),
    ];
    for (reason, m, sig) in cases {
        let c = classify(reason, m);
        assert_eq!((c.verdict, c.signature), (Verdict::Repair, sig), "{m}");
    }
}

#[test]
fn ambiguous_application_failures_only_verify() {
    let cases = [
        (
            "Failed",
            r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/app/server": stat /app/server: no such file or directory: unknown"#,
            Signature::EntrypointMissing,
        ),
        (
            "RunContainerError",
            r#"failed to create containerd task: OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "/docker-entrypoint.sh": stat /docker-entrypoint.sh: no such file or directory: unknown"#,
            Signature::EntrypointMissing,
        ),
        (
            "Failed",
            "exec /docker-entrypoint.sh: no such file or directory",
            Signature::EntrypointMissing,
        ),
        (
            "Failed",
            "exec /usr/local/bin/app: exec format error",
            Signature::ExecFormatError,
        ),
        (
            "Failed",
            r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/bin/app": permission denied: unknown"#,
            Signature::EntrypointPermissionDenied,
        ),
        (
            "CreateContainerError",
            r#"Error: container create failed: runc create failed: unable to start container process: exec: "/opt/app/run": executable file not found in $PATH"#,
            Signature::EntrypointNotInPath,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: error unpacking image: failed to extract layer sha256:aa: failed to get reader from content store: content digest sha256:bb: not found",
            Signature::ContentBlobMissing,
        ),
        (
            "Failed",
            r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/usr/bin/network-agent": stat /usr/bin/network-agent: no such file or directory: unknown"#,
            Signature::EntrypointMissing,
        ),
        (
            "Failed",
            "standard_init_linux.go:228: exec user process caused: no such file or directory",
            Signature::ExecUserProcessEnoent,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: mount callback failed on /var/lib/containerd/tmpmounts/containerd-mount1234: open /var/lib/containerd/tmpmounts/containerd-mount1234/etc/passwd: no such file or directory",
            Signature::UserDatabaseMissing,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: mount callback failed on /var/lib/containerd/tmpmounts/containerd-mount99: open /var/lib/containerd/tmpmounts/containerd-mount99/etc/group: no such file or directory",
            Signature::UserDatabaseMissing,
        ),
        (
            "Failed",
            r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to find user app: no matching entries in passwd file: unknown"#,
            Signature::UserDatabaseMissing,
        ),
        (
            "CreateContainerError",
            "Error: container create failed: unable to find group app: no matching entries in group file",
            Signature::UserDatabaseMissing,
        ),
    ];
    for (reason, m, sig) in cases {
        let c = classify(reason, m);
        assert_eq!((c.verdict, c.signature), (Verdict::Verify, sig), "{m}");
        assert!(!c.sandbox);
    }
}

#[test]
fn look_alikes_are_vetoed() {
    let cases = [
        (
            SANDBOX,
            r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "9c1f": plugin type="flannel" failed (add): loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory"#,
            Signature::VetoNetwork,
        ),
        (
            SANDBOX,
            r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "77aa": plugin type="bridge" failed (add): failed to allocate for range 0: no IP addresses available in range set: 10.88.0.1-10.88.255.254"#,
            Signature::VetoNetwork,
        ),
        (
            "FailedMount",
            r#"MountVolume.SetUp failed for volume "config" : configmap "app" not found"#,
            Signature::VetoReason,
        ),
        (
            "Failed",
            r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/var/lib/kubelet/pods/1b2c/volumes/kubernetes.io~configmap/cfg/app.yaml" to rootfs at "/etc/app.yaml": mount /var/lib/kubelet/pods/1b2c/volumes/kubernetes.io~configmap/cfg/app.yaml:/etc/app.yaml (via /proc/self/fd/6), flags: 0x5001: no such file or directory: unknown"#,
            Signature::VetoVolume,
        ),
        (
            SANDBOX,
            r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/kubepods.slice/pod1: no such file or directory: unknown"#,
            Signature::VetoCgroup,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to start shim: start failed: fork/exec /usr/bin/containerd-shim-runc-v2: no such file or directory: unknown",
            Signature::VetoRuntimeBinary,
        ),
        (
            "Failed",
            r#"Failed to pull image "nginx:nope": rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nginx:nope": failed to resolve reference "docker.io/library/nginx:nope": docker.io/library/nginx:nope: not found"#,
            Signature::VetoRegistry,
        ),
        (
            "Failed",
            r#"Failed to pull image "registry.example/app:1": rpc error: code = Unknown desc = failed to pull and unpack image "registry.example/app:1": failed to extract layer sha256:1f: write /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/88/fs/usr/lib/libx.so: no space left on device: unknown"#,
            Signature::VetoDiskFull,
        ),
        (
            SANDBOX,
            r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "registry.k8s.io/pause:3.9": failed to pull image "registry.k8s.io/pause:3.9": failed to pull and unpack image "registry.k8s.io/pause:3.9": failed to resolve reference "registry.k8s.io/pause:3.9": dial tcp 34.96.108.209:443: i/o timeout"#,
            Signature::VetoRegistry,
        ),
        (
            "Failed",
            r#"Error: failed to create containerd container: cannot load seccomp profile "/var/lib/kubelet/seccomp/profiles/audit.json": open /var/lib/kubelet/seccomp/profiles/audit.json: no such file or directory"#,
            Signature::VetoSecurityProfile,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            Signature::VetoTimeout,
        ),
        (
            "Unhealthy",
            r#"Readiness probe errored: rpc error: code = Unknown desc = failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: exec: "/bin/grpc_health_probe": stat /bin/grpc_health_probe: no such file or directory: unknown"#,
            Signature::VetoReason,
        ),
    ];
    for (reason, m, sig) in cases {
        let c = classify(reason, m);
        assert_eq!((c.verdict, c.signature), (Verdict::Ignore, sig), "{m}");
    }
}

#[test]
fn messages_without_a_signature_are_ignored() {
    for (reason, m) in [
        (
            "BackOff",
            "Back-off restarting failed container app in pod web-0_default(1234)",
        ),
        ("Failed", "Error: ImagePullBackOff"),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to reserve sandbox name",
        ),
        ("Failed", ""),
        ("", ""),
    ] {
        assert_eq!(verdict(reason, m), Verdict::Ignore, "{m}");
    }
}

#[test]
fn the_same_exec_failure_is_stronger_in_a_sandbox_than_in_an_application() {
    let m = r#"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": permission denied: unknown"#;
    assert_eq!(verdict(SANDBOX, m), Verdict::Repair);
    let app = m.replace("/pause", "/bin/app");
    assert_eq!(verdict("Failed", &app), Verdict::Verify);
}

#[test]
fn normalisation_unescapes_quotes_newlines_and_whitespace() {
    assert_eq!(
        normalize_message(r#"exec: \"/pause\":  stat"#),
        r#"exec: "/pause": stat"#
    );
    assert_eq!(
        normalize_message(r#"exec: \\\"/pause\\\""#),
        r#"exec: "/pause""#
    );
    assert_eq!(normalize_message("a\\n  b\t\tc"), "a b c");
    assert_eq!(
        normalize_message("(combined from similar events): Failed x"),
        "Failed x"
    );
}

#[test]
fn exec_targets_are_found_in_runc_crun_and_go_wordings() {
    let t = ExecTarget::find(r#"exec: "/pause": stat /pause: no such file or directory"#)
        .expect("exec target");
    assert_eq!(
        (t.path.as_str(), t.failure),
        ("/pause", ExecFailure::NotFound)
    );
    let t = ExecTarget::find(
        "executable file `nonexistent` not found in $path: no such file or directory",
    )
    .expect("exec target");
    assert_eq!(
        (t.path.as_str(), t.failure),
        ("nonexistent", ExecFailure::NotInPath)
    );
    let t = ExecTarget::find("exec /entry.sh: exec format error").expect("exec target");
    assert_eq!(
        (t.path.as_str(), t.failure),
        ("/entry.sh", ExecFailure::FormatError)
    );
    assert!(ExecTarget::find("fork/exec /usr/bin/runc: no such file or directory").is_none());
}

#[test]
fn signature_names_are_unique() {
    let all = [
        Signature::VetoReason,
        Signature::VetoNetwork,
        Signature::VetoVolume,
        Signature::VetoCgroup,
        Signature::VetoSecurityProfile,
        Signature::VetoNamespace,
        Signature::VetoRegistry,
        Signature::VetoTimeout,
        Signature::VetoDiskFull,
        Signature::VetoHostIo,
        Signature::VetoRuntimeBinary,
        Signature::VetoImageRecordMissing,
        Signature::VetoNameConflict,
        Signature::VetoExecInRunningContainer,
        Signature::VetoHostMount,
        Signature::SnapshotDirMissing,
        Signature::MissingParent,
        Signature::LowerdirMissing,
        Signature::TmpmountMissing,
        Signature::SnapshotRecordMissing,
        Signature::SandboxEntrypointBroken,
        Signature::ContentBlobMissing,
        Signature::LayerBlobCorrupt,
        Signature::EntrypointMissing,
        Signature::ExecUserProcessEnoent,
        Signature::ExecFormatError,
        Signature::EntrypointPermissionDenied,
        Signature::EntrypointNotInPath,
        Signature::UserDatabaseMissing,
        Signature::NoSignature,
    ];
    let names: std::collections::HashSet<_> = all.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), all.len());
}

#[test]
fn more_store_damage_wordings() {
    let cases = [
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd container: failed to create prepare snapshot dir: stat /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/45: no such file or directory",
            Verdict::Repair,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: failed to stat snapshot sha256:9f2e: snapshot sha256:9f2e does not exist: not found",
            Verdict::Repair,
        ),
        (
            "Failed",
            r#"Failed to pull image "quay.io/org/app:2": failed to pull and unpack image "quay.io/org/app:2": failed to extract layer sha256:77: failed to get stream processor for application/vnd.oci.image.layer.v1.tar+gzip: unexpected EOF"#,
            Verdict::Verify,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: OCI runtime create failed: standard_init_linux.go:228: exec user process caused: permission denied: unknown",
            Verdict::Repair,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: \"/pause\": stat /pause: no such file or directory",
            Verdict::Repair,
        ),
    ];
    for (reason, m, want) in cases {
        let c = classify(reason, m);
        assert_eq!(c.verdict, want, "{} {m}", c.signature);
    }
}

#[test]
fn host_side_look_alikes_are_vetoed() {
    let cases = [
        // A hostPath bind mount whose source is missing on the host.
        (
            "Failed",
            "Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting \"/etc/kubernetes/pki\" to rootfs at \"/etc/kubernetes/pki\": mount /etc/kubernetes/pki:/etc/kubernetes/pki (via /proc/self/fd/6), flags: 0x5000: no such file or directory: unknown",
            Signature::VetoHostMount,
        ),
        // The shim binary is missing on the host.
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to start shim: exec: \"containerd-shim-runc-v2\": executable file not found in $PATH: unknown",
            Signature::VetoRuntimeBinary,
        ),
        // kubectl exec / exec probes into a running container.
        (
            "Failed",
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"bash\": executable file not found in $PATH: unknown",
            Signature::VetoExecInRunningContainer,
        ),
        // Unmounting a temporary mount that is already gone is not a damaged snapshot.
        (
            "Failed",
            "Error: failed to create containerd container: failed to unmount /var/lib/containerd/tmpmounts/containerd-mount11: no such file or directory",
            Signature::NoSignature,
        ),
        (
            SANDBOX,
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply apparmor profile: apparmor failed to apply profile: write /proc/self/attr/apparmor/exec: no such file or directory: unknown",
            Signature::VetoSecurityProfile,
        ),
        (
            "Failed",
            "Error: failed to create containerd container: failed to reserve container name \"app_web-0_default_1_0\": name \"app_web-0_default_1_0\" is reserved for \"4b1f\"",
            Signature::VetoNameConflict,
        ),
    ];
    for (reason, m, sig) in cases {
        let c = classify(reason, m);
        assert_eq!((c.verdict, c.signature), (Verdict::Ignore, sig), "{m}");
    }
}

#[test]
fn host_runtime_tools_named_as_the_program_are_vetoed() {
    for tool in [
        "runc",
        "/usr/bin/crun",
        "containerd-shim-runc-v2",
        "docker-runc",
        "apparmor_parser",
    ] {
        let m = format!(
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: exec: \"{tool}\": executable file not found in $PATH: unknown"
        );
        let c = classify(SANDBOX, &m);
        assert_eq!(
            (c.verdict, c.signature),
            (Verdict::Ignore, Signature::VetoRuntimeBinary),
            "{m}"
        );
    }
}

#[test]
fn overlay_mount_errors_other_than_enoent_are_not_snapshot_damage() {
    for errno in ["no such device", "invalid argument"] {
        let m = format!(
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to mount rootfs component &{{overlay overlay [workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/175/work upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/175/fs lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs]}}: {errno}: unknown"
        );
        assert_eq!(verdict(SANDBOX, &m), Verdict::Ignore, "{m}");
        let enoent = m.replace(errno, "no such file or directory");
        assert_eq!(verdict(SANDBOX, &enoent), Verdict::Repair, "{enoent}");
    }
}

#[test]
fn a_missing_snapshots_directory_is_store_damage() {
    let m = "Error: failed to create containerd container: failed to create prepare snapshot dir: failed to create temp dir: stat /data/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots: no such file or directory";
    assert_eq!(
        classify("Failed", m).signature,
        Signature::SnapshotDirMissing
    );
}

#[test]
fn a_missing_mount_helper_on_the_host_is_vetoed() {
    let m = "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to mount rootfs component &{fuse3.fuse-overlayfs overlay [lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.fuse-overlayfs/snapshots/3/fs]}: mount helper [mount.fuse3 [overlay /run/containerd/rootfs]] failed: \"\": exec: \"mount.fuse3\": executable file not found in $PATH: no such file or directory: unknown";
    assert_eq!(classify(SANDBOX, m).signature, Signature::VetoRuntimeBinary);
}

#[test]
fn user_database_look_alikes_stay_vetoed_or_ignored() {
    // A passwd file from a volume or a host path is not the image's.
    let volume = classify(
        "Failed",
        "Error: failed to create containerd container: mount callback failed: open /var/lib/kubelet/pods/1/volumes/kubernetes.io~configmap/users/etc/passwd: no such file or directory",
    );
    assert_eq!(volume.verdict, Verdict::Ignore, "{volume:?}");
    // The file exists and only the read was refused: not a missing database.
    let denied = classify(
        "Failed",
        "open /var/lib/containerd/tmpmounts/containerd-mount1/etc/passwd: permission denied",
    );
    assert_eq!(denied.verdict, Verdict::Ignore, "{denied:?}");
}
