//! The pieces of an end-to-end scenario around simulated nodes: the operator and agent binaries
//! as child processes (their real command lines), test pods, images with an application
//! entrypoint, and damage done to a snapshot the way the incident's cleanup script did it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, EventSource, Namespace, ObjectReference, Pod, PodSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use snapmend_crds::labels::DEFAULT_LEASE_NAMESPACE;
use snapmend_crds::{SnapshotRepair, SnapshotScan};

use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::image_builder::{ImageSpec, LayerSpec, ManifestStyle, TarEntry, pause_binary};

/// A workspace binary next to the running executable (`target/<profile>/` or its `deps/`), or
/// from the environment variable `env` when set. From a test executable it is first brought up
/// to date with `cargo build --workspace --bins` (with the features `make test` gives `cargo
/// test`, so nothing is recompiled and the crash tests keep their fault-injection knob):
/// `cargo test` does not build the binaries of packages without integration tests, and a stale
/// binary would test old code.
pub fn workspace_binary(name: &str, env: &str) -> Result<PathBuf, TestError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| TestError::io("/proc/self/exe", e))?;
    if exe.parent().is_some_and(|d| d.ends_with("deps")) {
        build_workspace_bins_once(exe.components().any(|c| c.as_os_str() == "release"))?;
    }
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        TestError::NodeHelper(format!(
            "{name} not found (looked at {candidates:?}); build it with `cargo build --workspace --bins` or set {env}"
        ))
    })
}

/// The features `make test` builds and tests with (see the Makefile's `TEST_FEATURES`).
pub const TEST_FEATURES: &str = "snapmend-node-helper/fault-injection";

/// Set by `make test`, which builds the workspace binaries (with [`TEST_FEATURES`]) first.
pub const BINS_BUILT_ENV: &str = "SNAPMEND_TEST_BINS_BUILT";

/// `cargo build --workspace --bins` once per test process (the build lock is free while tests run).
fn build_workspace_bins_once(release: bool) -> Result<(), TestError> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // `make test` builds the binaries before the tests start. A nested cargo inherits the test
    // process's environment, which makes some build scripts (ring's, through cc) rerun and
    // rebuilds half the tree for nothing, so the Makefile says the binaries are built.
    if *built || std::env::var_os(BINS_BUILT_ENV).is_some() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(&workspace);
    if release {
        cmd.arg("--release");
    } else {
        cmd.args(["--features", TEST_FEATURES]);
    }
    let out = cmd
        .output()
        .map_err(|e| TestError::io(PathBuf::from(&cargo), e))?;
    if !out.status.success() {
        return Err(TestError::Command {
            command: "cargo build --workspace --bins".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    *built = true;
    Ok(())
}

/// Installs what `kubectl apply -k deploy/` would: the CRDs and the snapmend-system namespace,
/// and waits until SnapshotRepairs are served.
pub async fn install_snapmend(client: &Client) -> Result<(), TestError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, name) in [
        (SnapshotRepair::crd(), "CRD snapshotrepairs.snapmend.io"),
        (SnapshotScan::crd(), "CRD snapshotscans.snapmend.io"),
    ] {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(super::kube_err("create", name)(e)),
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(DEFAULT_LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => {
            return Err(super::kube_err(
                "create",
                format!("Namespace {DEFAULT_LEASE_NAMESPACE}"),
            )(e));
        }
    }
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match srs.list(&Default::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(super::kube_err("list", "SnapshotRepairs")(e));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A pod bound to `node` whose one container runs `image`.
pub fn pod_on_node(namespace: &str, name: &str, node: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

pub async fn create_pod(client: &Client, pod: &Pod) -> Result<Pod, TestError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), pod)
        .await
        .map_err(super::kube_err("create", format!("Pod {ns}/{name}")))
}

/// An application image: one layer with `app` (a static binary that sleeps, 0755), entrypoint `/app`.
pub fn app_image(name: &str) -> Result<ImageSpec, TestError> {
    Ok(ImageSpec::new(
        name,
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::dir("etc/"),
            TarEntry::file("etc/app.conf", "listen 8080\n"),
            TarEntry::file("app", pause_binary()?).mode(0o755),
        ])],
    )
    .entrypoint(&["/app"]))
}

/// A file deleted from a committed snapshot (and kept aside so a test can put it back).
pub struct Damage {
    pub path: PathBuf,
    kept: PathBuf,
}

impl Damage {
    /// Deletes `rel` (e.g. `pause`) from the snapshot `fs` directory that holds it.
    pub fn delete_from_snapshot(
        fixture: &ContainerdFixture,
        rel: &str,
    ) -> Result<Damage, TestError> {
        let snapshots = fixture.snapshotter_root().join("snapshots");
        let entries = std::fs::read_dir(&snapshots).map_err(|e| TestError::io(&snapshots, e))?;
        let path = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("fs").join(rel))
            .find(|p| p.symlink_metadata().is_ok())
            .ok_or_else(|| {
                TestError::Build(format!(
                    "no snapshot under {} holds {rel}",
                    snapshots.display()
                ))
            })?;
        let kept = fixture
            .dir()
            .join(format!("kept-{}", rel.replace('/', "_")));
        std::fs::rename(&path, &kept).map_err(|e| TestError::io(&path, e))?;
        Ok(Damage { path, kept })
    }

    /// Puts the file back (what a repair does, for tests that do not run one).
    pub fn undo(&self) -> Result<(), TestError> {
        std::fs::rename(&self.kept, &self.path).map_err(|e| TestError::io(&self.path, e))
    }

    pub fn is_repaired(&self) -> bool {
        self.path.is_file()
    }
}

