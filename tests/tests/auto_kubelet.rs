//! The kubelet simulator on its own: a private containerd whose snapshot lost a file, snapmend-sim,
//! and the simulator posting kubelet's exact events (count rising) until the file is back, then
//! reporting the pod Running. No snapmend operator or agent is involved.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use snapmend_operator::events::{Signature, Verdict, classify};
use snapmend_tests::containerd::ContainerdFixture;
use snapmend_tests::image_builder::pause_image;
use snapmend_tests::kubelet::scenario::{Damage, app_image, create_pod, pod_on_node};
use snapmend_tests::kubelet::{Backoff, KubeletConfig, KubeletSim, Observation};
use snapmend_tests::sim::SimServer;

const WAIT: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(400),
    }
}

fn failures(kubelet: &KubeletSim) -> Vec<(String, i32, String)> {
    kubelet
        .journal()
        .entries()
        .into_iter()
        .filter_map(|(_, o)| match o {
            Observation::StartFailed {
                event,
                count,
                message,
                ..
            } => Some((event, count, message)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_failure_is_reported_like_kubelet_until_pause_is_back() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();
    let damage = Damage::delete_from_snapshot(&fixture, "pause").unwrap();
    let fixture = Arc::new(fixture);

    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let config = KubeletConfig {
        backoff: fast_backoff(),
        ..KubeletConfig::new("node-a")
    };
    let kubelet = KubeletSim::start(client.clone(), fixture.clone(), config)
        .await
        .unwrap();
    create_pod(
        &client,
        &pod_on_node("default", "web-0", "node-a", &sandbox),
    )
    .await
    .unwrap();

    wait_until("three failed sandbox starts", || {
        failures(&kubelet).len() >= 3
    })
    .await;
    let seen = failures(&kubelet);
    let name = &seen[0].0;
    assert!(
        seen.iter().all(|(n, _, _)| n == name),
        "one event, updated in place: {seen:?}"
    );
    assert_eq!(
        seen.iter().map(|(_, c, _)| *c).take(3).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    let event = Api::<Event>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .unwrap();
    assert_eq!(event.reason.as_deref(), Some("FailedCreatePodSandBox"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.count.unwrap() >= 3);
    assert_eq!(
        event.source.as_ref().and_then(|s| s.host.as_deref()),
        Some("node-a")
    );
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(event.involved_object.name.as_deref(), Some("web-0"));
    let message = event.message.unwrap();
    assert!(
        message.starts_with("Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/pause\": stat /pause: no such file or directory"),
        "{message}"
    );
    let c = classify("FailedCreatePodSandBox", &message);
    assert_eq!(
        (c.verdict, c.signature),
        (Verdict::Repair, Signature::SandboxEntrypointBroken)
    );

    damage.undo().unwrap();
    wait_until("the pod running", || {
        kubelet
            .journal()
            .first(|o| matches!(o, Observation::PodRunning { .. }))
            .is_some()
    })
    .await;
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get("web-0")
        .await
        .unwrap();
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    kubelet.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_container_failure_is_reported_with_its_field_path() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[
            pause_image(&sandbox).unwrap(),
            app_image("snapmend.test/app:1").unwrap(),
        ])
        .unwrap();
    let damage = Damage::delete_from_snapshot(&fixture, "app").unwrap();
    let fixture = Arc::new(fixture);

    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let config = KubeletConfig {
        backoff: fast_backoff(),
        run_containers: true,
        ..KubeletConfig::new("node-b")
    };
    let kubelet = KubeletSim::start(client.clone(), fixture.clone(), config)
        .await
        .unwrap();
    create_pod(
        &client,
        &pod_on_node("default", "api-0", "node-b", "snapmend.test/app:1"),
    )
    .await
    .unwrap();

    wait_until("two failed container starts", || {
        failures(&kubelet).len() >= 2
    })
    .await;
    assert!(
        kubelet
            .journal()
            .first(|o| matches!(o, Observation::SandboxRunning { .. }))
            .is_some()
    );
    let name = failures(&kubelet)[0].0.clone();
    let event = Api::<Event>::namespaced(client.clone(), "default")
        .get(&name)
        .await
        .unwrap();
    assert_eq!(event.reason.as_deref(), Some("Failed"));
    assert_eq!(
        event.involved_object.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    let message = event.message.unwrap();
    assert!(message.starts_with("Error: failed to create containerd task: failed to create shim task: OCI runtime create failed"), "{message}");
    assert!(
        message.contains("exec: \"/app\": stat /app: no such file or directory"),
        "{message}"
    );
    assert_eq!(classify("Failed", &message).verdict, Verdict::Verify);
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get("api-0")
        .await
        .unwrap();
    let waiting = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("RunContainerError"));

    damage.undo().unwrap();
    wait_until("the container running", || {
        kubelet
            .journal()
            .first(|o| matches!(o, Observation::ContainerRunning { .. }))
            .is_some()
    })
    .await;
    kubelet.stop().await;
    sim.stop().await;
}
