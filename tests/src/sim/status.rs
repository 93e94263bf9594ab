//! Kubernetes `Status` failure bodies, as the real API server shapes them.

use serde_json::{Value, json};

/// One field-level cause of an `Invalid` (422) or `BadRequest` failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A failed API request: HTTP code, `reason`, message and optional `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for StatusError {}

/// What the `details` block names: `group`, `kind` (the plural for most errors) and `name`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    /// `pods` or `snapshotrepairs.snapmend.io`, the way the API server names a resource.
    fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({ "name": self.name, "group": self.group, "kind": self.kind })
    }
}

impl StatusError {
    pub fn not_found(t: Target<'_>) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", t.group_resource(), t.name),
            details: Some(t.details()),
        }
    }

    pub fn path_not_found(path: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
            details: None,
        }
    }

    pub fn already_exists(t: Target<'_>) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", t.group_resource(), t.name),
            details: Some(t.details()),
        }
    }

    pub fn conflict(t: Target<'_>, why: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {why}",
                t.group_resource(),
                t.name
            ),
            details: Some(t.details()),
        }
    }

    pub fn stale_resource_version(t: Target<'_>) -> Self {
        Self::conflict(
            t,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// Server-side apply conflicts: 409 Conflict with one cause per contested field.
    pub fn apply_conflict(t: Target<'_>, causes: &[Cause]) -> Self {
        let list: Vec<String> = causes.iter().map(|c| c.message.clone()).collect();
        let summary = if causes.len() == 1 {
            format!("Apply failed with 1 conflict: {}", list.join(""))
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                causes.len(),
                list.join("\n")
            )
        };
        let mut details = t.details();
        details["causes"] = causes_json(causes);
        Self {
            code: 409,
            reason: "Conflict",
            message: summary,
            details: Some(details),
        }
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self {
            code: 410,
            reason: "Expired",
            message: message.into(),
            details: None,
        }
    }

    /// 422 Invalid; `kind_group` is `Kind.group` (or just `Kind` for core types).
    pub fn invalid(
        kind_group: &str,
        name: &str,
        group: &str,
        kind: &str,
        causes: &[Cause],
    ) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{kind_group} \"{name}\" is invalid: {joined}"),
            details: Some(json!({
                "name": name, "group": group, "kind": kind, "causes": causes_json(causes)
            })),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self {
            code: 405,
            reason: "MethodNotAllowed",
            message: message.into(),
            details: None,
        }
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
            details: None,
        }
    }

    pub fn forbidden_invalid(message: impl Into<String>) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: message.into(),
            details: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(
        causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect(),
    )
}

/// A `Status` reporting success, e.g. for an eviction or a deleteCollection of nothing.
pub fn success_status(details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200
    });
    if let Some(d) = details {
        status["details"] = d;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_joins_several_causes_in_brackets() {
        let e = StatusError::invalid(
            "SnapshotRepair.snapmend.io",
            "x",
            "snapmend.io",
            "SnapshotRepair",
            &[
                Cause::new("FieldValueRequired", "spec.nodeName", "Required value"),
                Cause::new("FieldValueInvalid", "spec.a", "bad"),
            ],
        );
        assert_eq!(
            e.message,
            "SnapshotRepair.snapmend.io \"x\" is invalid: [spec.nodeName: Required value, spec.a: bad]"
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.nodeName");
    }

    #[test]
    fn not_found_names_core_and_group_resources_like_the_api_server() {
        let core = StatusError::not_found(Target {
            group: "",
            kind: "pods",
            name: "p",
        });
        assert_eq!(core.message, "pods \"p\" not found");
        let crd = StatusError::not_found(Target {
            group: "snapmend.io",
            kind: "snapshotrepairs",
            name: "r",
        });
        assert_eq!(crd.message, "snapshotrepairs.snapmend.io \"r\" not found");
        assert_eq!(crd.to_status()["reason"], "NotFound");
    }
}
