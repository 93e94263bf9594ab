//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send
//! (`kubectl create namespace|configmap`, `kubectl drain` evictions) into JSON objects.
//! Only the types listed in [`schema_for`] are understood; others are refused with 415.

use serde_json::{Map, Value, json};

/// The envelope prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Time,
    StrMap,
    BytesMap,
    RepStr,
    Msg(&'static [Field]),
    RepMsg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(11, "labels", Kind::StrMap),
    f(12, "annotations", Kind::StrMap),
    f(13, "ownerReferences", Kind::RepMsg(OWNER_REF)),
    f(14, "finalizers", Kind::RepStr),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::StrMap),
    f(3, "binaryData", Kind::BytesMap),
    f(4, "immutable", Kind::Bool),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[f(1, "finalizers", Kind::RepStr)])),
];

const PRECONDITIONS: &[Field] = &[f(1, "uid", Kind::Str), f(2, "resourceVersion", Kind::Str)];

const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Kind::Int),
    f(2, "preconditions", Kind::Msg(PRECONDITIONS)),
    f(3, "orphanDependents", Kind::Bool),
    f(4, "propagationPolicy", Kind::Str),
    f(5, "dryRun", Kind::RepStr),
];

const EVICTION: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "deleteOptions", Kind::Msg(DELETE_OPTIONS)),
];

/// core/v1 ServiceAccount (`kubectl create serviceaccount`).
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "secrets",
        Kind::RepMsg(&[
            f(1, "kind", Kind::Str),
            f(2, "namespace", Kind::Str),
            f(3, "name", Kind::Str),
        ]),
    ),
    f(
        3,
        "imagePullSecrets",
        Kind::RepMsg(&[f(1, "name", Kind::Str)]),
    ),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

const BOUND_OBJECT_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "apiVersion", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
];

/// authentication/v1 TokenRequest (`kubectl create token`).
const TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "audiences", Kind::RepStr),
            f(3, "boundObjectRef", Kind::Msg(BOUND_OBJECT_REF)),
            f(4, "expirationSeconds", Kind::Int),
        ]),
    ),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Kind::Str),
    f(2, "verb", Kind::Str),
    f(3, "group", Kind::Str),
    f(4, "version", Kind::Str),
    f(5, "resource", Kind::Str),
    f(6, "subresource", Kind::Str),
    f(7, "name", Kind::Str),
];

/// authorization/v1 SelfSubjectAccessReview (`kubectl auth can-i`).
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
            f(
                2,
                "nonResourceAttributes",
                Kind::Msg(&[f(1, "path", Kind::Str), f(2, "verb", Kind::Str)]),
            ),
        ]),
    ),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        ("policy/v1", "Eviction") | ("policy/v1beta1", "Eviction") => Some(EVICTION),
        ("authentication.k8s.io/v1", "TokenRequest") => Some(TOKEN_REQUEST),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => Some(SELF_SUBJECT_ACCESS_REVIEW),
        _ => None,
    }
}

/// One decoded wire field: its number and either a varint or a length-delimited payload.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let value = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let v = buf.get(pos..end)?;
                pos = end;
                Wire::Bytes(v)
            }
            1 => {
                pos = pos.checked_add(8)?;
                continue;
            }
            5 => {
                pos = pos.checked_add(4)?;
                continue;
            }
            _ => return None,
        };
        out.push((tag >> 3, value));
    }
    Some(out)
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut key = String::new();
    let mut value = Vec::new();
    for (num, w) in fields(b)? {
        match (num, w) {
            (1, Wire::Bytes(k)) => key = string(k)?,
            (2, Wire::Bytes(v)) => value = v.to_vec(),
            _ => {}
        }
    }
    Some((key, value))
}

fn time(b: &[u8]) -> Option<Value> {
    let mut secs = 0i64;
    for (num, w) in fields(b)? {
        if let (1, Wire::Varint(v)) = (num, w) {
            secs = v as i64;
        }
    }
    let ts = jiff::Timestamp::from_second(secs).ok()?;
    Some(json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn message(buf: &[u8], schema: &[Field]) -> Option<Value> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let name = field.name.to_string();
        match (field.kind, w) {
            (Kind::Str, Wire::Bytes(b)) => {
                out.insert(name, json!(string(b)?));
            }
            (Kind::Int, Wire::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Kind::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Time, Wire::Bytes(b)) => {
                out.insert(name, time(b)?);
            }
            (Kind::StrMap, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                entry[k] = json!(string(&v)?);
            }
            (Kind::BytesMap, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                entry[k] = json!(base64_encode(&v));
            }
            (Kind::RepStr, Wire::Bytes(b)) => {
                let entry = out.entry(name).or_insert_with(|| json!([]));
                entry.as_array_mut()?.push(json!(string(b)?));
            }
            (Kind::Msg(sub), Wire::Bytes(b)) => {
                out.insert(name, message(b, sub)?);
            }
            (Kind::RepMsg(sub), Wire::Bytes(b)) => {
                let item = message(b, sub)?;
                let entry = out.entry(name).or_insert_with(|| json!([]));
                entry.as_array_mut()?.push(item);
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes a `application/vnd.kubernetes.protobuf` body, or explains why it cannot.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body lacks the k8s protobuf envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (num, w) in fields(envelope).ok_or("malformed protobuf envelope")? {
        match (num, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, v) in fields(tm).ok_or("malformed TypeMeta")? {
                    match (n, v) {
                        (1, Wire::Bytes(s)) => api_version = string(s).unwrap_or_default(),
                        (2, Wire::Bytes(s)) => kind = string(s).unwrap_or_default(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        format!("protobuf bodies of {api_version} {kind} are not supported; send JSON")
    })?;
    let mut obj = message(raw, schema).ok_or_else(|| format!("malformed protobuf {kind}"))?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(num: u64, wire: u64) -> u8 {
        ((num << 3) | wire) as u8
    }

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![tag(num, 2), payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_config_map_with_labels_and_data() {
        let mut meta = len_field(1, b"cfg");
        meta.extend(len_field(
            11,
            &[len_field(1, b"app"), len_field(2, b"web")].concat(),
        ));
        meta.extend(len_field(14, b"f1"));
        let mut cm = len_field(1, &meta);
        cm.extend(len_field(
            2,
            &[len_field(1, b"k"), len_field(2, b"v")].concat(),
        ));
        cm.extend(len_field(
            3,
            &[len_field(1, b"bin"), len_field(2, b"hi!")].concat(),
        ));
        cm.extend([tag(4, 0), 1]);
        let type_meta = [len_field(1, b"v1"), len_field(2, b"ConfigMap")].concat();
        let mut body = MAGIC.to_vec();
        body.extend(len_field(1, &type_meta));
        body.extend(len_field(2, &cm));
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}, "finalizers": ["f1"]},
                   "data": {"k": "v"}, "binaryData": {"bin": "aGkh"}, "immutable": true})
        );
    }

    #[test]
    fn refuses_unknown_types_and_garbage() {
        let type_meta = [len_field(1, b"apps/v1"), len_field(2, b"Deployment")].concat();
        let mut body = MAGIC.to_vec();
        body.extend(len_field(1, &type_meta));
        assert!(decode(&body).unwrap_err().contains("not supported"));
        assert!(decode(b"{}").is_err());
        assert!(decode(b"k8s\0\xff").is_err());
    }
}
