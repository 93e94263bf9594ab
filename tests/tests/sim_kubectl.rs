//! The real kubectl against snapmend-sim. These tests fail (never skip) when kubectl is missing;
//! set `KUBECTL` to use another binary than the one on PATH.

// Helpers outside #[test] functions unwrap too: a panic is a failing test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use snapmend_tests::sim::BackgroundSim;

struct Kubectl {
    sim: BackgroundSim,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Kubectl {
    fn start() -> Self {
        let binary = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let probe = Command::new(&binary).args(["version", "--client"]).output();
        assert!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "kubectl is required for these tests (install it with scripts/install-test-deps.sh): {probe:?}"
        );
        let sim = BackgroundSim::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        sim.write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Self { sim, dir, binary }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs kubectl, asserting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl, asserting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn apply(&self, name: &str, yaml: &str) -> String {
        let f = self.file(name, yaml);
        self.ok(&["apply", "-f", &f])
    }
}

/// Whitespace-separated cells of the table line whose first cell is `name`.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
}

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [gadgets]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    selectableFields:
    - jsonPath: .spec.color
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: boolean, jsonPath: .status.ready}
    - {name: First-Part, type: string, jsonPath: ".spec.parts[0].name"}
    - {name: Owner, type: string, jsonPath: .spec.owner, priority: 1}
    - {name: Synced, type: string, jsonPath: '.status.conditions[?(@.type=="Synced")].status', priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [color]
            x-kubernetes-validations:
            - rule: "!has(self.size) || self.size % 2 == 0"
              message: size must be even
            properties:
              color:
                type: string
                enum: [red, green, blue]
                x-kubernetes-validations:
                - {rule: "self == oldSelf", message: color is immutable}
              size: {type: integer, minimum: 0, maximum: 100, default: 2}
              owner: {type: string}
              parts:
                type: array
                items:
                  type: object
                  properties:
                    name: {type: string}
          status:
            type: object
            properties:
              ready: {type: boolean}
              message: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

fn widget(name: &str, color: &str, extra: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels:\n    tier: front\nspec:\n  color: {color}\n  owner: team-a\n  parts:\n  - name: bolt\n  - name: nut\n{extra}"
    )
}

