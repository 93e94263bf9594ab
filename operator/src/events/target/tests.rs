use super::*;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, EventSource, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn pod(node: Option<&str>, containers: &[(&str, &str)], statuses: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: containers
                .iter()
                .map(|(n, i)| Container {
                    name: n.to_string(),
                    image: Some(i.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(
                statuses
                    .iter()
                    .map(|(n, id)| ContainerStatus {
                        name: n.to_string(),
                        image_id: id.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

fn kubelet_core_event() -> CoreEvent {
    CoreEvent {
        metadata: ObjectMeta {
            name: Some("web-0.17a1".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web-0".into()),
            namespace: Some("default".into()),
            field_path: Some("spec.containers{app}".into()),
            ..Default::default()
        },
        reason: Some("Failed".into()),
        message: Some("Error: x".into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some("node-a".into()),
        }),
        first_timestamp: Some(Time(ts("2026-01-01T00:00:00Z"))),
        last_timestamp: Some(Time(ts("2026-01-01T00:05:00Z"))),
        count: Some(7),
        ..Default::default()
    }
}

#[test]
fn core_event_facts_take_the_latest_time_and_count() {
    let f = EventFacts::from_core(&kubelet_core_event());
    assert_eq!(f.key(), "default/web-0.17a1");
    assert_eq!(f.last_seen, Some(ts("2026-01-01T00:05:00Z")));
    assert_eq!(f.count, 7);
    assert_eq!(
        f.involved_field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert!(f.is_about_pod());
    assert_eq!(node_from_event(&f).as_deref(), Some("node-a"));
}

#[test]
fn events_v1_facts_use_series_and_reporting_instance() {
    let e = EventsV1Event {
        metadata: ObjectMeta {
            name: Some("e1".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(ts("2026-01-01T00:00:00Z"))),
        series: Some(k8s_openapi::api::events::v1::EventSeries {
            count: 44,
            last_observed_time: MicroTime(ts("2026-01-01T00:13:00Z")),
        }),
        reason: Some("FailedCreatePodSandBox".into()),
        note: Some("Failed to create pod sandbox".into()),
        reporting_controller: Some("kubelet".into()),
        reporting_instance: Some("node-b".into()),
        regarding: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some("p".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let f = EventFacts::from_events_v1(&e);
    assert_eq!(
        (f.count, f.last_seen),
        (44, Some(ts("2026-01-01T00:13:00Z")))
    );
    assert_eq!(f.message, "Failed to create pod sandbox");
    assert_eq!(
        f.involved_namespace, "ns",
        "regarding without namespace defaults to the event's"
    );
    assert_eq!(node_from_event(&f).as_deref(), Some("node-b"));
}

#[test]
fn reporting_instance_of_a_controller_is_not_a_node() {
    let f = EventFacts {
        reporting_controller: Some("snapmend.io/operator".into()),
        reporting_instance: Some("snapmend-operator-7d9f".into()),
        ..Default::default()
    };
    assert_eq!(node_from_event(&f), None);
    let p = pod(Some("node-c"), &[], &[]);
    assert_eq!(resolve_node(&f, Some(&p)).as_deref(), Some("node-c"));
    assert_eq!(resolve_node(&f, None), None);
}

#[test]
fn node_prefers_source_host_then_reporting_instance_then_pod() {
    let p = pod(Some("from-pod"), &[], &[]);
    let mut f = EventFacts {
        source_host: Some("from-host".into()),
        reporting_instance: Some("from-instance".into()),
        ..Default::default()
    };
    assert_eq!(resolve_node(&f, Some(&p)).as_deref(), Some("from-host"));
    f.source_host = Some("  ".into());
    assert_eq!(resolve_node(&f, Some(&p)).as_deref(), Some("from-instance"));
    f.reporting_instance = None;
    assert_eq!(resolve_node(&f, Some(&p)).as_deref(), Some("from-pod"));
    let unscheduled = pod(None, &[], &[]);
    assert_eq!(resolve_node(&f, Some(&unscheduled)), None);
}

#[test]
fn sandbox_failures_target_the_sandbox_image() {
    let f = EventFacts::default();
    assert_eq!(resolve_target(true, &f, None), Some(Target::SandboxImage));
    assert_eq!(Target::SandboxImage.key(), "sandbox");
}

#[test]
fn container_failures_prefer_the_recorded_digest_reference() {
    let f = EventFacts {
        involved_field_path: Some("spec.containers{app}".into()),
        ..Default::default()
    };
    let p = pod(
        Some("n"),
        &[("side", "busybox"), ("app", "nginx:1.25")],
        &[("app", "docker.io/library/nginx@sha256:0123abcd")],
    );
    assert_eq!(
        resolve_target(false, &f, Some(&p)),
        Some(Target::Image(
            "docker.io/library/nginx@sha256:0123abcd".into()
        ))
    );
}

#[test]
fn container_failures_fall_back_to_the_spec_image_named_as_containerd_does() {
    let f = EventFacts {
        involved_field_path: Some("spec.containers{app}".into()),
        ..Default::default()
    };
    // A container that never started has an empty imageID, or an image-id-only one.
    for statuses in [vec![("app", "")], vec![("app", "sha256:99aa")], vec![]] {
        let p = pod(Some("n"), &[("app", "nginx:1.25")], &statuses);
        assert_eq!(
            resolve_target(false, &f, Some(&p)),
            Some(Target::Image("docker.io/library/nginx:1.25".into()))
        );
    }
}

#[test]
fn pull_failures_target_the_image_in_the_message() {
    let f = EventFacts {
        message: r#"Failed to pull image \"quay.io/org/app:2\": failed to stat parent"#.into(),
        ..Default::default()
    };
    assert_eq!(
        resolve_target(false, &f, None),
        Some(Target::Image("quay.io/org/app:2".into()))
    );
    let unknown = EventFacts {
        message: "exec format error".into(),
        ..Default::default()
    };
    assert_eq!(resolve_target(false, &unknown, None), None);
}

#[test]
fn field_paths_name_containers() {
    assert_eq!(
        container_from_field_path("spec.containers{app}"),
        Some("app")
    );
    assert_eq!(
        container_from_field_path("spec.initContainers{init-db}"),
        Some("init-db")
    );
    assert_eq!(container_from_field_path("spec.containers{}"), None);
    assert_eq!(container_from_field_path(""), None);
}

#[test]
fn image_references_are_normalized_like_containerd_cri() {
    for (input, want) in [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("org/app:1", "docker.io/org/app:1"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost/app:1", "localhost/app:1"),
        ("nginx@sha256:ab", "docker.io/library/nginx@sha256:ab"),
    ] {
        assert_eq!(normalize_image_ref(input), want, "{input}");
    }
    assert_eq!(digest_reference("containerd://sha256:ab"), None);
    assert_eq!(
        digest_reference("docker-pullable://nginx@sha256:ab").as_deref(),
        Some("docker.io/library/nginx@sha256:ab")
    );
}

#[test]
fn freshness_window() {
    let now = ts("2026-01-01T01:00:00Z");
    let w = Duration::from_secs(300);
    assert!(is_fresh(Some(ts("2026-01-01T00:56:00Z")), now, w));
    assert!(is_fresh(Some(ts("2026-01-01T00:55:00Z")), now, w));
    assert!(!is_fresh(Some(ts("2026-01-01T00:54:59Z")), now, w));
    assert!(
        is_fresh(Some(ts("2026-01-01T01:00:30Z")), now, w),
        "slightly in the future"
    );
    assert!(!is_fresh(None, now, w));
}

#[test]
fn the_servers_creation_stamp_does_not_make_an_old_event_fresh() {
    let mut e = kubelet_core_event();
    e.metadata.creation_timestamp = Some(Time(ts("2026-01-01T09:00:00Z")));
    assert_eq!(
        EventFacts::from_core(&e).last_seen,
        Some(ts("2026-01-01T00:05:00Z"))
    );
    e.first_timestamp = None;
    e.last_timestamp = None;
    assert_eq!(
        EventFacts::from_core(&e).last_seen,
        Some(ts("2026-01-01T09:00:00Z")),
        "fallback"
    );
}
