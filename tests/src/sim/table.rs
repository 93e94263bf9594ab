//! Server-side printing: `meta.k8s.io/v1` Table responses for kubectl.

use serde_json::{Value, json};

use super::registry::{Printer, PrinterColumn, ResourceDef};

/// What a Table row's `object` holds (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> Self {
        match s {
            "None" => Self::None,
            "Object" => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// kubectl's (apimachinery's) HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 timestamp, or `<unknown>`.
pub fn age(ts: Option<&str>) -> Value {
    let Some(ts) = ts.filter(|t| !t.is_empty()) else {
        return json!("<unknown>");
    };
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        Err(_) => json!("<invalid>"),
    }
}

/// Evaluates the JSONPath subset CRDs use: `.a.b`, `.a[0].b`, `.a[*].b`, `{.a}`, `.a['b.c']`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let mut cur = vec![obj.clone()];
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                // `\.` is a literal dot inside a key (`.metadata.labels.app\.kubernetes\.io/name`).
                let mut key = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && chars.get(i + 1) == Some(&'.') {
                        key.push('.');
                        i += 2;
                        continue;
                    }
                    key.push(chars[i]);
                    i += 1;
                }
                if key.is_empty() {
                    continue;
                }
                cur = cur.iter().filter_map(|v| v.get(&key).cloned()).collect();
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|e| i + e)
                    .unwrap_or(chars.len());
                let inner: String = chars[i + 1..end.min(chars.len())].iter().collect();
                i = end + 1;
                let inner = inner.trim();
                if inner == "*" {
                    cur = cur
                        .iter()
                        .flat_map(|v| match v {
                            Value::Array(a) => a.clone(),
                            Value::Object(m) => m.values().cloned().collect(),
                            _ => Vec::new(),
                        })
                        .collect();
                } else if let Some(expr) =
                    inner.strip_prefix("?(").and_then(|e| e.strip_suffix(')'))
                {
                    cur = cur
                        .iter()
                        .flat_map(|v| match v {
                            Value::Array(a) => a.clone(),
                            Value::Object(m) => m.values().cloned().collect(),
                            _ => Vec::new(),
                        })
                        .filter(|el| filter_matches(expr, el))
                        .collect();
                } else if let Ok(n) = inner.parse::<i64>() {
                    cur = cur
                        .iter()
                        .filter_map(|v| {
                            let a = v.as_array()?;
                            let idx = if n < 0 { a.len() as i64 + n } else { n };
                            a.get(usize::try_from(idx).ok()?).cloned()
                        })
                        .collect();
                } else {
                    let key = inner
                        .trim_matches(|c| c == '\'' || c == '"')
                        .replace("\\.", ".");
                    cur = cur.iter().filter_map(|v| v.get(&key).cloned()).collect();
                }
            }
            _ => i += 1,
        }
    }
    cur
}

/// A JSONPath filter such as `@.type=="Ready"`, `@.count!=0` or `@.name` (exists).
fn filter_matches(expr: &str, element: &Value) -> bool {
    let (lhs, op, rhs) = if let Some((l, r)) = expr.split_once("==") {
        (l, Some(true), r)
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l, Some(false), r)
    } else {
        (expr, None, "")
    };
    let path = lhs.trim().trim_start_matches('@');
    let found = json_path(element, path).into_iter().next();
    match op {
        None => found.is_some_and(|v| !v.is_null() && v != Value::Bool(false)),
        Some(equal) => {
            let rhs = rhs.trim();
            let literal = if (rhs.starts_with('"') && rhs.ends_with('"') && rhs.len() >= 2)
                || (rhs.starts_with('\'') && rhs.ends_with('\'') && rhs.len() >= 2)
            {
                Value::String(rhs[1..rhs.len() - 1].to_string())
            } else {
                serde_json::from_str(rhs).unwrap_or_else(|_| Value::String(rhs.to_string()))
            };
            (found.as_ref() == Some(&literal)) == equal
        }
    }
}

fn col(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        0,
    )
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    )
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn none_if_empty(x: String) -> Value {
    if x.is_empty() {
        json!("<none>")
    } else {
        json!(x)
    }
}

fn created(obj: &Value) -> Value {
    age(obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str))
}

