//! Server-side apply with simplified field ownership.
//!
//! Ownership is a set of leaf paths per (manager, operation, subresource), stored in
//! `metadata.managedFields` as FieldsV1. Objects are walked by key; every non-object value,
//! lists included, is one atomic leaf (no `k:`/`v:` list-item ownership).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::object::{metadata_mut, now_rfc3339};
use super::status::Cause;

type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields the server owns; they are never part of a manager's set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The leaf paths an object (or apply configuration) sets.
pub fn leaf_paths(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = v.as_object() else { return out };
    for (k, child) in map {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if k == "metadata" {
            if let Some(meta) = child.as_object() {
                for (mk, mv) in meta {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        collect(mv, vec![k.clone(), mk.clone()], &mut out);
                    }
                }
            }
            continue;
        }
        collect(child, vec![k.clone()], &mut out);
    }
    out
}

fn collect(v: &Value, path: FieldPath, out: &mut FieldSet) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(child, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// After `path` was removed: a nested map it leaves empty goes too, as the API server drops a
/// map the manager owned (`.` in FieldsV1) once none of its fields remain. Top-level fields
/// (`spec`, `status`) are never removed.
fn prune_emptied_parents(v: &mut Value, path: &[String]) {
    for depth in (2..path.len()).rev() {
        let parent = &path[..depth];
        if get_path(v, parent)
            .and_then(Value::as_object)
            .is_some_and(|m| m.is_empty())
        {
            remove_path(v, parent);
        } else {
            return;
        }
    }
}

/// Whether two paths overlap (one is a prefix of the other).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b.iter()).all(|(x, y)| x == y)
}

/// FieldsV1 (`{"f:spec":{"f:replicas":{}}}`) from a set of leaf paths.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            cur = entry.as_object_mut().expect("just made an object");
        }
    }
    Value::Object(root)
}

/// Leaf paths from FieldsV1; keys other than `f:` (list items, `.`) end the path.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, path: FieldPath, out: &mut FieldSet) {
        let fields: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if fields.is_empty() {
            if !path.is_empty() {
                out.insert(path);
            }
            return;
        }
        for (k, child) in fields {
            let mut p = path.clone();
            p.push(k[2..].to_string());
            walk(child, p, out);
        }
    }
    walk(v, Vec::new(), &mut out);
    out
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| Entry {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_string(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = Value::String(s.clone());
            }
            v
        })
        .collect();
    metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
}

fn same_owner(e: &Entry, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
    e.manager == manager && e.operation == operation && e.subresource.as_deref() == subresource
}

fn upsert(
    entries: &mut Vec<Entry>,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    fields: FieldSet,
    union: bool,
) {
    match entries
        .iter_mut()
        .find(|e| same_owner(e, manager, operation, subresource))
    {
        Some(e) => {
            if union {
                e.fields.extend(fields);
            } else {
                e.fields = fields;
            }
            e.time = now_rfc3339();
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: now_rfc3339(),
            subresource: subresource.map(str::to_string),
            fields,
        }),
    }
}

/// The part of an apply configuration a subresource may set (status only for `/status`).
fn scoped_config(config: &Value, subresource: Option<&str>) -> Value {
    match subresource {
        Some("status") => json!({"status": config.get("status").cloned().unwrap_or(Value::Null)}),
        _ => config.clone(),
    }
}

/// Deep merge of an apply configuration into the live object: maps merge, everything else
/// (lists included) replaces; null removes.
fn merge_config(live: &mut Value, config: &Value) {
    match (live.as_object_mut(), config.as_object()) {
        (Some(l), Some(c)) => {
            for (k, cv) in c {
                if cv.is_null() {
                    l.remove(k);
                } else if cv.is_object() && l.get(k).is_some_and(Value::is_object) {
                    if let Some(lv) = l.get_mut(k) {
                        merge_config(lv, cv);
                    }
                } else {
                    l.insert(k.clone(), cv.clone());
                }
            }
        }
        _ => *live = config.clone(),
    }
}

