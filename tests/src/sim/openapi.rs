//! OpenAPI documents, as far as kubectl uses them: the v3 index, one document per group
//! version naming every served kind (with the CRD schemas), and a v2 document.

use serde_json::{Map, Value, json};

use super::registry::{Registry, ResourceDef};

fn gv_path(d: &ResourceDef) -> String {
    if d.group.is_empty() {
        format!("api/{}", d.version)
    } else {
        format!("apis/{}/{}", d.group, d.version)
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn v3_root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for d in reg.all() {
        let p = gv_path(d);
        let hash = format!("{:016x}", fingerprint(&p, reg));
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// Changes when the served types of a group version change, so kubectl's cache notices.
fn fingerprint(gv: &str, reg: &Registry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for d in reg.all().iter().filter(|d| gv_path(d) == gv) {
        feed(&d.plural);
        feed(&d.kind);
        if let Some(s) = &d.schema {
            feed(&s.to_string());
        }
    }
    h
}

fn definition_name(d: &ResourceDef) -> String {
    let group = if d.group.is_empty() {
        "core".to_string()
    } else {
        d.group.clone()
    };
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), d.version, d.kind)
}

fn kind_schema(d: &ResourceDef) -> Value {
    let mut schema =
        d.schema.as_deref().cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": d.group, "version": d.version, "kind": d.kind}]);
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert(
            "metadata".into(),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    schema
}

fn operation(d: &ResourceDef, verb: &str, op: &str) -> Value {
    json!({
        "operationId": format!("{op}{}", d.kind),
        "parameters": [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
        ],
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
        "responses": {"200": {"description": "OK"}},
    })
}

/// `/openapi/v3/<gv>`: schemas of the group version's kinds and their paths.
pub fn v3_group_version(reg: &Registry, gv: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = reg.all().iter().filter(|d| gv_path(d) == gv).collect();
    if defs.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for d in defs {
        schemas.insert(definition_name(d), kind_schema(d));
        let base = if d.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("/{gv}/{}", d.plural)
        };
        paths.insert(
            base.clone(),
            json!({"post": operation(d, "post", "create")}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"put": operation(d, "put", "replace"), "patch": operation(d, "patch", "patch")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v2`: deliberately without definitions. kubectl then computes `apply` patches from
/// its compiled-in types (strategic merge for built-ins) or as JSON merge patches (custom
/// resources), exactly as a real server lets it; schema validation happens on the server
/// (`fieldValidation`), which the v3 documents advertise.
pub fn v2(_reg: &Registry) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {},
        "definitions": {},
    })
}

/// The media type kubectl asks `/openapi/v2` for (gnostic's `openapi_v2.Document`).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn proto_field(out: &mut Vec<u8>, number: u8, payload: &[u8]) {
    // Wire type 2 (length-delimited); all our payloads are shorter than 128 bytes.
    out.push((number << 3) | 2);
    out.push(u8::try_from(payload.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(payload);
}

/// `/openapi/v2` in protobuf, the form kubectl's client-side validation downloads (a `kubectl
/// create -f` of a List validates its items with it): the same document as [`v2`], encoded as
/// gnostic's `openapi.v2.Document` (swagger = 1, info = 2 {title = 1, version = 2},
/// paths = 8, definitions = 9). Without definitions kubectl skips client-side checks of each
/// item, and the server validates them (`fieldValidation`), as for any type it has no schema of.
pub fn v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    proto_field(&mut info, 1, b"Kubernetes");
    proto_field(&mut info, 2, b"v1.33.0");
    let mut doc = Vec::new();
    proto_field(&mut doc, 1, b"2.0");
    proto_field(&mut doc, 2, &info);
    proto_field(&mut doc, 8, &[]);
    proto_field(&mut doc, 9, &[]);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_protobuf_document_is_the_json_one_encoded() {
        let doc = v2_protobuf();
        assert_eq!(&doc[..5], b"\x0a\x032.0");
        let info = b"\x12\x15\x0a\x0aKubernetes\x12\x07v1.33.0";
        assert_eq!(&doc[5..5 + info.len()], info);
        assert_eq!(&doc[5 + info.len()..], b"\x42\x00\x4a\x00");
    }

    #[test]
    fn v3_index_and_documents_cover_every_group_version() {
        let reg = Registry::default();
        let root = v3_root(&reg);
        assert!(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        let doc = v3_group_version(&reg, "apis/coordination.k8s.io/v1").unwrap();
        let lease = &doc["components"]["schemas"]["io.k8s.coordination.v1.Lease"];
        assert_eq!(lease["x-kubernetes-group-version-kind"][0]["kind"], "Lease");
        assert!(v3_group_version(&reg, "apis/nope/v1").is_none());
    }
}