#[test]
fn crd_columns_status_generation_selectors_and_validation() {
    let k = Kubectl::start();
    assert!(
        k.apply("crd.yaml", WIDGET_CRD)
            .contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created")
    );
    let crds = k.ok(&["get", "crd"]);
    assert_eq!(header(&crds), ["NAME", "CREATED", "AT"]);
    k.apply("w1.yaml", &widget("w1", "red", ""));
    k.apply("w2.yaml", &widget("w2", "blue", "  size: 8\n"));

    let table = k.ok(&["get", "widgets"]);
    assert_eq!(
        header(&table),
        ["NAME", "COLOR", "SIZE", "READY", "FIRST-PART", "AGE"]
    );
    // READY has no value yet: kubectl prints an empty cell for it.
    let w1 = row(&table, "w1");
    assert_eq!(
        &w1[1..4],
        ["red", "2", "bolt"],
        "size defaulted to 2: {table}"
    );
    assert!(w1[4].ends_with('s'), "age like 0s: {table}");
    let wide = k.ok(&["get", "wd", "-o", "wide"]);
    assert!(header(&wide).contains(&"OWNER".to_string()), "{wide}");
    assert_eq!(
        row(&k.ok(&["get", "gadgets"]), "w1")[1],
        "red",
        "category lookup"
    );
    let custom = k.ok(&[
        "get",
        "wd",
        "-o",
        "custom-columns=N:.metadata.name,P:.spec.parts[*].name",
    ]);
    assert_eq!(row(&custom, "w1")[1], "bolt,nut");

    // Status is isolated from spec, and only spec changes bump the generation.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true},"spec":{"owner":"ignored"}}"#,
    ]);
    assert_eq!(row(&k.ok(&["get", "wd", "w1"]), "w1")[3], "true");
    k.ok(&["patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"Synced","status":"False"}]}}"#]);
    let wide = k.ok(&["get", "wd", "w1", "-o", "wide"]);
    assert_eq!(header(&wide)[5..7], ["OWNER", "SYNCED"], "{wide}");
    assert_eq!(row(&wide, "w1")[5..7], ["team-a", "False"], "{wide}");
    assert_eq!(
        k.ok(&[
            "get",
            "wd",
            "w1",
            "-o",
            "jsonpath={.metadata.generation} {.spec.owner}"
        ]),
        "1 team-a"
    );
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"owner":"team-b"},"status":{"ready":false}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "wd",
            "w1",
            "-o",
            "jsonpath={.metadata.generation} {.status.ready}"
        ]),
        "2 true"
    );

    // Label and field selectors (the CRD's selectableFields).
    k.ok(&["label", "widget", "w2", "tier=back", "--overwrite"]);
    assert_eq!(
        k.ok(&["get", "wd", "-l", "tier=front", "-o", "name"])
            .trim(),
        "widget.example.com/w1"
    );
    assert_eq!(
        k.ok(&["get", "wd", "-l", "tier in (back)", "-o", "name"])
            .trim(),
        "widget.example.com/w2"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "wd",
            "--field-selector",
            "spec.color=blue",
            "-o",
            "name"
        ])
        .trim(),
        "widget.example.com/w2"
    );
    assert!(
        k.fails(&["get", "wd", "--field-selector", "spec.owner=x"])
            .contains("field label not supported")
    );
    k.ok(&["annotate", "widget", "w2", "note=hello"]);
    assert_eq!(
        k.ok(&[
            "get",
            "wd",
            "w2",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "hello"
    );

    // Schema, enum, default, CEL and transition-rule validation.
    let enum_err = k.fails(&[
        "apply",
        "-f",
        &k.file("bad1.yaml", &widget("w3", "purple", "")),
    ]);
    assert!(
        enum_err.contains("Unsupported value: \"purple\""),
        "{enum_err}"
    );
    let cel_err = k.fails(&[
        "apply",
        "-f",
        &k.file("bad2.yaml", &widget("w3", "red", "  size: 3\n")),
    ]);
    assert!(cel_err.contains("size must be even"), "{cel_err}");
    let max_err = k.fails(&[
        "apply",
        "-f",
        &k.file("bad3.yaml", &widget("w3", "red", "  size: 102\n")),
    ]);
    assert!(max_err.contains("less than or equal to 100"), "{max_err}");
    let type_err = k.fails(&[
        "apply",
        "-f",
        &k.file("bad4.yaml", &widget("w3", "red", "  size: big\n")),
    ]);
    assert!(type_err.contains("must be of type integer"), "{type_err}");
    let unknown = k.fails(&[
        "apply",
        "-f",
        &k.file("bad5.yaml", &widget("w3", "red", "  shape: round\n")),
    ]);
    assert!(
        unknown.contains("unknown field \"spec.shape\""),
        "{unknown}"
    );
    let required = k.fails(&[
        "apply",
        "-f",
        &k.file(
            "bad6.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w4\nspec: {}\n",
        ),
    ]);
    assert!(
        required.contains("spec.color: Required value"),
        "{required}"
    );
    let immutable = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"color":"green"}}"#,
    ]);
    assert!(immutable.contains("color is immutable"), "{immutable}");

    let described = k.ok(&["describe", "widget", "w1"]);
    assert!(
        described.contains("Name:         w1")
            && described.contains("Color:")
            && described.contains("Ready:     true"),
        "{described}"
    );
}