/// Applies `config` for `manager` to `live`: conflicts (unless forced) when a value owned by
/// another manager would change; fields this manager applied before and no longer applies
/// are removed unless someone else owns them.
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<Value, Vec<Cause>> {
    let config = scoped_config(config, subresource);
    let mut entries = read_entries(live);
    let applied = leaf_paths(&config);
    let mut conflicts = Vec::new();
    for path in &applied {
        let live_v = get_path(live, path);
        let config_v = get_path(&config, path);
        // An empty map in a configuration only asserts presence; it merges, never overwrites.
        let presence_only = config_v
            .and_then(Value::as_object)
            .is_some_and(|m| m.is_empty());
        if live_v.is_none() || live_v == config_v || presence_only {
            continue;
        }
        for e in entries.iter_mut() {
            if same_owner(e, manager, "Apply", subresource) {
                continue;
            }
            let owned: Vec<FieldPath> = e
                .fields
                .iter()
                .filter(|p| overlaps(p, path))
                .cloned()
                .collect();
            if owned.is_empty() {
                continue;
            }
            if force {
                for p in owned {
                    e.fields.remove(&p);
                }
            } else {
                let dotted = format!(".{}", path.join("."));
                conflicts.push(Cause::new(
                    "FieldManagerConflict",
                    dotted.clone(),
                    format!(
                        "conflict with \"{}\" using {}: {dotted}",
                        e.manager, e.api_version
                    ),
                ));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let previous = entries
        .iter()
        .find(|e| same_owner(e, manager, "Apply", subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut out = live.clone();
    for path in previous.difference(&applied) {
        let owned_by_other = entries
            .iter()
            .filter(|e| !same_owner(e, manager, "Apply", subresource))
            .any(|e| e.fields.iter().any(|p| overlaps(p, path)));
        if !owned_by_other {
            remove_path(&mut out, path);
            prune_emptied_parents(&mut out, path);
        }
    }
    let mut body = config.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    merge_config(&mut out, &body);
    upsert(
        &mut entries,
        manager,
        "Apply",
        api_version,
        subresource,
        applied,
        false,
    );
    write_entries(&mut out, &entries);
    Ok(out)
}

/// Records ownership for an object created by apply.
pub fn record_apply(
    obj: &mut Value,
    _old: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let mut entries = Vec::new();
    upsert(
        &mut entries,
        manager,
        "Apply",
        api_version,
        subresource,
        leaf_paths(config),
        false,
    );
    write_entries(obj, &entries);
}

/// Records an Update by `manager`: the fields it changed become its own and leave other sets.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    // Fields that are gone are owned by nobody.
    for e in entries.iter_mut() {
        e.fields.retain(|p| get_path(new, p).is_some());
    }
    let in_scope = |p: &FieldPath| match subresource {
        Some("status") => p.first().is_some_and(|f| f == "status"),
        _ => p.first().is_none_or(|f| f != "status"),
    };
    let changed: FieldSet = leaf_paths(new)
        .into_iter()
        .filter(in_scope)
        .filter(|p| old.is_none_or(|o| get_path(o, p) != get_path(new, p)))
        .collect();
    if changed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        if !same_owner(e, manager, "Update", subresource) {
            e.fields.retain(|p| !changed.iter().any(|c| overlaps(c, p)));
        }
    }
    upsert(
        &mut entries,
        manager,
        "Update",
        api_version,
        subresource,
        changed,
        true,
    );
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"r": 1, "list": [1, 2]}});
        let set = leaf_paths(&obj);
        let v = to_fields_v1(&set);
        assert_eq!(
            v,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:r": {}, "f:list": {}}})
        );
        assert_eq!(from_fields_v1(&v), set);
    }

    #[test]
    fn apply_conflicts_unless_forced_and_prunes_dropped_fields() {
        let live = json!({"metadata": {"name": "x"}, "spec": {}});
        let a = apply(
            &live,
            &json!({"spec": {"replicas": 1, "paused": true}}),
            "alice",
            "v1",
            false,
            None,
        )
        .unwrap();
        assert_eq!(a["spec"], json!({"replicas": 1, "paused": true}));
        let err = apply(
            &a,
            &json!({"spec": {"replicas": 2}}),
            "bob",
            "v1",
            false,
            None,
        )
        .unwrap_err();
        assert_eq!(err[0].field, ".spec.replicas");
        assert!(err[0].message.contains("\"alice\""));
        let same = apply(
            &a,
            &json!({"spec": {"replicas": 1}}),
            "bob",
            "v1",
            false,
            None,
        )
        .unwrap();
        assert_eq!(same["spec"]["replicas"], 1);
        let forced = apply(
            &a,
            &json!({"spec": {"replicas": 2}}),
            "bob",
            "v1",
            true,
            None,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let dropped = apply(&forced, &json!({"spec": {}}), "alice", "v1", false, None).unwrap();
        assert_eq!(dropped["spec"], json!({"replicas": 2}));
    }

    #[test]
    fn a_nested_map_left_empty_by_pruning_is_removed() {
        let live = json!({"metadata": {"name": "x"}});
        let a = apply(
            &live,
            &json!({"status": {"phase": "A", "request": {"id": "1", "action": "Verify"}}}),
            "op",
            "v1",
            false,
            Some("status"),
        )
        .unwrap();
        let b = apply(
            &a,
            &json!({"status": {"phase": "B"}}),
            "op",
            "v1",
            false,
            Some("status"),
        )
        .unwrap();
        assert_eq!(b["status"], json!({"phase": "B"}));
    }

    #[test]
    fn updates_take_ownership_of_changed_fields() {
        let old = apply(
            &json!({"metadata": {"name": "x"}}),
            &json!({"spec": {"a": 1}}),
            "alice",
            "v1",
            false,
            None,
        )
        .unwrap();
        let mut new = old.clone();
        new["spec"]["a"] = json!(2);
        record_update(&mut new, Some(&old), "kubectl-edit", "v1", None);
        let entries = read_entries(&new);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "kubectl-edit");
        let err = apply(&new, &json!({"spec": {"a": 3}}), "alice", "v1", false, None).unwrap_err();
        assert!(err[0].message.contains("kubectl-edit"));
    }
}
