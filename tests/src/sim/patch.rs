//! Patch kinds: JSON merge patch, JSON patch and strategic merge patch (for built-in types).

use serde_json::{Map, Value};

use super::status::StatusError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    /// The patch kind a request's Content-Type names.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic patch to `old`.
pub fn apply_patch(kind: PatchKind, old: &Value, patch: &Value) -> Result<Value, StatusError> {
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(StatusError::bad_request(
                    "a merge patch must be a JSON object",
                ));
            }
            let mut out = old.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Json => {
            let mut ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| StatusError::bad_request(format!("invalid JSON patch: {e}")))?;
            // Like the API server (evanphx/json-patch): `test` of a missing path against null
            // passes. kube-runtime's finalizer helper relies on it to add the first finalizer.
            ops.0.retain(|op| match op {
                json_patch::PatchOperation::Test(t) => {
                    !(t.value.is_null() && old.pointer(t.path.as_str()).is_none())
                }
                _ => true,
            });
            let mut out = old.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| {
                StatusError::forbidden_invalid(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            Ok(out)
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(StatusError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            Ok(strategic_merge(old, patch))
        }
        PatchKind::Apply => Err(StatusError::internal(
            "apply patches are handled by server-side apply",
        )),
    }
}

/// How a list field merges in a strategic merge patch, by field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Lists of objects merged by this key.
    MergeByKey(&'static str),
    /// Lists of scalars merged as a set (e.g. metadata.finalizers).
    MergePrimitives,
    Replace,
}

/// The patchStrategy/patchMergeKey of the list fields of the served built-in types.
fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "ports" => ListStrategy::MergeByKey("containerPort"),
        "conditions" | "addresses" => ListStrategy::MergeByKey("type"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "finalizers" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

/// Drops `$patch`, `$retainKeys`, `$setElementOrder/…` and `$deleteFromPrimitiveList/…` keys.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn is_directive(v: &Value, directive: &str) -> bool {
    v.get("$patch").and_then(Value::as_str) == Some(directive)
}

/// Strategic merge patch: merge-patch semantics plus list merge keys and `$patch` directives.
pub fn strategic_merge(old: &Value, patch: &Value) -> Value {
    let Some(pmap) = patch.as_object() else {
        return strip_directives(patch);
    };
    if is_directive(patch, "replace") {
        return strip_directives(patch);
    }
    let mut out: Map<String, Value> = old.as_object().cloned().unwrap_or_default();
    for (key, pv) in pmap {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(remove)) = (out.get_mut(field), pv.as_array()) {
                cur.retain(|x| !remove.contains(x));
            }
            continue;
        }
        match pv {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(_) if is_directive(pv, "delete") => {
                out.remove(key);
            }
            Value::Object(_) => {
                let merged = strategic_merge(out.get(key).unwrap_or(&Value::Null), pv);
                out.insert(key.clone(), merged);
            }
            Value::Array(items) => {
                let cur = out
                    .get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                out.insert(
                    key.clone(),
                    Value::Array(merge_list(list_strategy(key), &cur, items)),
                );
            }
            other => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
    if let Some(retain) = pmap.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Value::Object(out)
}

fn merge_list(strategy: ListStrategy, cur: &[Value], patch: &[Value]) -> Vec<Value> {
    if patch.iter().any(|p| is_directive(p, "replace")) {
        return patch
            .iter()
            .filter(|p| !is_directive(p, "replace"))
            .map(strip_directives)
            .collect();
    }
    match strategy {
        ListStrategy::Replace => patch.iter().map(strip_directives).collect(),
        ListStrategy::MergePrimitives => {
            let mut out = cur.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            out
        }
        ListStrategy::MergeByKey(key) => {
            let mut out = cur.to_vec();
            for p in patch {
                let Some(k) = p.get(key) else {
                    out.push(strip_directives(p));
                    continue;
                };
                let pos = out.iter().position(|c| c.get(key) == Some(k));
                match (pos, is_directive(p, "delete")) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => out[i] = strategic_merge(&out[i], p),
                    (None, false) => out.push(strip_directives(p)),
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordon_patch_sets_unschedulable() {
        let node = json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.0.0.0/24"}});
        let out = apply_patch(
            PatchKind::Strategic,
            &node,
            &json!({"spec": {"unschedulable": true}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"],
            json!({"podCIDR": "10.0.0.0/24", "unschedulable": true})
        );
        let back = apply_patch(
            PatchKind::Strategic,
            &out,
            &json!({"spec": {"unschedulable": null}}),
        )
        .unwrap();
        assert_eq!(back["spec"], json!({"podCIDR": "10.0.0.0/24"}));
    }

    #[test]
    fn strategic_lists_merge_by_key_and_honour_directives() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
                         "metadata": {"finalizers": ["f1"]}});
        let patch = json!({
            "spec": {"containers": [{"name": "a", "image": "x2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "z"}],
                     "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}]},
            "metadata": {"finalizers": ["f2"], "$deleteFromPrimitiveList/finalizers": ["f1"]}
        });
        let out = strategic_merge(&pod, &patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "x2"}, {"name": "c", "image": "z"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f2"]));
    }

    #[test]
    fn strategic_replace_directives_replace_maps_and_lists() {
        let old = json!({"spec": {"a": 1, "b": 2, "tolerations": [{"key": "k"}]}});
        let out = strategic_merge(&old, &json!({"spec": {"$patch": "replace", "c": 3}}));
        assert_eq!(out["spec"], json!({"c": 3}));
        let out = strategic_merge(&old, &json!({"spec": {"tolerations": [{"key": "other"}]}}));
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "other"}]));
        let out = strategic_merge(&old, &json!({"spec": {"$retainKeys": ["a"], "a": 5}}));
        assert_eq!(out["spec"], json!({"a": 5}));
    }

    #[test]
    fn merge_and_json_patches() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply_patch(
            PatchKind::Merge,
            &old,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let out = apply_patch(
            PatchKind::Json,
            &old,
            &json!([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        let err = apply_patch(
            PatchKind::Json,
            &old,
            &json!([{"op": "test", "path": "/metadata/labels/a", "value": "0"}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        // kube-runtime's finalizer helper: test a missing list against null, then add it.
        let out = apply_patch(
            PatchKind::Json,
            &old,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x.io/f"]}
            ]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x.io/f"]));
        let present = json!({"metadata": {"finalizers": ["y"]}});
        let err = apply_patch(
            PatchKind::Json,
            &present,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422, "a present value is not null");
        assert_eq!(
            apply_patch(PatchKind::Json, &old, &json!({"op": "x"}))
                .unwrap_err()
                .code,
            400
        );
    }
}
