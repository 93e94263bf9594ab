//! What the agent does with one observed SnapshotRepair: a pure function of the object,
//! so every case of the protocol is a one-line unit test.
//!
//! Protocol (contract): act when `status.request.id` differs from `status.report.requestId`,
//! only for this node, and answer with a report carrying that request id.

use snapmend_crds::{ContentCheck, RepairAction, SnapshotRepair};

use crate::job::Target;

/// What a request covers: one image, or every image of the node (`spec.allImages`, a scan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Image(Target),
    AllImages,
}

/// One request the agent must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub name: String,
    pub request_id: String,
    /// From the request, not the spec: the operator verifies first even when spec says Repair.
    pub action: RepairAction,
    pub scope: Scope,
    pub content: ContentCheck,
    /// The Secret (agent's namespace) with the repair's registry credentials, if any.
    pub pull_secret: Option<String>,
}

/// Why an observed SnapshotRepair needs nothing from this agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    OtherNode,
    Deleting,
    NoRequest,
    AlreadyAnswered,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Idle(Idle),
    Run(Work),
    /// The request cannot be run as specified; answer it with an Error report saying why.
    Refuse {
        name: String,
        request_id: String,
        reason: String,
    },
}

/// Decides what the agent on `node` does with `sr`.
pub fn decide(node: &str, sr: &SnapshotRepair) -> Decision {
    if sr.spec.node_name != node {
        return Decision::Idle(Idle::OtherNode);
    }
    if sr.metadata.deletion_timestamp.is_some() {
        return Decision::Idle(Idle::Deleting);
    }
    let Some(status) = &sr.status else {
        return Decision::Idle(Idle::NoRequest);
    };
    let Some(request) = &status.request else {
        return Decision::Idle(Idle::NoRequest);
    };
    if request.id.is_empty() {
        return Decision::Idle(Idle::NoRequest);
    }
    if status
        .report
        .as_ref()
        .is_some_and(|r| r.request_id == request.id)
    {
        return Decision::Idle(Idle::AlreadyAnswered);
    }
    let name = sr.metadata.name.clone().unwrap_or_default();
    match scope_of(sr) {
        Ok(scope) => Decision::Run(Work {
            name,
            request_id: request.id.clone(),
            action: request.action,
            scope,
            content: sr.spec.content_check,
            pull_secret: request.pull_secret.clone(),
        }),
        Err(reason) => Decision::Refuse {
            name,
            request_id: request.id.clone(),
            reason,
        },
    }
}

/// What a SnapshotRepair names: exactly one of `image`, `sandboxImage` and `allImages` (the
/// CRD's CEL rule enforces it on a real API server; the agent does not rely on that).
pub fn scope_of(sr: &SnapshotRepair) -> Result<Scope, String> {
    let image = sr.spec.image.as_deref().filter(|i| !i.is_empty());
    let set = [image.is_some(), sr.spec.sandbox_image, sr.spec.all_images]
        .iter()
        .filter(|s| **s)
        .count();
    match (image, sr.spec.sandbox_image, sr.spec.all_images) {
        _ if set > 1 => Err(
            "spec sets more than one of image, sandboxImage and allImages; exactly one is allowed"
                .into(),
        ),
        (Some(image), _, _) => Ok(Scope::Image(Target::Image(image.to_string()))),
        (None, true, _) => Ok(Scope::Image(Target::SandboxImage)),
        (None, _, true) => Ok(Scope::AllImages),
        (None, false, false) => Err(
            "spec sets neither image, sandboxImage nor allImages; exactly one is required".into(),
        ),
    }
}

