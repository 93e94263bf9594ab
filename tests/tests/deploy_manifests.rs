//! deploy/ as `kubectl apply -k deploy/` sees it: valid against the Kubernetes schemas
//! (scripts/validate-manifests.sh, kubernetes-validate from PyPI), and holding the properties
//! the issue asks for: least-privilege RBAC, a hardened 2-replica operator, and an agent
//! DaemonSet that runs on every node, broken or cordoned.
//!
//! Needs kubectl (kustomize) and python3 with pip; fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_validator(deploy_dir: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/validate-manifests.sh"));
    if let Some(dir) = deploy_dir {
        cmd.env("SNAPMEND_DEPLOY_DIR", dir);
    }
    cmd.output().expect("run scripts/validate-manifests.sh")
}

/// Every object of `kubectl kustomize deploy/`.
fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy"))
        .output()
        .expect("kubectl must be installed (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("yaml document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn object<T: DeserializeOwned>(all: &[Value], kind: &str, name: &str) -> T {
    let found = all
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing from deploy/"));
    serde_yaml::from_value(found.clone()).unwrap_or_else(|e| panic!("{kind}/{name}: {e}"))
}

/// The same document whatever the key order and number spelling (kustomize prints `0.0` as `0`).
fn canonical(v: Value) -> serde_json::Value {
    canonical_json(serde_json::to_value(v).expect("yaml as json"))
}

fn canonical_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
        serde_json::Value::Array(a) => a.into_iter().map(canonical_json).collect(),
        serde_json::Value::Object(m) => {
            m.into_iter().map(|(k, v)| (k, canonical_json(v))).collect()
        }
        other => other,
    }
}

fn rules_of(rules: &Option<Vec<PolicyRule>>) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in rules.as_deref().unwrap_or_default() {
        assert!(r.non_resource_urls.is_none());
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                let mut verbs = r.verbs.clone();
                verbs.sort();
                out.push((g.clone(), res.clone(), verbs));
            }
        }
    }
    out.sort();
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
    let mut verbs: Vec<String> = verbs.iter().map(|v| v.to_string()).collect();
    verbs.sort();
    (group.into(), resource.into(), verbs)
}

