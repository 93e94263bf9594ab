//! `snapmend-sim --auth` with the real kubectl and deploy/'s RBAC and policy: an agent's
//! Pod-bound token (`kubectl create token --bound-object-kind Pod`) may write its own node's
//! SnapshotRepair report and its own Lease, and nothing of another node, of the operator, or
//! outside what RBAC grants; without a token the server answers 401.
//! Fails (never skips) when kubectl is missing; `KUBECTL` picks another binary.

// Helpers outside #[test] functions unwrap too: a panic is a failing test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use snapmend_tests::sim::{BackgroundSim, SimConfig};

const NS: &str = "snapmend-system";
const AGENT_SA: &str = "snapmend-node-helper";

struct Cluster {
    sim: BackgroundSim,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Cluster {
    fn start() -> Self {
        let binary = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let sim = BackgroundSim::start_with(SimConfig {
            auth: true,
            ..SimConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        sim.write_kubeconfig(&dir.path().join("admin")).unwrap();
        Self { sim, dir, binary }
    }

    /// kubectl as the user of kubeconfig `who` (a file in the test's directory).
    fn run(&self, who: &str, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(self.dir.path().join(who))
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-{who}")))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            out.status.success(),
            "kubectl ({who}) {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            !out.status.success(),
            "kubectl ({who}) {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        self.ok("admin", &["apply", "-f", path.to_str().unwrap()]);
    }

    /// A kubeconfig named `who` holding a token made by `kubectl create token` for
    /// ServiceAccount `sa`, bound to Pod `pod`.
    fn token_for_pod(&self, who: &str, sa: &str, pod: &str) -> String {
        let token = self
            .ok(
                "admin",
                &[
                    "create",
                    "token",
                    sa,
                    "-n",
                    NS,
                    "--bound-object-kind",
                    "Pod",
                    "--bound-object-name",
                    pod,
                ],
            )
            .trim()
            .to_string();
        assert!(!token.is_empty());
        self.sim
            .server()
            .write_kubeconfig_with_token(&self.dir.path().join(who), Some(&token))
            .unwrap();
        token
    }
}

/// A server-side apply of a SnapshotRepair's status with `token`, as the agent writes its
/// report (kubectl's `patch --subresource=status` would first GET the status, which the
/// agent's RBAC does not grant). The error's text on failure.
fn apply_status(
    c: &Cluster,
    token: &str,
    manager: &str,
    name: &str,
    status: Value,
) -> Result<(), String> {
    let server = c.sim.server();
    c.sim.handle().block_on(async {
        let client = server.client_with_token(token).map_err(|e| e.to_string())?;
        let resource = ApiResource {
            group: "snapmend.io".into(),
            version: "v1alpha1".into(),
            api_version: "snapmend.io/v1alpha1".into(),
            kind: "SnapshotRepair".into(),
            plural: "snapshotrepairs".into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client, &resource);
        let body = json!({"apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair",
                          "metadata": {"name": name}, "status": status});
        api.patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    })
}

fn node_and_agent_pod(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: agent-{node}\n  namespace: {NS}\nspec:\n  nodeName: {node}\n  serviceAccountName: {AGENT_SA}\n  containers:\n  - name: agent\n    image: snapmend/node-helper\n"
    )
}

fn repair(name: &str, node: &str) -> String {
    format!(
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  image: registry.k8s.io/pause:3.10\n"
    )
}

fn lease(name: &str) -> String {
    format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  holderIdentity: x\n"
    )
}

#[test]
fn an_agent_token_writes_only_its_own_nodes_report_and_lease() {
    let c = Cluster::start();
    c.ok(
        "admin",
        &["apply", "-k", repo().join("deploy").to_str().unwrap()],
    );
    c.apply("a.yaml", &node_and_agent_pod("node-a"));
    c.apply("b.yaml", &node_and_agent_pod("node-b"));
    c.apply("ra.yaml", &repair("repair-a", "node-a"));
    c.apply("rb.yaml", &repair("repair-b", "node-b"));
    // The operator's part of the status, written by the admin.
    for r in ["repair-a", "repair-b"] {
        c.ok(
            "admin",
            &[
                "patch",
                "snapshotrepair",
                r,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Verifying","message":"verifying"}}"#,
            ],
        );
    }
    let token = c.token_for_pod("agent-a", AGENT_SA, "agent-node-a");
    let report = || json!({"report": {"image": "registry.k8s.io/pause:3.10", "outcome": "Healthy", "requestId": "r1"}});

    // Its own report and its own Lease.
    apply_status(&c, &token, "snapmend-node-helper", "repair-a", report()).unwrap();
    let lease_a = c.dir.path().join("lease-a.yaml");
    std::fs::write(&lease_a, lease("snapmend-node-helper.node-a")).unwrap();
    c.ok("agent-a", &["create", "-f", lease_a.to_str().unwrap()]);
    c.ok("agent-a", &["replace", "-f", lease_a.to_str().unwrap()]);
    assert!(
        c.ok("agent-a", &["get", "snapshotrepairs", "-o", "name"])
            .contains("repair-b")
    );

    // Another node's report: refused by the policy, naming it.
    let e = apply_status(&c, &token, "snapmend-node-helper", "repair-b", report()).unwrap_err();
    assert!(
        e.contains("snapshotrepairs.snapmend.io \"repair-b\" is forbidden: ValidatingAdmissionPolicy 'snapmend-node-helper-own-node' with binding 'snapmend-node-helper-own-node' denied request: the node agent of node-a may write only SnapshotRepairs of its own node, not of node-b"),
        "{e}"
    );
    // An operator-owned status field of its own node's repair.
    let e = apply_status(
        &c,
        &token,
        "snapmend-node-helper",
        "repair-a",
        json!({"phase": "Succeeded", "report": report()["report"]}),
    )
    .unwrap_err();
    assert!(
        e.contains("is forbidden: ValidatingAdmissionPolicy 'snapmend-node-helper-own-node'"),
        "{e}"
    );
    assert!(e.contains("may change only status.report"), "{e}");
    // Through kubectl the agent cannot even read the status it would patch.
    let e = c.fails(
        "agent-a",
        &[
            "patch",
            "snapshotrepair",
            "repair-b",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ],
    );
    assert!(
        e.contains("cannot get resource \"snapshotrepairs/status\""),
        "{e}"
    );
    let phase = c.ok(
        "admin",
        &[
            "get",
            "snapshotrepair",
            "repair-a",
            "-o",
            "jsonpath={.status.phase}/{.status.report.outcome}",
        ],
    );
    assert_eq!(phase, "Verifying/Healthy");

    // Another node's Lease and the operator's leader Lease.
    for name in ["snapmend-node-helper.node-b", "snapmend-operator"] {
        let f = c.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, lease(name)).unwrap();
        let e = c.fails("agent-a", &["create", "-f", f.to_str().unwrap()]);
        assert!(
            e.contains("ValidatingAdmissionPolicy 'snapmend-node-helper-own-node'")
                && e.contains(&format!(
                    "may write only the Lease snapmend-node-helper.node-a, not {name}"
                )),
            "{e}"
        );
    }
    // The operator's Lease, once it exists, cannot be replaced either.
    c.ok(
        "admin",
        &[
            "create",
            "-f",
            c.dir
                .path()
                .join("snapmend-operator.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    let e = c.fails(
        "agent-a",
        &[
            "replace",
            "-f",
            c.dir
                .path()
                .join("snapmend-operator.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(e.contains("snapmend-node-helper-own-node"), "{e}");

    // What RBAC does not grant at all: 403 worded as kube-apiserver words it.
    let e = c.fails("agent-a", &["get", "secrets", "-n", "kube-system"]);
    assert!(
        e.contains("secrets is forbidden: User \"system:serviceaccount:snapmend-system:snapmend-node-helper\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""),
        "{e}"
    );
    let e = c.fails("agent-a", &["cordon", "node-b"]);
    assert!(
        e.contains("nodes \"node-b\" is forbidden: User \"system:serviceaccount:snapmend-system:snapmend-node-helper\" cannot"),
        "{e}"
    );
    let e = c.fails(
        "agent-a",
        &[
            "patch",
            "snapshotrepair",
            "repair-a",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeName":"node-a"}}"#,
        ],
    );
    assert!(e.contains("cannot patch resource \"snapshotrepairs\" in API group \"snapmend.io\" at the cluster scope"), "{e}");

    // kubectl auth can-i, through SelfSubjectAccessReview.
    assert_eq!(
        c.ok(
            "agent-a",
            &[
                "auth",
                "can-i",
                "patch",
                "snapshotrepairs",
                "--subresource=status"
            ]
        )
        .trim(),
        "yes"
    );
    let no = c.run("agent-a", &["auth", "can-i", "patch", "snapshotrepairs"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert_eq!(
        c.ok(
            "agent-a",
            &["auth", "can-i", "watch", "snapshotrepairs.snapmend.io"]
        )
        .trim(),
        "yes"
    );
    let no = c.run(
        "agent-a",
        &["auth", "can-i", "get", "secrets", "-n", "kube-system"],
    );
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let no = c.run("agent-a", &["auth", "can-i", "patch", "nodes"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert_eq!(
        c.ok("admin", &["auth", "can-i", "delete", "nodes"]).trim(),
        "yes"
    );

    // No token, or a wrong one: 401 with kube-apiserver's Status.
    for token in [None, Some("forged")] {
        let server = c.sim.server();
        let status = c.sim.handle().block_on(async {
            let config = server.kube_config_with_token(token).unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
            api.list(&Default::default()).await.unwrap_err()
        });
        match status {
            kube::Error::Api(s) => {
                assert_eq!(
                    (s.code, s.reason.as_str(), s.message.as_str()),
                    (401, "Unauthorized", "Unauthorized")
                );
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    // A Pod-bound token dies with its Pod.
    c.ok("admin", &["delete", "pod", "agent-node-a", "-n", NS]);
    let e = c.fails("agent-a", &["get", "snapshotrepairs"]);
    assert!(e.contains("Unauthorized"), "{e}");
}

/// The policy keeps every status field but `report` as it was: it must name every field the
/// CRD's status has, or a new field would be writable by any agent.
#[test]
fn the_policy_guards_every_operator_status_field_of_the_crd() {
    let crd: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/crd/snapshotrepair.yaml")).unwrap(),
    )
    .unwrap();
    let policy =
        std::fs::read_to_string(repo().join("deploy/policy/node-helper-own-node.yaml")).unwrap();
    for version in crd["spec"]["versions"].as_sequence().unwrap() {
        let fields = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            .as_mapping()
            .unwrap();
        for field in fields.keys().map(|k| k.as_str().unwrap()) {
            let guarded = policy.contains(&format!(
                "object.status.{field} == oldObject.status.{field}"
            ));
            assert_eq!(guarded, field != "report", "status.{field}");
        }
    }
}

/// kube-apiserver never lets one connection stall the others: clients that connect and never
/// finish their TLS handshake (silent, or half a ClientHello record) hold up no one, while 16
/// concurrent requests of an authenticated client complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalled_in_the_tls_handshake_hold_up_nobody() {
    use tokio::io::AsyncWriteExt;
    let sim = snapmend_tests::sim::SimServer::start_with(SimConfig {
        auth: true,
        ..SimConfig::default()
    })
    .await
    .expect("start snapmend-sim --auth");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(
            tokio::net::TcpStream::connect(sim.addr())
                .await
                .expect("connect"),
        );
    }
    // A handshake record header announcing 512 bytes that never come.
    let mut half = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .expect("write");
    let client = sim.client().expect("client");
    let started = std::time::Instant::now();
    let lists = (0..16).map(|_| {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        async move { namespaces.list(&Default::default()).await }
    });
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::future::join_all(lists),
    )
    .await
    .expect("the requests finished while other clients stall");
    for r in results {
        r.expect("list namespaces");
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "16 lists took {took:?}"
    );
    drop((stalled, half));
    sim.stop().await;
}
