//! The one write the agent makes: `status.report` of a SnapshotRepair, by server-side apply on
//! the status subresource under its own field manager, naming no other status field (the
//! operator owns those and applies them as `snapmend-operator`).

use serde_json::{Value, json};
use snapmend_crds::{Outcome, Report, RequestReport, SnapshotRepair};

/// The agent's field manager: owner of `status.report` and nothing else.
pub const FIELD_MANAGER: &str = "snapmend-node-helper";

/// Apply configuration that makes `status.report` of `name` equal to `report`. The API
/// server removes keys the agent applied before and leaves out now (an optional `message`,
/// say), so no previous report has to be known.
pub fn report_apply(name: &str, report: &RequestReport) -> Value {
    use kube::Resource;
    json!({
        "apiVersion": SnapshotRepair::api_version(&()),
        "kind": SnapshotRepair::kind(&()),
        "metadata": { "name": name },
        "status": { "report": report },
    })
}

/// The Error report for a request the agent cannot run as specified.
pub fn refusal(request_id: &str, image: String, reason: String) -> RequestReport {
    RequestReport {
        request_id: request_id.to_string(),
        report: Report {
            image,
            outcome: Outcome::Error,
            message: Some(reason),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, outcome: Outcome, message: Option<&str>) -> RequestReport {
        RequestReport {
            request_id: id.into(),
            report: Report {
                image: "registry.k8s.io/pause:3.10".into(),
                outcome,
                message: message.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn apply_names_only_status_report() {
        let p = report_apply("sr-1", &report("7", Outcome::Healthy, None));
        let status: Vec<_> = p["status"]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(status, ["report"]);
        assert_eq!(p["metadata"]["name"], "sr-1");
        assert_eq!(p["kind"], "SnapshotRepair");
        assert_eq!(p["apiVersion"], "snapmend.io/v1alpha1");
        assert_eq!(p["status"]["report"]["requestId"], "7");
        assert_eq!(p["status"]["report"]["outcome"], "Healthy");
        assert_eq!(p["status"]["report"]["image"], "registry.k8s.io/pause:3.10");
        assert!(
            !p["status"]["report"]
                .as_object()
                .expect("object")
                .contains_key("message"),
            "absent keys are left out; the server prunes them"
        );
    }

    #[test]
    fn refusal_is_an_error_report_for_the_request() {
        let r = refusal("9", "sandbox".into(), "spec sets both".into());
        assert_eq!(r.request_id, "9");
        assert_eq!(r.report.outcome, Outcome::Error);
        assert_eq!(r.report.message.as_deref(), Some("spec sets both"));
    }
}