#[test]
fn project_crd_shows_its_columns() {
    let k = Kubectl::start();
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/snapshotrepair.yaml");
    k.ok(&["apply", "-f", crd]);
    k.apply("sr.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: pause-on-a\nspec:\n  nodeName: node-a\n  sandboxImage: true\n");
    k.ok(&[
        "patch",
        "sr",
        "pause-on-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded","target":"sandbox","findings":"1 missing"}}"#,
    ]);
    let table = k.ok(&["get", "sr"]);
    assert_eq!(
        header(&table),
        [
            "NAME", "NODE", "TARGET", "ACTION", "PHASE", "FINDINGS", "AGE"
        ]
    );
    let r = row(&table, "pause-on-a");
    assert_eq!(&r[1..6], ["node-a", "sandbox", "Repair", "Succeeded", "1"]);
    assert_eq!(
        row(&k.ok(&["get", "snapmend"]), "pause-on-a")[1],
        "node-a",
        "category lookup"
    );
    let both = k.fails(&["apply", "-f", &k.file("bad.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: bad\nspec:\n  nodeName: node-x\n  image: busybox\n  sandboxImage: true\n")]);
    assert!(
        both.contains("exactly one of image, sandboxImage and allImages must be set"),
        "{both}"
    );
    let moved = k.fails(&[
        "patch",
        "sr",
        "pause-on-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"nodeName":"node-b"}}"#,
    ]);
    assert!(moved.contains("nodeName is immutable"), "{moved}");
    // The target is immutable too: a change while the repair waits for a cordon slot would
    // have it repair an image it never verified.
    k.apply("img.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: app-on-a\nspec:\n  nodeName: node-b\n  image: registry.example/app:1\n");
    let retargeted = k.fails(&[
        "patch",
        "sr",
        "app-on-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"registry.example/app:2"}}"#,
    ]);
    assert!(retargeted.contains("image is immutable"), "{retargeted}");
    let to_sandbox = k.fails(&[
        "patch",
        "sr",
        "app-on-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":null,"sandboxImage":true}}"#,
    ]);
    assert!(to_sandbox.contains("is immutable"), "{to_sandbox}");
    let from_sandbox = k.fails(&[
        "patch",
        "sr",
        "pause-on-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"registry.example/app:1","sandboxImage":false}}"#,
    ]);
    assert!(from_sandbox.contains("is immutable"), "{from_sandbox}");
    // Other fields stay editable (e.g. turning a repair into a verification).
    k.ok(&[
        "patch",
        "sr",
        "app-on-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"action":"Verify"}}"#,
    ]);
    let huge = format!(
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: huge\nspec:\n  nodeName: node-a\n  image: registry.example/{}:1\n",
        "a".repeat(5000)
    );
    let too_long = k.fails(&["apply", "-f", &k.file("huge.yaml", &huge)]);
    assert!(too_long.contains("spec.image"), "{too_long}");
    assert!(
        too_long.len() < 2000,
        "the error does not echo the 5,000-character image: {} bytes",
        too_long.len()
    );
    assert_eq!(
        k.ok(&[
            "get",
            "sr",
            "--field-selector",
            "spec.nodeName=node-a",
            "-o",
            "name"
        ])
        .trim(),
        "snapshotrepair.snapmend.io/pause-on-a"
    );
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    node-role.kubernetes.io/worker: ""
status:
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status}
  nodeInfo:
    kubeletVersion: v1.33.1
    containerRuntimeVersion: containerd://1.6.20
"#;

#[test]
fn nodes_cordon_uncordon_label_annotate_describe() {
    let k = Kubectl::start();
    k.apply("node.yaml", NODE);
    let nodes = k.ok(&["get", "nodes"]);
    assert_eq!(
        header(&nodes),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(row(&nodes, "node-a")[1..3], ["Ready", "worker"]);
    assert!(k.ok(&["cordon", "node-a"]).contains("node/node-a cordoned"));
    assert_eq!(
        row(&k.ok(&["get", "nodes"]), "node-a")[1],
        "Ready,SchedulingDisabled"
    );
    assert!(k.ok(&["cordon", "node-a"]).contains("already cordoned"));
    assert!(
        k.ok(&["uncordon", "node-a"])
            .contains("node/node-a uncordoned")
    );
    assert_eq!(row(&k.ok(&["get", "nodes"]), "node-a")[1], "Ready");
    k.ok(&["label", "node", "node-a", "zone=z1"]);
    k.ok(&["annotate", "node", "node-a", "owner=ops"]);
    assert_eq!(
        k.ok(&["get", "nodes", "-l", "zone=z1", "-o", "name"])
            .trim(),
        "node/node-a"
    );
    k.ok(&["label", "node", "node-a", "zone-"]);
    assert!(
        k.ok(&["get", "nodes", "-l", "zone", "-o", "name"])
            .trim()
            .is_empty()
    );
    let described = k.ok(&["describe", "node", "node-a"]);
    assert!(
        described.contains("owner: ops") && described.contains("Unschedulable:      false"),
        "{described}"
    );
}

const POD_AND_EVENTS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: node-a
  containers:
  - {name: c, image: "registry.k8s.io/pause:3.9"}
---
apiVersion: v1
kind: Event
metadata:
  name: web.sandbox
involvedObject: {kind: Pod, name: web, namespace: default}
reason: FailedCreatePodSandBox
type: Warning
message: 'exec: "/pause": stat /pause: no such file or directory'
source: {component: kubelet, host: node-a}
count: 3
lastTimestamp: "2026-01-01T00:00:00Z"
---
apiVersion: v1
kind: Event
metadata:
  name: web.scheduled
involvedObject: {kind: Pod, name: web, namespace: default}
reason: Scheduled
type: Normal
message: Successfully assigned default/web to node-a
source: {component: default-scheduler}
"#;

#[test]
fn events_with_field_selectors_and_pods() {
    let k = Kubectl::start();
    k.apply("objs.yaml", POD_AND_EVENTS);
    let events = k.ok(&["get", "events"]);
    assert_eq!(
        header(&events),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    let sandbox = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Pod,involvedObject.name=web,reason=FailedCreatePodSandBox",
    ]);
    assert!(
        sandbox.contains("pod/web") && sandbox.contains("/pause") && !sandbox.contains("Scheduled"),
        "{sandbox}"
    );
    let normal = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "type!=Warning",
        "-o",
        "name",
    ]);
    assert_eq!(normal.trim(), "event/web.scheduled");
    assert_eq!(
        k.ok(&[
            "get",
            "events",
            "--field-selector",
            "source=kubelet",
            "-o",
            "name"
        ])
        .trim(),
        "event/web.sandbox"
    );
    let pods = k.ok(&["get", "pods", "-o", "wide"]);
    let web = row(&pods, "web");
    assert_eq!(web[1..4], ["0/1", "Pending", "0"]);
    assert!(web.contains(&"node-a".to_string()));
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-a",
            "-o",
            "name"
        ])
        .trim(),
        "pod/web"
    );
    assert!(
        k.ok(&["get", "events.v1.events.k8s.io", "-o", "yaml"])
            .contains("note: 'exec: \"/pause\"")
    );
}