/// Order in which pending requests are served: single images before scans of every image (a
/// pod waiting on a damaged image must not wait for a scheduled scan of the node), then the
/// oldest SnapshotRepair first, then by name, so that a burst of requests is answered fairly
/// and deterministically.
pub fn queue_order(a: &SnapshotRepair, b: &SnapshotRepair) -> std::cmp::Ordering {
    let created = |sr: &SnapshotRepair| sr.metadata.creation_timestamp.as_ref().map(|t| t.0);
    a.spec
        .all_images
        .cmp(&b.spec.all_images)
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use snapmend_crds::{
        Outcome, RepairRequest, Report, RequestReport, SnapshotRepairSpec, SnapshotRepairStatus,
    };

    fn sr(node: &str) -> SnapshotRepair {
        let mut sr = SnapshotRepair::new(
            "node-a-pause",
            SnapshotRepairSpec {
                node_name: node.into(),
                image: None,
                sandbox_image: true,
                all_images: false,
                action: RepairAction::Repair,
                cordon: true,
                content_check: ContentCheck::Full,
                pull_secrets: Vec::new(),
            },
        );
        sr.status = Some(SnapshotRepairStatus::default());
        sr
    }

    fn requested(mut sr: SnapshotRepair, id: &str, action: RepairAction) -> SnapshotRepair {
        sr.status.get_or_insert_with(Default::default).request = Some(RepairRequest {
            id: id.into(),
            action,
            pull_secret: None,
        });
        sr
    }

    fn answered(mut sr: SnapshotRepair, id: &str) -> SnapshotRepair {
        sr.status.get_or_insert_with(Default::default).report = Some(RequestReport {
            request_id: id.into(),
            report: Report {
                outcome: Outcome::Healthy,
                ..Default::default()
            },
        });
        sr
    }

    fn work(id: &str, action: RepairAction, target: Target) -> Decision {
        Decision::Run(Work {
            name: "node-a-pause".into(),
            request_id: id.into(),
            action,
            scope: Scope::Image(target),
            content: ContentCheck::Full,
            pull_secret: None,
        })
    }

    #[test]
    fn other_nodes_are_ignored_even_with_a_request() {
        let sr = requested(sr("node-b"), "1", RepairAction::Verify);
        assert_eq!(decide("node-a", &sr), Decision::Idle(Idle::OtherNode));
    }

    #[test]
    fn no_status_or_no_request_means_nothing_to_do() {
        let mut bare = sr("node-a");
        bare.status = None;
        assert_eq!(decide("node-a", &bare), Decision::Idle(Idle::NoRequest));
        assert_eq!(
            decide("node-a", &sr("node-a")),
            Decision::Idle(Idle::NoRequest)
        );
        let empty_id = requested(sr("node-a"), "", RepairAction::Verify);
        assert_eq!(decide("node-a", &empty_id), Decision::Idle(Idle::NoRequest));
    }

    #[test]
    fn a_new_request_is_run_with_the_requested_action() {
        let verify = requested(sr("node-a"), "1", RepairAction::Verify);
        assert_eq!(
            decide("node-a", &verify),
            work("1", RepairAction::Verify, Target::SandboxImage)
        );
        let repair = requested(sr("node-a"), "2", RepairAction::Repair);
        assert_eq!(
            decide("node-a", &repair),
            work("2", RepairAction::Repair, Target::SandboxImage)
        );
    }

    #[test]
    fn the_request_action_wins_over_the_spec_action() {
        let mut s = requested(sr("node-a"), "1", RepairAction::Verify);
        s.spec.action = RepairAction::Repair;
        assert_eq!(
            decide("node-a", &s),
            work("1", RepairAction::Verify, Target::SandboxImage)
        );
    }

    #[test]
    fn an_answered_request_is_not_run_again() {
        let s = answered(requested(sr("node-a"), "3", RepairAction::Repair), "3");
        assert_eq!(decide("node-a", &s), Decision::Idle(Idle::AlreadyAnswered));
    }

    #[test]
    fn a_report_for_an_older_request_does_not_answer_a_newer_one() {
        let s = answered(requested(sr("node-a"), "4", RepairAction::Repair), "3");
        assert_eq!(
            decide("node-a", &s),
            work("4", RepairAction::Repair, Target::SandboxImage)
        );
    }

    #[test]
    fn a_report_without_a_request_is_idle() {
        let mut s = answered(sr("node-a"), "3");
        if let Some(st) = s.status.as_mut() {
            st.request = None;
        }
        assert_eq!(decide("node-a", &s), Decision::Idle(Idle::NoRequest));
    }

    #[test]
    fn a_deleting_repair_is_left_to_the_operator() {
        let mut s = requested(sr("node-a"), "1", RepairAction::Repair);
        s.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(decide("node-a", &s), Decision::Idle(Idle::Deleting));
    }

    #[test]
    fn image_targets_and_content_check_come_from_the_spec() {
        let mut s = requested(sr("node-a"), "1", RepairAction::Verify);
        s.spec.sandbox_image = false;
        s.spec.image = Some("registry.k8s.io/pause:3.10".into());
        s.spec.content_check = ContentCheck::Metadata;
        assert_eq!(
            decide("node-a", &s),
            Decision::Run(Work {
                name: "node-a-pause".into(),
                request_id: "1".into(),
                action: RepairAction::Verify,
                scope: Scope::Image(Target::Image("registry.k8s.io/pause:3.10".into())),
                content: ContentCheck::Metadata,
                pull_secret: None,
            })
        );
    }

    #[test]
    fn the_work_names_the_requests_pull_secret() {
        let mut sr = requested(sr("node-a"), "3", RepairAction::Repair);
        if let Some(r) = sr.status.as_mut().and_then(|s| s.request.as_mut()) {
            r.pull_secret = Some("snapmend-pull-node-a-pause".into());
        }
        match decide("node-a", &sr) {
            Decision::Run(work) => {
                assert_eq!(
                    work.pull_secret.as_deref(),
                    Some("snapmend-pull-node-a-pause")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spec_without_exactly_one_target_is_refused_with_a_reason() {
        let mut both = requested(sr("node-a"), "1", RepairAction::Verify);
        both.spec.image = Some("x:1".into());
        let mut neither = requested(sr("node-a"), "1", RepairAction::Verify);
        neither.spec.sandbox_image = false;
        let mut empty = neither.clone();
        empty.spec.image = Some(String::new());
        let mut sandbox_and_all = requested(sr("node-a"), "1", RepairAction::Verify);
        sandbox_and_all.spec.all_images = true;
        let mut image_and_all = neither.clone();
        image_and_all.spec.image = Some("x:1".into());
        image_and_all.spec.all_images = true;
        for (s, word) in [
            (both, "more than one"),
            (neither, "neither"),
            (empty, "neither"),
            (sandbox_and_all, "more than one"),
            (image_and_all, "more than one"),
        ] {
            match decide("node-a", &s) {
                Decision::Refuse {
                    request_id, reason, ..
                } => {
                    assert_eq!(request_id, "1");
                    assert!(reason.contains(word), "{reason}");
                }
                other => panic!("expected Refuse, got {other:?}"),
            }
        }
    }

    #[test]
    fn all_images_is_a_scan_with_the_requested_action_and_content_check() {
        let mut s = requested(sr("node-a"), "5", RepairAction::Repair);
        s.spec.sandbox_image = false;
        s.spec.all_images = true;
        s.spec.content_check = ContentCheck::Metadata;
        match decide("node-a", &s) {
            Decision::Run(work) => {
                assert_eq!(work.scope, Scope::AllImages, "not the sandbox image");
                assert_eq!(work.action, RepairAction::Repair);
                assert_eq!(work.content, ContentCheck::Metadata);
                assert_eq!(work.request_id, "5");
            }
            other => panic!("{other:?}"),
        }
        // An empty image name beside allImages does not count as a second target.
        s.spec.image = Some(String::new());
        assert!(matches!(decide("node-a", &s), Decision::Run(w) if w.scope == Scope::AllImages));
    }

    #[test]
    fn queue_serves_single_images_first_then_the_oldest_then_by_name() {
        let at = |name: &str, secs: i64| {
            let mut s = sr("node-a");
            s.metadata.name = Some(name.into());
            s.metadata.creation_timestamp =
                Some(Time(Timestamp::from_second(secs).expect("valid time")));
            s
        };
        let mut scan = at("scan", 0);
        scan.spec.all_images = true;
        let mut all = [at("c", 5), scan, at("b", 1), at("a", 5)];
        all.sort_by(queue_order);
        let names: Vec<_> = all
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["b", "a", "c", "scan"], "single images before scans");
    }
}
