//! Conversion between stored objects and served API versions.
//!
//! Events are stored once, in core/v1 form, and served both as core/v1 and events.k8s.io/v1,
//! the way the API server shares one storage between the two.

use serde_json::{Map, Value};

use super::registry::{Conversion, ResourceDef};

/// (events.k8s.io/v1 field, core/v1 field) pairs that only change name.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    let pairs: Vec<_> = pairs.collect();
    for (k, v) in map {
        let key = pairs
            .iter()
            .find(|(from, _)| from == k)
            .map(|(_, to)| to.to_string())
            .unwrap_or_else(|| k.clone());
        out.insert(key, v.clone());
    }
    Value::Object(out)
}

/// A stored object as the client asked for it (`def`'s apiVersion and shape).
pub fn to_served(def: &ResourceDef, stored: &Value) -> Value {
    let mut obj = match def.conversion {
        Conversion::Identity => stored.clone(),
        Conversion::EventsV1 => rename(stored, EVENT_RENAMES.iter().map(|(a, b)| (*b, *a))),
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(def.api_version()));
        m.insert("kind".into(), Value::String(def.kind.clone()));
    }
    obj
}

/// A client's object in the stored shape.
pub fn to_stored(def: &ResourceDef, served: &Value) -> Value {
    match def.conversion {
        Conversion::Identity => served.clone(),
        Conversion::EventsV1 => {
            let mut obj = rename(served, EVENT_RENAMES.iter().copied());
            if let Some(m) = obj.as_object_mut() {
                m.insert("apiVersion".into(), Value::String("v1".into()));
                // kubectl's SOURCE column and the `source` field selector read source.component.
                if !m.contains_key("source") {
                    let mut src = Map::new();
                    if let Some(c) = m.get("reportingComponent").cloned() {
                        src.insert("component".into(), c);
                    }
                    if let Some(h) = m.get("reportingInstance").cloned() {
                        src.insert("host".into(), h);
                    }
                    m.insert("source".into(), Value::Object(src));
                }
            }
            obj
        }
    }
}

/// A field-selector field of `def` as it is named in the stored object.
pub fn stored_field_name(def: &ResourceDef, field: &str) -> String {
    match def.conversion {
        Conversion::Identity => field.to_string(),
        Conversion::EventsV1 => {
            if let Some(rest) = field.strip_prefix("regarding.") {
                format!("involvedObject.{rest}")
            } else if field == "reportingController" {
                "reportingComponent".to_string()
            } else {
                field.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::registry::builtin_defs;
    use serde_json::json;

    #[test]
    fn events_v1_round_trips_through_core_storage() {
        let defs = builtin_defs();
        let v1 = defs.iter().find(|d| d.group == "events.k8s.io").unwrap();
        let served = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"},
            "note": "boom", "reason": "Failed", "type": "Warning",
            "reportingController": "snapmend.io/operator", "reportingInstance": "op-1",
            "eventTime": "2026-01-01T00:00:00.000000Z"
        });
        let stored = to_stored(v1, &served);
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "boom");
        assert_eq!(stored["source"]["component"], "snapmend.io/operator");
        let back = to_served(v1, &stored);
        assert_eq!(back["regarding"], served["regarding"]);
        assert_eq!(back["note"], "boom");
        assert_eq!(back["apiVersion"], "events.k8s.io/v1");
        assert_eq!(
            stored_field_name(v1, "regarding.name"),
            "involvedObject.name"
        );
    }
}