#[test]
fn finalizers_replace_conflicts_and_generate_name() {
    let k = Kubectl::start();
    k.apply("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata:\n  a: b\n");
    k.ok(&["delete", "configmap", "held", "--wait=false"]);
    assert!(
        !k.ok(&[
            "get",
            "cm",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty()
    );
    k.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(k.fails(&["get", "cm", "held"]).contains("NotFound"));

    k.apply(
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  a: b\n",
    );
    let live = k.ok(&["get", "cm", "shared", "-o", "yaml"]);
    let stale = k.file("stale.yaml", &live.replace("a: b", "a: mine"));
    k.ok(&["label", "cm", "shared", "changed=yes"]);
    let conflict = k.fails(&["replace", "-f", &stale]);
    assert!(
        conflict.contains("Conflict") && conflict.contains("the object has been modified"),
        "{conflict}"
    );

    let generated = k.file(
        "gen.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: job-\ndata:\n  a: b\n",
    );
    let first = k.ok(&["create", "-f", &generated]);
    let second = k.ok(&["create", "-f", &generated]);
    assert!(
        first.starts_with("configmap/job-")
            && second.starts_with("configmap/job-")
            && first != second,
        "{first} {second}"
    );
    let exists = k.fails(&[
        "create",
        "-f",
        &k.file(
            "dup.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n",
        ),
    ]);
    assert!(exists.contains("AlreadyExists"), "{exists}");
    let bad_name = k.fails(&["create", "configmap", "Bad_Name", "--from-literal=a=b"]);
    assert!(
        bad_name.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{bad_name}"
    );
    k.ok(&["create", "namespace", "team-a"]);
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-a",
        "--from-literal=mode=fast",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.mode}"
        ]),
        "fast"
    );
}

#[test]
fn get_watch_streams_changes() {
    let k = Kubectl::start();
    k.apply("crd.yaml", WIDGET_CRD);
    k.apply("w1.yaml", &widget("w1", "red", ""));
    let mut child = k
        .command(&["get", "widgets", "-w", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true}}"#,
    ]);
    k.apply("w2.yaml", &widget("w2", "green", ""));
    k.ok(&["delete", "widget", "w2"]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        header(&out),
        ["NAME", "COLOR", "SIZE", "READY", "FIRST-PART", "AGE"],
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("w1") && l.contains("true")),
        "status change streamed:\n{out}"
    );
    assert!(
        lines.iter().filter(|l| l.starts_with("w2")).count() >= 2,
        "w2 added and deleted:\n{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header:\n{out}"
    );
    drop(k.sim);
}

#[test]
fn deploy_manifests_apply_and_delete_with_kustomize() {
    let k = Kubectl::start();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let applied = k.ok(&["apply", "-k", deploy]);
    assert!(
        applied.contains(
            "customresourcedefinition.apiextensions.k8s.io/snapshotrepairs.snapmend.io created"
        ),
        "{applied}"
    );
    assert!(
        applied.contains("daemonset.apps/snapmend-node-helper created"),
        "{applied}"
    );
    assert!(k.ok(&["apply", "-k", deploy]).contains("unchanged"));
    let deleted = k.ok(&["delete", "-k", deploy, "--timeout=30s"]);
    assert!(
        deleted.contains("namespace \"snapmend-system\" deleted"),
        "{deleted}"
    );
    assert!(
        k.fails(&["get", "namespace", "snapmend-system"])
            .contains("NotFound")
    );
}