fn pod_spec_of_daemonset(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

fn probe_path(p: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<String> {
    p.as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
}

#[test]
fn every_manifest_validates_offline_against_the_kubernetes_schemas() {
    let out = run_validator(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validate-manifests failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("valid against Kubernetes 1.33.0 (strict)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("valid against Kubernetes 1.37.0 (strict)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("examples valid against their CRD schemas"),
        "{stdout}"
    );
}

#[test]
fn the_validator_rejects_a_broken_manifest_and_a_broken_example() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("deploy");
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());

    let ds = copy.join("node-helper/daemonset.yaml");
    let text = std::fs::read_to_string(&ds).expect("read");
    std::fs::write(&ds, text.replace("hostPID: true", "hostPid: true")).expect("write");
    let out = run_validator(Some(&copy));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a misspelt field must fail validation"
    );
    assert!(said.contains("hostPid"), "{said}");

    std::fs::write(&ds, text).expect("restore");
    std::fs::write(
        copy.join("examples/zz-broken.yaml"),
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata: {name: x}\n\
         spec: {nodeName: a, image: 'x:1', action: Fix}\n",
    )
    .expect("write example");
    let out = run_validator(Some(&copy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an invalid SnapshotRepair example must fail validation"
    );
    assert!(stderr.contains("spec.action"), "{stderr}");

    // A SnapshotScan example is checked against its own CRD: a schedule of six fields fails.
    std::fs::remove_file(copy.join("examples/zz-broken.yaml")).expect("rm");
    std::fs::write(
        copy.join("examples/zz-broken-scan.yaml"),
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotScan\nmetadata: {name: x}\n\
         spec: {schedule: '0 0 3 * * *'}\n",
    )
    .expect("write example");
    let out = run_validator(Some(&copy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a six-field schedule must fail");
    assert!(stderr.contains("spec.schedule"), "{stderr}");
}

#[test]
fn namespace_and_crds_are_part_of_the_base() {
    let all = rendered();
    let ns: Value = object(&all, "Namespace", "snapmend-system");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for (name, file) in [
        ("snapshotrepairs.snapmend.io", "crds/snapshotrepair.yaml"),
        ("snapshotscans.snapmend.io", "crds/snapshotscan.yaml"),
    ] {
        let crd: Value = object(&all, "CustomResourceDefinition", name);
        let committed: Value =
            serde_yaml::from_str(&std::fs::read_to_string(repo().join(file)).expect("crd"))
                .expect("yaml");
        let mut crd_without_labels = crd.clone();
        if let Some(meta) = crd_without_labels["metadata"].as_mapping_mut() {
            meta.remove("labels");
        }
        assert_eq!(
            canonical(crd_without_labels),
            canonical(committed),
            "deploy/ ships the generated {name} unchanged"
        );
    }
}

#[test]
fn the_agent_may_only_read_repairs_patch_their_status_and_keep_its_lease() {
    let all = rendered();
    let cluster: ClusterRole = object(&all, "ClusterRole", "snapmend-node-helper");
    assert_eq!(
        rules_of(&cluster.rules),
        vec![
            // The culprit guard's SnapshotTampered Events on the Node.
            rule("events.k8s.io", "events", &["create", "patch"]),
            rule("snapmend.io", "snapshotrepairs", &["get", "list", "watch"]),
            rule("snapmend.io", "snapshotrepairs/status", &["patch"]),
        ]
    );
    let role: Role = object(&all, "Role", "snapmend-node-helper-presence");
    assert_eq!(role.metadata.namespace.as_deref(), Some("snapmend-system"));
    assert_eq!(
        rules_of(&role.rules),
        // Which Lease is the policy's business (deploy/policy/node-helper-own-node.yaml).
        vec![rule(
            "coordination.k8s.io",
            "leases",
            &["create", "get", "update"]
        )]
    );
    // Secrets: get, in its own namespace only (the operator's pull-secret copies).
    let pull: Role = object(&all, "Role", "snapmend-node-helper-pull-secrets");
    assert_eq!(pull.metadata.namespace.as_deref(), Some("snapmend-system"));
    assert_eq!(rules_of(&pull.rules), vec![rule("", "secrets", &["get"])]);
    let crb: ClusterRoleBinding = object(&all, "ClusterRoleBinding", "snapmend-node-helper");
    assert_eq!(crb.role_ref.name, "snapmend-node-helper");
    let rb: RoleBinding = object(&all, "RoleBinding", "snapmend-node-helper-presence");
    assert_eq!(rb.role_ref.kind, "Role");
    let pull_rb: RoleBinding = object(&all, "RoleBinding", "snapmend-node-helper-pull-secrets");
    assert_eq!(
        (
            pull_rb.role_ref.kind.as_str(),
            pull_rb.role_ref.name.as_str()
        ),
        ("Role", "snapmend-node-helper-pull-secrets")
    );
    assert_eq!(
        pull_rb.metadata.namespace.as_deref(),
        Some("snapmend-system")
    );
    // No cluster-wide Secret access of any kind for the agent.
    for o in all.iter().filter(|o| o["kind"] == "ClusterRole") {
        let role: ClusterRole = serde_yaml::from_value(o.clone()).expect("ClusterRole");
        if role.metadata.name.as_deref() == Some("snapmend-node-helper") {
            assert!(rules_of(&role.rules).iter().all(|(_, r, _)| r != "secrets"));
        }
    }
    for subjects in [crb.subjects, rb.subjects, pull_rb.subjects] {
        let s = subjects.expect("subjects");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, "ServiceAccount");
        assert_eq!(s[0].name, "snapmend-node-helper");
        assert_eq!(s[0].namespace.as_deref(), Some("snapmend-system"));
    }
}

#[test]
fn the_operator_has_what_it_needs_and_reads_secrets_only_by_name() {
    let all = rendered();
    let cluster: ClusterRole = object(&all, "ClusterRole", "snapmend-operator");
    let rules = rules_of(&cluster.rules);
    assert_eq!(
        rules,
        vec![
            rule("", "events", &["list", "watch"]),
            rule("", "nodes", &["get", "list", "patch", "watch"]),
            rule("", "nodes/status", &["patch"]),
            rule("", "pods", &["get", "list", "watch"]),
            // spec.pullSecrets and a failed pod's ServiceAccount: by name, never listed.
            rule("", "secrets", &["get"]),
            rule("", "serviceaccounts", &["get"]),
            rule(
                "events.k8s.io",
                "events",
                &["create", "list", "patch", "watch"]
            ),
            // No update (PUT) anywhere: every write is a patch or an apply.
            rule(
                "snapmend.io",
                "snapshotrepairs",
                &["create", "delete", "get", "list", "patch", "watch"]
            ),
            rule("snapmend.io", "snapshotrepairs/status", &["patch"]),
            // SnapshotScans: read, and only their status written.
            rule("snapmend.io", "snapshotscans", &["get", "list", "watch"]),
            rule("snapmend.io", "snapshotscans/status", &["patch"]),
        ]
    );
    let role: Role = object(&all, "Role", "snapmend-operator-leases");
    assert_eq!(role.metadata.namespace.as_deref(), Some("snapmend-system"));
    assert_eq!(
        rules_of(&role.rules),
        vec![
            rule("coordination.k8s.io", "leases", &["create"]),
            rule("coordination.k8s.io", "leases", &["get", "patch", "update"]),
            rule("coordination.k8s.io", "leases", &["list", "watch"]),
        ]
    );
    let own = role.rules.as_ref().and_then(|r| r.last()).expect("rules");
    assert_eq!(
        own.resource_names.as_deref(),
        Some(&["snapmend-operator".to_string()][..]),
        "only its own leader Lease"
    );
    for (g, r, verbs) in rules {
        assert!(!verbs.iter().any(|v| v == "*"), "{g}/{r}: {verbs:?}");
        // Deleting: only SnapshotRepairs, those of scan runs beyond spec.historyLimit.
        assert!(
            r == "snapshotrepairs" || !verbs.iter().any(|v| v == "delete"),
            "{g}/{r}: {verbs:?}"
        );
        if r == "secrets" {
            assert_eq!(verbs, ["get"], "no list or watch of Secrets cluster-wide");
        }
    }
    // Writing Secrets: only the pull-secret copies, in its own namespace.
    let copies: Role = object(&all, "Role", "snapmend-operator-pull-secrets");
    assert_eq!(
        copies.metadata.namespace.as_deref(),
        Some("snapmend-system")
    );
    assert_eq!(
        rules_of(&copies.rules),
        vec![rule("", "secrets", &["create", "delete", "patch"])]
    );
    let rb: RoleBinding = object(&all, "RoleBinding", "snapmend-operator-pull-secrets");
    assert_eq!(rb.role_ref.name, "snapmend-operator-pull-secrets");
    let subjects = rb.subjects.expect("subjects");
    assert_eq!(subjects[0].name, "snapmend-operator");
}

#[test]
fn the_operator_deployment_is_two_hardened_replicas_with_probes() {
    let all = rendered();
    let d: Deployment = object(&all, "Deployment", "snapmend-operator");
    assert_eq!(d.metadata.namespace.as_deref(), Some("snapmend-system"));
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("snapmend-operator")
    );
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let c = only_container(pod);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.is_none());
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let res = c.resources.as_ref().expect("resources");
    assert!(
        res.requests
            .as_ref()
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(
        res.limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory"))
    );
    let args = c.args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--metrics-addr=0.0.0.0:8080".to_string()),
        "{args:?}"
    );
    let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let pdb: Value = object(&all, "PodDisruptionBudget", "snapmend-operator");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "one of the two replicas stays up"
    );
    assert!(
        c.image
            .as_deref()
            .is_some_and(|i| i.starts_with("snapmend/operator:")),
        "{:?}",
        c.image
    );
}

