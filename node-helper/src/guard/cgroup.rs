//! Who a cgroup path belongs to: a Kubernetes pod and container (kubelet's layouts for
//! cgroup v1 and v2, systemd and cgroupfs drivers) or a systemd unit. Pure functions.

/// What a cgroup path says about its process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupOwner {
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub systemd_unit: Option<String>,
}

/// The cgroup line of `/proc/<pid>/cgroup` worth showing: the unified (v2) path unless it is
/// the root, else the `name=systemd` hierarchy, else the first non-root controller path.
pub fn display_path(proc_cgroup: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((controllers, path))
        })
        .collect();
    let non_root = |p: &&(&str, &str)| p.1 != "/" && !p.1.is_empty();
    entries
        .iter()
        .filter(non_root)
        .find(|(c, _)| c.is_empty())
        .or_else(|| {
            entries
                .iter()
                .filter(non_root)
                .find(|(c, _)| *c == "name=systemd")
        })
        .or_else(|| entries.iter().find(non_root))
        .or_else(|| entries.first())
        .map(|(_, p)| p.to_string())
}

/// Owner found on any hierarchy of `/proc/<pid>/cgroup` (v1 nodes may show kubepods only
/// on some controllers); a pod wins over a systemd unit.
pub fn owner_of_proc_cgroup(proc_cgroup: &str) -> CgroupOwner {
    let mut unit = None;
    for line in proc_cgroup.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let owner = owner_of_path(path);
        if owner.pod_uid.is_some() {
            return owner;
        }
        if unit.is_none() {
            unit = owner.systemd_unit;
        }
    }
    CgroupOwner {
        systemd_unit: unit,
        ..Default::default()
    }
}