/// A child process of ours, stopped with SIGTERM (then SIGKILL) when dropped.
pub struct ChildProcess {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Runs `binary args` with `KUBECONFIG`, logging to `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        kubeconfig: &Path,
        dir: &Path,
        envs: &[(&str, &str)],
    ) -> Result<ChildProcess, TestError> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| TestError::io(&log, e))?;
        let stdout = file.try_clone().map_err(|e| TestError::io(&log, e))?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn,hyper=warn,tower=warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| TestError::Command {
            command: format!("{} {}", binary.display(), args.join(" ")),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
        Ok(ChildProcess {
            child: Some(child),
            name: name.to_string(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, wait up to `within`, then SIGKILL.
    pub fn stop(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is shared.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// `snapmend-operator --auto-remediate MODE …` against a kubeconfig.
pub fn spawn_operator(
    kubeconfig: &Path,
    dir: &Path,
    extra_args: &[&str],
) -> Result<ChildProcess, TestError> {
    let binary = workspace_binary("snapmend-operator", "SNAPMEND_OPERATOR")?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut args = vec![
        "--metrics-addr".to_string(),
        metrics,
        "--kubeconfig".to_string(),
    ];
    args.push(kubeconfig.display().to_string());
    args.extend(extra_args.iter().map(|s| s.to_string()));
    ChildProcess::spawn(
        "operator",
        &binary,
        &args,
        kubeconfig,
        dir,
        &[
            ("POD_NAMESPACE", DEFAULT_LEASE_NAMESPACE),
            ("SNAPMEND_LEADER_LEASE_SECONDS", "4"),
        ],
    )
}

/// `snapmend-node-helper agent --node NODE` for a node backed by `fixture`.
pub fn spawn_agent(
    kubeconfig: &Path,
    dir: &Path,
    node: &str,
    fixture: &ContainerdFixture,
) -> Result<ChildProcess, TestError> {
    spawn_agent_with(kubeconfig, dir, node, fixture, &[])
}

/// [`spawn_agent`] with more agent flags (e.g. `--auth`, `--cache-dir`).
pub fn spawn_agent_with(
    kubeconfig: &Path,
    dir: &Path,
    node: &str,
    fixture: &ContainerdFixture,
    extra_args: &[String],
) -> Result<ChildProcess, TestError> {
    let binary = workspace_binary("snapmend-node-helper", "SNAPMEND_NODE_HELPER")?;
    let mut args = vec![
        "agent".to_string(),
        "--node".to_string(),
        node.to_string(),
        "--metrics-addr".to_string(),
        format!("127.0.0.1:{}", free_port()?),
        "--lease-namespace".to_string(),
        DEFAULT_LEASE_NAMESPACE.to_string(),
        "--root".to_string(),
        fixture.root().display().to_string(),
        "--config".to_string(),
        fixture.config_path().display().to_string(),
        // Never the machine's /var/lib/snapmend/toc.
        "--toc-cache".to_string(),
        "none".to_string(),
    ];
    args.extend(extra_args.iter().cloned());
    let pod_name = format!("snapmend-agent-{node}");
    ChildProcess::spawn(
        &format!("agent-{node}"),
        &binary,
        &args,
        kubeconfig,
        dir,
        &[("POD_NAME", &pod_name)],
    )
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> Result<u16, TestError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TestError::io("127.0.0.1:0", e))
}

/// A Warning event about `pod` exactly as kubelet on `node` posts it (core/v1, count 1, now).
pub fn kubelet_event(
    namespace: &str,
    name: &str,
    pod: &str,
    node: &str,
    reason: &str,
    message: &str,
    container: Option<&str>,
) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(namespace.into()),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

pub async fn post_event(client: &Client, event: &Event) -> Result<Event, TestError> {
    let ns = event
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = event.metadata.name.clone().unwrap_or_default();
    Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), event)
        .await
        .map_err(super::kube_err("create", format!("Event {ns}/{name}")))
}

/// Registers a Node with labels (what a kubelet does first).
pub async fn register_node(
    client: &Client,
    node: &str,
    labels: &[(&str, &str)],
) -> Result<(), TestError> {
    let mut config = super::KubeletConfig::new(node);
    config.node_labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    super::register_node(client, &config).await
}

/// Keeps the presence Leases of `nodes` in `namespace` fresh every 5 s, as their agents would,
/// applied under `field_manager`. Runs until dropped or aborted.
pub async fn renew_helper_leases(
    client: Client,
    namespace: &str,
    nodes: Vec<String>,
    field_manager: &str,
) {
    let leases = Api::<Lease>::namespaced(client, namespace);
    loop {
        for node in &nodes {
            let name = snapmend_crds::labels::helper_lease_name(node);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(format!("agent-{node}")),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                    ..Default::default()
                }),
            };
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply(field_manager).force(),
                    &Patch::Apply(&lease),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