#[test]
fn the_binary_writes_a_kubeconfig_serves_kubectl_and_stops_on_sigterm() {
    let k = Kubectl::start();
    let kubeconfig = k.dir.path().join("binary-kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapmend-sim"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--verbose")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(&k.binary)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(k.dir.path().join("binary-cache"))
        .args(["get", "namespaces", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"),
        "{out:?}"
    );
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit 0 on SIGTERM: {exit:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("path=/api/v1/namespaces"),
        "requests are logged at debug level:\n{log}"
    );
}

/// kubectl's default (client-side, then server-side) validation of a List: kubectl downloads
/// `/openapi/v2` in protobuf for it, and gets a document it can parse.
#[test]
fn create_of_a_list_passes_kubectls_default_validation() {
    let k = Kubectl::start();
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: one\n  data:\n    a: \"1\"\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: two\n";
    let f = k.file("list.yaml", list);
    let out = k.ok(&["create", "-f", &f]);
    assert!(
        out.contains("configmap/one created") && out.contains("configmap/two created"),
        "{out}"
    );
    // The items are still validated, by the server (kubectl sends fieldValidation=Strict):
    // a custom resource with an unknown field is refused.
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crd/snapshotrepair.yaml"
    );
    k.ok(&["apply", "-f", crd]);
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: snapmend.io/v1alpha1\n  kind: SnapshotRepair\n  metadata:\n    name: r1\n  spec:\n    nodeName: node-a\n    sandboxImage: true\n    nodeNam: typo\n";
    let f = k.file("bad.yaml", bad);
    let e = k.fails(&["create", "-f", &f]);
    assert!(e.contains("unknown field \"spec.nodeNam\""), "{e}");
}

#[test]
fn scan_crd_shows_its_columns_defaults_and_refuses_a_bad_schedule() {
    let k = Kubectl::start();
    for crd in ["snapshotrepair.yaml", "snapshotscan.yaml"] {
        let path = format!("{}/../crds/{crd}", env!("CARGO_MANIFEST_DIR"));
        k.ok(&["apply", "-f", &path]);
    }
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/nightly-scan.yaml"
    );
    k.ok(&["apply", "-f", example]);
    k.apply("defaults.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotScan\nmetadata:\n  name: hourly\nspec:\n  schedule: '0 * * * *'\n");
    let defaults = k.ok(&[
        "get",
        "sscan",
        "hourly",
        "-o",
        "jsonpath={.spec.action} {.spec.contentCheck} {.spec.maxConcurrentNodes} {.spec.historyLimit} {.spec.suspend}",
    ]);
    assert_eq!(defaults, "Verify Metadata 1 3 false");
    k.ok(&[
        "patch",
        "sscan",
        "nightly-workers",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"lastRun":{"id":"20261207-030000","startTime":"2026-12-07T03:00:00Z","nodes":12,"healthy":10,"damaged":2,"repaired":0,"failed":0}}}"#,
    ]);
    let table = k.ok(&["get", "sscan"]);
    assert_eq!(
        header(&table),
        [
            "NAME", "SCHEDULE", "ACTION", "LAST", "RUN", "NODES", "DAMAGED", "AGE"
        ]
    );
    // The schedule's five fields are five cells; then Action, Last Run (an age), Nodes, Damaged.
    let r = row(&table, "nightly-workers");
    assert_eq!(&r[1..7], ["0", "3", "*", "*", "*", "Verify"]);
    assert_eq!(&r[8..10], ["12", "2"]);
    // A category lookup over two kinds names each row by kind.
    let both = k.ok(&["get", "snapmend"]);
    assert_eq!(
        row(&both, "snapshotscan.snapmend.io/nightly-workers")[1..4],
        ["0", "3", "*"],
        "{both}"
    );
    let bad = k.fails(&["apply", "-f", &k.file("bad.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotScan\nmetadata:\n  name: bad\nspec:\n  schedule: '0 0 3 * * *'\n")]);
    assert!(bad.contains("spec.schedule"), "{bad}");
    let zero = k.fails(&["apply", "-f", &k.file("zero.yaml", "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotScan\nmetadata:\n  name: zero\nspec:\n  schedule: '0 3 * * *'\n  maxConcurrentNodes: 0\n")]);
    assert!(zero.contains("spec.maxConcurrentNodes"), "{zero}");
}