/// Column definitions and the cells of one object.
fn columns(printer: &Printer) -> Vec<Value> {
    match printer {
        Printer::Node => vec![
            name_col(),
            col("Status", "string", "", "The status of the node", 0),
            col("Roles", "string", "", "The roles of the node", 0),
            age_col(),
            col(
                "Version",
                "string",
                "",
                "Kubelet Version reported by the node.",
                0,
            ),
            col(
                "Internal-IP",
                "string",
                "",
                "List of addresses reachable to the node.",
                1,
            ),
            col(
                "External-IP",
                "string",
                "",
                "List of addresses reachable to the node.",
                1,
            ),
            col(
                "OS-Image",
                "string",
                "",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
                1,
            ),
            col(
                "Kernel-Version",
                "string",
                "",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                1,
            ),
            col(
                "Container-Runtime",
                "string",
                "",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
                1,
            ),
        ],
        Printer::Pod => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age_col(),
            col(
                "IP",
                "string",
                "",
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            col(
                "Node",
                "string",
                "",
                "NodeName is a request to schedule this pod onto a specific node.",
                1,
            ),
            col(
                "Nominated Node",
                "string",
                "",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
                1,
            ),
            col(
                "Readiness Gates",
                "string",
                "",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        Printer::Event | Printer::EventsV1 => vec![
            col(
                "Last Seen",
                "string",
                "",
                "The last time this event was seen.",
                0,
            ),
            col(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            col(
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            col("Object", "string", "", "The object this Event is about.", 0),
            col(
                "Subobject",
                "string",
                "",
                "The subobject this Event is about (fieldPath).",
                1,
            ),
            col(
                "Source",
                "string",
                "",
                "The component reporting this event.",
                1,
            ),
            col(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            col(
                "First Seen",
                "string",
                "",
                "The time at which the event was first recorded.",
                1,
            ),
            col(
                "Count",
                "string",
                "",
                "The number of times this event has occurred.",
                1,
            ),
            col("Name", "string", "name", "The name of the event.", 1),
        ],
        Printer::Namespace => vec![
            name_col(),
            col("Status", "string", "", "The status of the namespace", 0),
            age_col(),
        ],
        Printer::ConfigMap => vec![
            name_col(),
            col(
                "Data",
                "string",
                "",
                "Data contains the configuration data.",
                0,
            ),
            age_col(),
        ],
        Printer::Lease => vec![
            name_col(),
            col(
                "Holder",
                "string",
                "",
                "HolderIdentity contains the identity of the holder of a current lease.",
                0,
            ),
            age_col(),
        ],
        Printer::Deployment => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            col(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            col(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_col(),
        ],
        Printer::DaemonSet => vec![
            name_col(),
            col(
                "Desired",
                "integer",
                "",
                "The total number of nodes that should be running the daemon pod.",
                0,
            ),
            col(
                "Current",
                "integer",
                "",
                "The number of nodes running at least one daemon pod and are supposed to.",
                0,
            ),
            col(
                "Ready",
                "integer",
                "",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
                0,
            ),
            col(
                "Up-to-date",
                "integer",
                "",
                "The total number of nodes that are running updated daemon pod",
                0,
            ),
            col(
                "Available",
                "integer",
                "",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
                0,
            ),
            col(
                "Node Selector",
                "string",
                "",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
                0,
            ),
            age_col(),
        ],
        Printer::CustomResourceDefinition => vec![
            name_col(),
            col(
                "Created At",
                "date",
                "",
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
                0,
            ),
        ],
        Printer::Columns(cols) if cols.is_empty() => vec![name_col(), age_col()],
        Printer::Columns(cols) => {
            let mut out = vec![name_col()];
            out.extend(
                cols.iter()
                    .map(|c| col(&c.name, &c.type_, &c.format, &c.description, c.priority)),
            );
            out
        }
    }
}

fn node_cells(o: &Value) -> Vec<Value> {
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| s(c, "/type") == "Ready");
    let mut status = match ready.map(|c| s(c, "/status")) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(str::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |t: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
            .map(|x| s(x, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        json!(status),
        none_if_empty(roles.join(",")),
        created(o),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        none_if_empty(address("InternalIP")),
        none_if_empty(address("ExternalIP")),
        json!(match s(o, "/status/nodeInfo/osImage") {
            "" => "<unknown>",
            x => x,
        }),
        json!(match s(o, "/status/nodeInfo/kernelVersion") {
            "" => "<unknown>",
            x => x,
        }),
        json!(match s(o, "/status/nodeInfo/containerRuntimeVersion") {
            "" => "<unknown>",
            x => x,
        }),
    ]
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut reason = match s(o, "/status/reason") {
        "" => s(o, "/status/phase").to_string(),
        r => r.to_string(),
    };
    for c in &statuses {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        created(o),
        none_if_empty(s(o, "/status/podIP").to_string()),
        none_if_empty(s(o, "/spec/nodeName").to_string()),
        none_if_empty(s(o, "/status/nominatedNodeName").to_string()),
        json!("<none>"),
    ]
}

/// Event cells from either the core/v1 or the events.k8s.io/v1 shape.
fn event_cells(o: &Value) -> Vec<Value> {
    let pick = |a: &str, b: &str| match s(o, a) {
        "" => s(o, b).to_string(),
        x => x.to_string(),
    };
    let regarding = o
        .get("involvedObject")
        .or_else(|| o.get("regarding"))
        .cloned()
        .unwrap_or(Value::Null);
    let last_seen = [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/deprecatedLastTimestamp",
        "/eventTime",
    ]
    .iter()
    .map(|p| s(o, p))
    .find(|x| !x.is_empty())
    .map(|x| age(Some(x)))
    .unwrap_or_else(|| json!("<unknown>"));
    let first_seen = ["/firstTimestamp", "/deprecatedFirstTimestamp", "/eventTime"]
        .iter()
        .map(|p| s(o, p))
        .find(|x| !x.is_empty())
        .map(|x| age(Some(x)))
        .unwrap_or_else(|| json!("<unknown>"));
    let count = o
        .pointer("/series/count")
        .or_else(|| o.get("count"))
        .or_else(|| o.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let source = match pick("/source/component", "/deprecatedSource/component") {
        x if !x.is_empty() => x,
        _ => pick("/reportingComponent", "/reportingController"),
    };
    vec![
        last_seen,
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(format!(
            "{}/{}",
            s(&regarding, "/kind").to_lowercase(),
            s(&regarding, "/name")
        )),
        json!(s(&regarding, "/fieldPath")),
        json!(source),
        json!(pick("/message", "/note")),
        first_seen,
        json!(count.to_string()),
        json!(s(o, "/metadata/name")),
    ]
}

fn custom_cell(c: &PrinterColumn, o: &Value) -> Value {
    let results = json_path(o, &c.json_path);
    let Some(v) = results.into_iter().next() else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => match v.as_str() {
            Some(ts) => age(Some(ts)),
            None => json!("<invalid>"),
        },
        "integer" => {
            if v.is_i64() || v.is_u64() {
                v
            } else {
                Value::Null
            }
        }
        "number" => {
            if v.is_number() {
                v
            } else {
                Value::Null
            }
        }
        "boolean" => {
            if v.is_boolean() {
                v
            } else {
                Value::Null
            }
        }
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

fn cells(printer: &Printer, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let mut out = match printer {
        Printer::Event | Printer::EventsV1 => return event_cells(o),
        _ => vec![name],
    };
    out.extend(match printer {
        Printer::Node => node_cells(o),
        Printer::Pod => pod_cells(o),
        Printer::Namespace => vec![json!(s(o, "/status/phase")), created(o)],
        Printer::ConfigMap => {
            let n = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![json!(n.to_string()), created(o)]
        }
        Printer::Lease => vec![
            none_if_empty(s(o, "/spec/holderIdentity").to_string()),
            created(o),
        ],
        Printer::Deployment => {
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            vec![
                json!(format!(
                    "{}/{}",
                    n("/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(n("/status/updatedReplicas").to_string()),
                json!(n("/status/availableReplicas").to_string()),
                created(o),
            ]
        }
        Printer::DaemonSet => {
            let n = |p: &str| json!(o.pointer(p).and_then(Value::as_i64).unwrap_or(0));
            let selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                n("/status/desiredNumberScheduled"),
                n("/status/currentNumberScheduled"),
                n("/status/numberReady"),
                n("/status/updatedNumberScheduled"),
                n("/status/numberAvailable"),
                none_if_empty(selector),
                created(o),
            ]
        }
        Printer::CustomResourceDefinition => vec![json!(s(o, "/metadata/creationTimestamp"))],
        Printer::Columns(cols) if cols.is_empty() => vec![created(o)],
        Printer::Columns(cols) => cols.iter().map(|c| custom_cell(c, o)).collect(),
        Printer::Event | Printer::EventsV1 => Vec::new(),
    });
    out
}

/// A `meta.k8s.io/v1` PartialObjectMetadata for an object.
pub fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table for `items` (served form). Watches send headers with the first event only.
pub fn table(
    def: &ResourceDef,
    items: &[Value],
    include: IncludeObject,
    with_headers: bool,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(&def.printer, o)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if with_headers { Value::Array(columns(&def.printer)) } else { json!([]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::registry::builtin_defs;

    #[test]
    fn human_duration_matches_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (9 * 86400, "9d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn json_path_subset() {
        let o = json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "m": {"x.y": "z"}});
        assert_eq!(json_path(&o, ".a.b[0].c"), vec![json!(1)]);
        assert_eq!(json_path(&o, ".a.b[*].c"), vec![json!(1), json!(2)]);
        assert_eq!(json_path(&o, "{.a.b[-1].c}"), vec![json!(2)]);
        assert_eq!(json_path(&o, ".m['x.y']"), vec![json!("z")]);
        assert_eq!(json_path(&o, r".m.x\.y"), vec![json!("z")]);
        assert!(json_path(&o, ".nope.x").is_empty());
        let c = json!({"status": {"conditions": [
            {"type": "Synced", "status": "False"},
            {"type": "Ready", "status": "True", "n": 2}
        ]}});
        assert_eq!(
            json_path(&c, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            json_path(&c, ".status.conditions[?(@.type!='Ready')].type"),
            vec![json!("Synced")]
        );
        assert_eq!(
            json_path(&c, ".status.conditions[?(@.n==2)].type"),
            vec![json!("Ready")]
        );
        assert_eq!(
            json_path(&c, ".status.conditions[?(@.n)].type"),
            vec![json!("Ready")]
        );
    }

    #[test]
    fn node_rows_show_scheduling_disabled_and_roles() {
        let defs = builtin_defs();
        let nodes = defs.iter().find(|d| d.plural == "nodes").unwrap();
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let t = table(nodes, &[n], IncludeObject::Metadata, true, "5", None);
        assert_eq!(t["rows"][0]["cells"][1], "Ready,SchedulingDisabled");
        assert_eq!(t["rows"][0]["cells"][2], "control-plane");
        assert_eq!(t["rows"][0]["cells"][4], "v1.33.0");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    }

    #[test]
    fn crd_columns_render_types() {
        let def = ResourceDef {
            printer: Printer::Columns(vec![
                PrinterColumn {
                    name: "Node".into(),
                    type_: "string".into(),
                    format: String::new(),
                    description: String::new(),
                    priority: 0,
                    json_path: ".spec.nodeName".into(),
                },
                PrinterColumn {
                    name: "Count".into(),
                    type_: "integer".into(),
                    format: String::new(),
                    description: String::new(),
                    priority: 0,
                    json_path: ".spec.n".into(),
                },
                PrinterColumn {
                    name: "Missing".into(),
                    type_: "string".into(),
                    format: String::new(),
                    description: String::new(),
                    priority: 0,
                    json_path: ".status.x".into(),
                },
            ]),
            ..builtin_defs().remove(0)
        };
        let o = json!({"metadata": {"name": "r"}, "spec": {"nodeName": "n1", "n": 3}});
        let t = table(&def, &[o], IncludeObject::None, true, "1", None);
        assert_eq!(t["rows"][0]["cells"], json!(["r", "n1", 3, null]));
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn event_rows_name_the_object() {
        let defs = builtin_defs();
        let ev = defs
            .iter()
            .find(|d| d.plural == "events" && d.group.is_empty())
            .unwrap();
        let e = json!({"metadata": {"name": "e1"}, "type": "Warning", "reason": "FailedCreatePodSandBox",
                       "involvedObject": {"kind": "Pod", "name": "p"}, "message": "boom", "count": 3,
                       "lastTimestamp": "2020-01-01T00:00:00Z"});
        let t = table(ev, &[e], IncludeObject::Metadata, true, "1", None);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Warning");
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[6], "boom");
        assert_eq!(cells[8], "3");
    }
}
