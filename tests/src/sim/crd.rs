//! Admission of CustomResourceDefinitions: validation of the definition and its status.

use serde_json::{Value, json};

use super::object::now_rfc3339;
use super::registry::ResourceDef;
use super::status::{Cause, StatusError};

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Validates a CRD, defaults its names and sets the status a real API server reports once
/// the definition is established (which here is immediately).
pub fn admit_crd(mut crd: Value, served: &[ResourceDef]) -> Result<Value, StatusError> {
    let name = s(&crd, "/metadata/name").to_string();
    let group = s(&crd, "/spec/group").to_string();
    let plural = s(&crd, "/spec/names/plural").to_string();
    let kind = s(&crd, "/spec/names/kind").to_string();
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = s(&crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                storage.len()
            ),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push(Cause::new(
                "FieldValueRequired",
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required",
            )),
            Some(schema) => {
                // CEL rules must compile, as the API server checks at registration.
                let compiled = kube_cel::compile_schema(schema);
                for e in compiled.compilation_errors() {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        format!("spec.validation.openAPIV3Schema[{i}].x-kubernetes-validations"),
                        format!("Invalid value: \"object\": compilation failed: {e}"),
                    ));
                }
            }
        }
    }
    let builtin_clash = served
        .iter()
        .any(|d| d.crd_name.is_none() && d.group == group && d.plural == plural);
    if builtin_clash {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.group",
            "Invalid value: the group and plural are served by a built-in type",
        ));
    }
    if !causes.is_empty() {
        return Err(StatusError::invalid(
            "CustomResourceDefinition.apiextensions.k8s.io",
            &name,
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &causes,
        ));
    }
    let names = &mut crd["spec"]["names"];
    if s(names, "/singular").is_empty() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if s(names, "/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let accepted = crd["spec"]["names"].clone();
    let stored_versions: Vec<Value> = storage
        .iter()
        .map(|v| v.get("name").cloned().unwrap_or(Value::Null))
        .collect();
    let now = now_rfc3339();
    crd["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored_versions,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now}
        ]
    });
    Ok(crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_crd_is_established_with_defaulted_names() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        let out = admit_crd(crd, &[]).unwrap();
        assert_eq!(out["spec"]["names"]["singular"], "widget");
        assert_eq!(out["status"]["conditions"][1]["type"], "Established");
        assert_eq!(out["status"]["storedVersions"], json!(["v1"]));
    }

    #[test]
    fn crd_with_a_cel_rule_that_does_not_compile_is_invalid() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                       "x-kubernetes-validations": [{"rule": "self.a ==", "message": "x"}]}}}]}
        });
        let err = admit_crd(crd, &[]).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("compilation failed"),
            "{}",
            err.message
        );
    }

    #[test]
    fn misnamed_crd_without_storage_version_is_invalid() {
        let crd = json!({
            "metadata": {"name": "wrong"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": false,
                                   "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        let err = admit_crd(crd, &[]).unwrap_err();
        assert_eq!(err.code, 422);
        let causes = err.details.unwrap()["causes"].as_array().unwrap().len();
        assert_eq!(causes, 2);
    }
}