/// Pod UID and container ID from a kubepods cgroup path, else the innermost systemd unit.
///
/// Layouts (cgroup v1 and v2 alike):
/// - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`
///   (also `docker-<id>.scope`, `crio-<id>.scope`; Guaranteed pods sit directly in `kubepods.slice`)
/// - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>` (Guaranteed: `/kubepods/pod<uid>/<id>`)
pub fn owner_of_path(path: &str) -> CgroupOwner {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let in_kubepods = segments
        .iter()
        .any(|s| *s == "kubepods" || s.starts_with("kubepods.slice") || s.starts_with("kubepods-"));
    if in_kubepods {
        for (i, segment) in segments.iter().enumerate() {
            if let Some(uid) = pod_uid_of_segment(segment) {
                let container_id = segments.get(i + 1).and_then(|s| container_id_of_segment(s));
                return CgroupOwner {
                    pod_uid: Some(uid),
                    container_id,
                    systemd_unit: None,
                };
            }
        }
    }
    CgroupOwner {
        systemd_unit: segments
            .iter()
            .rev()
            .find(|s| is_unit_name(s))
            .map(|s| s.to_string()),
        ..Default::default()
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-qos]-pod<uid with _>.slice` (systemd).
fn pod_uid_of_segment(segment: &str) -> Option<String> {
    let uid = if let Some(rest) = segment.strip_suffix(".slice") {
        let at = rest.rfind("-pod")?;
        if !rest.starts_with("kubepods") {
            return None;
        }
        rest[at + 4..].replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_string()
    };
    is_uid(&uid).then_some(uid)
}

/// A pod UID: 36 characters of hex and dashes (8-4-4-4-12); static pods use a 32-hex hash.
fn is_uid(s: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && parts.iter().all(|p| hex(p))
        }
        [one] => one.len() == 32 && hex(one),
        _ => false,
    }
}

/// `cri-containerd-<id>.scope`, `docker-<id>.scope`, `crio-<id>.scope` or a bare `<id>`,
/// with a 64-hex id.
fn container_id_of_segment(segment: &str) -> Option<String> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => scope.rsplit('-').next()?,
        None => segment,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

fn is_unit_name(s: &str) -> bool {
    [".service", ".scope", ".socket", ".timer", ".mount"]
        .iter()
        .any(|suffix| s.len() > suffix.len() && s.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1f2e3d4c-5b6a-4789-8abc-def012345678";
    const UID_: &str = "1f2e3d4c_5b6a_4789_8abc_def012345678";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pod(uid: &str, cid: Option<&str>) -> CgroupOwner {
        CgroupOwner {
            pod_uid: Some(uid.into()),
            container_id: cid.map(Into::into),
            systemd_unit: None,
        }
    }

    fn unit(u: &str) -> CgroupOwner {
        CgroupOwner {
            systemd_unit: Some(u.into()),
            ..Default::default()
        }
    }

    #[test]
    fn systemd_driver_layouts_for_every_qos_class() {
        for (path, want) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
                ),
                pod(UID, Some(CID)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
                ),
                pod(UID, Some(CID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                pod(UID, Some(CID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope"),
                pod(UID, Some(CID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope"),
                pod(UID, Some(CID)),
            ),
            // The pod's own cgroup (e.g. a process moved there): pod without container.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                pod(UID, None),
            ),
        ] {
            assert_eq!(owner_of_path(&path), want, "{path}");
        }
    }

    #[test]
    fn cgroupfs_driver_layouts_for_every_qos_class() {
        for (path, want) in [
            (
                format!("/kubepods/burstable/pod{UID}/{CID}"),
                pod(UID, Some(CID)),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{CID}"),
                pod(UID, Some(CID)),
            ),
            (format!("/kubepods/pod{UID}/{CID}"), pod(UID, Some(CID))),
            (format!("/kubepods/pod{UID}"), pod(UID, None)),
            // Static pods are named by a 32-hex config hash.
            (
                format!("/kubepods/pod0123456789abcdef0123456789abcdef/{CID}"),
                pod("0123456789abcdef0123456789abcdef", Some(CID)),
            ),
            // Nested below a kind/k3s parent cgroup.
            (
                format!("/kubelet/kubepods/burstable/pod{UID}/{CID}"),
                pod(UID, Some(CID)),
            ),
        ] {
            assert_eq!(owner_of_path(&path), want, "{path}");
        }
    }

    #[test]
    fn a_non_container_child_of_a_pod_has_no_container_id() {
        assert_eq!(
            owner_of_path(&format!("/kubepods/burstable/pod{UID}/not-an-id")),
            pod(UID, None)
        );
    }

    #[test]
    fn systemd_units_outside_kubepods() {
        assert_eq!(
            owner_of_path("/system.slice/cron.service"),
            unit("cron.service")
        );
        assert_eq!(
            owner_of_path("/user.slice/user-0.slice/session-3.scope"),
            unit("session-3.scope")
        );
        assert_eq!(
            owner_of_path("/system.slice/containerd.service/kubepods-x"),
            unit("containerd.service")
        );
        assert_eq!(owner_of_path("/"), CgroupOwner::default());
        assert_eq!(
            owner_of_path("/snapmend-culprit-test"),
            CgroupOwner::default()
        );
    }

    #[test]
    fn lookalikes_are_not_pods() {
        // "pod" prefix without a UID, outside kubepods, or with a malformed UID.
        assert_eq!(
            owner_of_path("/kubepods/burstable/podcast"),
            CgroupOwner::default()
        );
        assert_eq!(
            owner_of_path(&format!("/elsewhere/pod{UID}/{CID}")),
            CgroupOwner::default()
        );
        assert_eq!(
            owner_of_path("/kubepods/pod1f2e3d4c-5b6a-4789-8abc-def01234567z/x"),
            CgroupOwner::default()
        );
        assert_eq!(
            owner_of_path(&format!("/kubepods.slice/other-pod{UID_}.slice")),
            CgroupOwner::default()
        );
    }

    #[test]
    fn proc_cgroup_of_v1_v2_and_hybrid_hosts() {
        let v2 =
            format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n");
        assert_eq!(owner_of_proc_cgroup(&v2), pod(UID, Some(CID)));
        assert_eq!(
            display_path(&v2).unwrap(),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope")
        );

        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CID}\n11:memory:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        );
        assert_eq!(owner_of_proc_cgroup(&v1), pod(UID, Some(CID)));
        assert_eq!(
            display_path(&v1).unwrap(),
            format!("/kubepods/burstable/pod{UID}/{CID}")
        );

        let hybrid = "9:name=systemd:/system.slice/cron.service\n4:memory:/\n0::/system.slice/cron.service\n";
        assert_eq!(owner_of_proc_cgroup(hybrid), unit("cron.service"));
        assert_eq!(display_path(hybrid).unwrap(), "/system.slice/cron.service");

        // Unified root, systemd hierarchy set: the systemd one is shown.
        let v1_only = "9:name=systemd:/user.slice/session-1.scope\n4:memory:/x\n0::/\n";
        assert_eq!(
            display_path(v1_only).unwrap(),
            "/user.slice/session-1.scope"
        );
        // Everything at the root.
        assert_eq!(display_path("0::/\n").unwrap(), "/");
        assert_eq!(display_path(""), None);
        // Garbage lines are skipped.
        assert_eq!(owner_of_proc_cgroup("garbage\n\n"), CgroupOwner::default());
    }
}