#[test]
fn the_agent_daemonset_runs_privileged_on_every_node_with_the_containerd_store() {
    let all = rendered();
    let ds: DaemonSet = object(&all, "DaemonSet", "snapmend-node-helper");
    assert_eq!(ds.metadata.namespace.as_deref(), Some("snapmend-system"));
    let pod = pod_spec_of_daemonset(&ds);
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("snapmend-node-helper")
    );
    assert_eq!(pod.host_pid, Some(true));
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .expect("rolling update");
    assert_eq!(
        rolling.max_surge,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)),
        "never two agents on one node"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "must tolerate every taint, unschedulable included: {tolerations:?}"
    );

    let c = only_container(pod);
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("agent"));
    assert!(
        args.contains(&"--node=$(NODE_NAME)".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--metrics-addr=0.0.0.0:8081".to_string()),
        "{args:?}"
    );
    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME env");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("memory"))
    );

    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let mount = |path: &str| mounts.iter().find(|m| m.mount_path == path).expect(path);
    let root = mount("/var/lib/containerd");
    assert_eq!(
        host_path(&root.name).as_deref(),
        Some("/var/lib/containerd")
    );
    assert_ne!(
        root.read_only,
        Some(true),
        "repairs write into the snapshots"
    );
    let config = mount("/etc/containerd");
    assert_eq!(host_path(&config.name).as_deref(), Some("/etc/containerd"));
    assert_eq!(config.read_only, Some(true));
    // The fetched-blob cache is snapmend's own directory, never containerd's content store.
    let cache = mount("/var/lib/snapmend/blobs");
    assert_eq!(
        host_path(&cache.name).as_deref(),
        Some("/var/lib/snapmend/blobs")
    );
    // The TOC cache (--toc-cache default) outlives the agent's pod, like the blob cache.
    let toc = mount("/var/lib/snapmend/toc");
    assert_eq!(
        host_path(&toc.name).as_deref(),
        Some("/var/lib/snapmend/toc")
    );

    // Registry credentials of the node, read-only: kubelet's directory (for config.json,
    // which may not exist: a hostPath of the file itself would get something created in its
    // place) and the credential provider plugins at EKS's paths, passed to the agent.
    let host_type = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .and_then(|h| h.type_.clone())
    };
    let kubelet = mount("/var/lib/kubelet");
    assert_eq!(kubelet.read_only, Some(true));
    assert_eq!(
        host_path(&kubelet.name).as_deref(),
        Some("/var/lib/kubelet")
    );
    assert_eq!(host_type(&kubelet.name).as_deref(), Some("Directory"));
    for v in volumes {
        if let Some(h) = &v.host_path {
            assert!(
                !h.path.ends_with("config.json"),
                "a file hostPath that may not exist: {}",
                h.path
            );
        }
    }
    let providers = mount("/etc/eks/image-credential-provider");
    assert_eq!(providers.read_only, Some(true));
    assert_eq!(
        host_path(&providers.name).as_deref(),
        Some("/etc/eks/image-credential-provider")
    );
    for flag in [
        "--credential-provider-config=/etc/eks/image-credential-provider/config.json",
        "--credential-provider-bin-dir=/etc/eks/image-credential-provider",
    ] {
        assert!(args.contains(&flag.to_string()), "{args:?}");
    }
}

#[test]
fn dockerfiles_are_multi_stage_and_build_each_binary() {
    for (file, bin) in [
        ("operator.Dockerfile", "snapmend-operator"),
        ("node-helper.Dockerfile", "snapmend-node-helper"),
    ] {
        let text = std::fs::read_to_string(repo().join("deploy/docker").join(file)).expect(file);
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(stages.len(), 2, "{file}: builder and runtime stages");
        assert!(
            stages[0].contains("rust:") && stages[0].contains(" AS build"),
            "{file}"
        );
        assert!(
            text.contains(&format!("--locked -p {bin} --bin {bin}")),
            "{file}"
        );
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}"
        );
        assert!(
            repo()
                .join("deploy/docker")
                .join(format!("{file}.dockerignore"))
                .exists()
        );
    }
}
