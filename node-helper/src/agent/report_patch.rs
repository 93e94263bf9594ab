//! The one write the agent makes: `status.report` of a SnapshotRepair, as a JSON merge patch
//! on the status subresource that names no other status field (the operator owns those).

use serde_json::{Map, Value, json};
use snapmend_crds::{Outcome, Report, RequestReport};

/// Merge patch that makes `status.report` equal to `new`.
///
/// A merge patch merges objects key by key, so a key the previous report had and the new one
/// lacks (an optional `message`, say) would survive; such keys are set to null to remove them.
pub fn report_merge_patch(previous: Option<&RequestReport>, new: &RequestReport) -> Value {
    let mut report = match serde_json::to_value(new) {
        Ok(Value::Object(map)) => map,
        // A struct of strings, numbers and vectors always serializes to an object.
        _ => Map::new(),
    };
    if let Some(Value::Object(old)) = previous.and_then(|p| serde_json::to_value(p).ok()) {
        for key in old.keys() {
            if !report.contains_key(key) {
                report.insert(key.clone(), Value::Null);
            }
        }
    }
    json!({ "status": { "report": Value::Object(report) } })
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
    fn patch_touches_only_status_report() {
        let p = report_merge_patch(None, &report("7", Outcome::Healthy, None));
        let top: Vec<_> = p.as_object().expect("object").keys().cloned().collect();
        assert_eq!(top, ["status"]);
        let status: Vec<_> = p["status"]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(status, ["report"]);
        assert_eq!(p["status"]["report"]["requestId"], "7");
        assert_eq!(p["status"]["report"]["outcome"], "Healthy");
        assert_eq!(p["status"]["report"]["image"], "registry.k8s.io/pause:3.10");
    }

    #[test]
    fn keys_of_the_previous_report_that_are_gone_are_nulled() {
        let old = report("6", Outcome::Error, Some("image unknown"));
        let p = report_merge_patch(Some(&old), &report("7", Outcome::Healthy, None));
        assert_eq!(p["status"]["report"]["message"], Value::Null);
        assert!(
            p["status"]["report"]
                .as_object()
                .expect("object")
                .contains_key("message")
        );
        assert_eq!(p["status"]["report"]["outcome"], "Healthy");
    }

    #[test]
    fn applying_the_patch_yields_exactly_the_new_report() {
        let old = report("6", Outcome::Error, Some("image unknown"));
        let new = report("7", Outcome::Corrupted, None);
        let mut object = json!({
            "status": {"phase": "Verifying", "request": {"id": "7", "action": "Verify"},
                       "report": serde_json::to_value(&old).expect("json")}
        });
        merge(&mut object, &report_merge_patch(Some(&old), &new));
        let written: RequestReport =
            serde_json::from_value(object["status"]["report"].clone()).expect("report");
        assert_eq!(written, new);
        assert_eq!(
            object["status"]["phase"], "Verifying",
            "operator fields untouched"
        );
        assert_eq!(object["status"]["request"]["id"], "7");
    }

    #[test]
    fn refusal_is_an_error_report_for_the_request() {
        let r = refusal("9", "sandbox".into(), "spec sets both".into());
        assert_eq!(r.request_id, "9");
        assert_eq!(r.report.outcome, Outcome::Error);
        assert_eq!(r.report.message.as_deref(), Some("spec sets both"));
    }

    /// RFC 7386 merge, as an API server applies it.
    fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(patch) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let Value::Object(map) = target else { return };
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}
