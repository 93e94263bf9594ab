//! Validation of custom resources against a CRD's structural schema: pruning of unknown fields,
//! nullability, defaults, types, required fields, enums, bounds, patterns, and CEL rules
//! (`x-kubernetes-validations`, including transition rules) through kube-cel.

use serde_json::{Map, Value};

use super::status::Cause;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Ignore" => Some(Self::Ignore),
            "Warn" | "" => Some(Self::Warn),
            "Strict" => Some(Self::Strict),
            _ => None,
        }
    }
}

/// The result of validating one object: the pruned, defaulted object and what was wrong.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub object: Value,
    pub causes: Vec<Cause>,
    pub unknown_fields: Vec<String>,
}

/// Validates `obj` (and `old`, for transition rules) against an openAPIV3Schema.
pub fn validate_custom_resource(
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
    _mode: FieldValidation,
) -> Outcome {
    let mut causes = Vec::new();
    let mut unknown = Vec::new();
    let mut object = obj.clone();
    if let (Some(map), Some(props)) = (
        object.as_object_mut(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let Some(sub) = props.get(&k) else {
                if !preserves_unknown(schema) {
                    map.remove(&k);
                    unknown.push(k.clone());
                }
                continue;
            };
            let v = map.remove(&k).unwrap_or(Value::Null);
            if let Some(v) = walk(sub, v, &k, &mut causes, &mut unknown) {
                map.insert(k, v);
            }
        }
        apply_object_defaults(schema, map);
        check_required(schema, map, "", &mut causes);
    }
    if causes.is_empty() {
        causes.extend(cel_causes(schema, &object, old));
    }
    Outcome {
        object,
        causes,
        unknown_fields: unknown,
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How the API server prints a value inside `Invalid value: …`.
fn show(v: &Value) -> String {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => v.to_string(),
        other => format!("\"{}\"", type_name(other)),
    }
}

fn type_ok(schema: &Value, v: &Value) -> bool {
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return v.is_string() || v.is_i64() || v.is_u64();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        _ => true,
    }
}

/// Validates and normalises one value; `None` drops it (a pruned null).
fn walk(
    schema: &Value,
    v: Value,
    path: &str,
    causes: &mut Vec<Cause>,
    unknown: &mut Vec<String>,
) -> Option<Value> {
    let nullable = schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if v.is_null() {
        if nullable {
            return Some(v);
        }
        // Non-nullable nulls are pruned (and then defaulted by the parent), as the API server does.
        return None;
    }
    if !type_ok(schema, &v) {
        let want = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string");
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {want}: {}",
                type_name(&v),
                show(&v)
            ),
        ));
        return Some(v);
    }
    check_scalar_constraints(schema, &v, path, causes);
    match v {
        Value::Object(mut map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                let Some(sub) = sub else {
                    let keep = preserves_unknown(schema)
                        || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                        || (props.is_none()
                            && schema.get("additionalProperties").and_then(Value::as_bool)
                                != Some(false)
                            && !schema.get("type").is_some_and(|t| t == "object"));
                    if !keep {
                        map.remove(&k);
                        unknown.push(child_path);
                    }
                    continue;
                };
                let child = map.remove(&k).unwrap_or(Value::Null);
                if let Some(c) = walk(sub, child, &child_path, causes, unknown) {
                    map.insert(k, c);
                }
            }
            apply_object_defaults(schema, &mut map);
            check_required(schema, &map, path, causes);
            Some(Value::Object(map))
        }
        Value::Array(items) => {
            let item_schema = schema.get("items");
            let out = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    match item_schema {
                        Some(s) => {
                            if item.is_null() && !s.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
                                causes.push(Cause::new("FieldValueTypeInvalid", p.clone(), format!("Invalid value: \"null\": {p} in body must be of type {}: \"null\"", s.get("type").and_then(Value::as_str).unwrap_or("object"))));
                                item
                            } else {
                                walk(s, item, &p, causes, unknown).unwrap_or(Value::Null)
                            }
                        }
                        None => item,
                    }
                })
                .collect();
            Some(Value::Array(out))
        }
        other => Some(other),
    }
}

/// Fills missing properties that have a `default`.
fn apply_object_defaults(schema: &Value, map: &mut Map<String, Value>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (k, sub) in props {
        if map.contains_key(k) {
            continue;
        }
        if let Some(d) = sub.get("default") {
            map.insert(k.clone(), d.clone());
        }
    }
}

fn check_required(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(r) {
            causes.push(Cause::new(
                "FieldValueRequired",
                join(path, r),
                "Required value",
            ));
        }
    }
}

fn check_scalar_constraints(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed
            .iter()
            .filter(|a| !a.is_null())
            .map(|a| a.to_string())
            .collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                list.join(", ")
            ),
        ));
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {v}: {path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            causes.push(Cause::new(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if !re.is_match(s) => causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {v}: {path} in body should match '{pattern}'"),
                )),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pattern, error = %e, "schema pattern does not compile; not enforced")
                }
            }
        }
    }
    if let Some(n) = v.as_f64() {
        let exclusive_min = schema
            .get("exclusiveMinimum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let exclusive_max = schema
            .get("exclusiveMaximum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (n < min || (exclusive_min && n == min))
        {
            let rel = if exclusive_min {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    schema["minimum"]
                ),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (n > max || (exclusive_max && n == max))
        {
            let rel = if exclusive_max {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    schema["maximum"]
                ),
            ));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ),
            ));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            causes.push(Cause::new(
                "FieldValueTooMany",
                path,
                format!("Too many: {}: must have at most {max} items", items.len()),
            ));
        }
    }
    if let Some(map) = v.as_object()
        && let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body should have at least {min} properties",
                map.len()
            ),
        ));
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without a length limit.
fn is_dns1123_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_segment(s)
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_segment)
}

/// A label value or the name part of a qualified key: 63 characters of `[A-Za-z0-9_.-]`,
/// starting and ending alphanumeric.
fn is_label_name(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    let b = s.as_bytes();
    s.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_qualified_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name, false),
        None => is_label_name(k, false),
    }
}

/// ObjectMeta validation every type gets: the name (a DNS-1123 label for namespaces, a
/// subdomain otherwise), label keys and values, and annotation keys.
pub fn validate_object_meta(obj: &Value, name_is_label: bool) -> Vec<Cause> {
    let rule = if name_is_label {
        NameRule::Label
    } else {
        NameRule::Subdomain
    };
    validate_object_meta_with(obj, rule)
}

/// What a type's names must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Namespaces.
    Label,
    /// Most types.
    Subdomain,
    /// RBAC roles and bindings (`system:discovery`): any path segment, as
    /// `path.IsValidPathSegmentName`.
    PathSegment,
}

impl NameRule {
    pub fn of(group: &str, plural: &str) -> Self {
        match (group, plural) {
            ("", "namespaces") => Self::Label,
            ("rbac.authorization.k8s.io", _) => Self::PathSegment,
            _ => Self::Subdomain,
        }
    }
}

fn is_path_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

pub fn validate_object_meta_with(obj: &Value, rule: NameRule) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name_ok = match rule {
        NameRule::Label => is_dns1123_label(name),
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::PathSegment => is_path_segment(name),
    };
    if !name_ok {
        let what = match rule {
            NameRule::Label => {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
            }
            NameRule::Subdomain => {
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            }
            NameRule::PathSegment => "may not be '.' or '..', and may not contain '/' or '%'",
        };
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {what}"),
        ));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_key(k) {
                causes.push(Cause::new("FieldValueInvalid", "metadata.labels", format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            match v.as_str() {
                Some(val) if is_label_name(val, true) => {}
                _ => causes.push(Cause::new("FieldValueInvalid", "metadata.labels", format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))),
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in annotations {
            if !is_qualified_key(k) {
                causes.push(Cause::new("FieldValueInvalid", "metadata.annotations", format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            if !v.is_string() {
                causes.push(Cause::new(
                    "FieldValueTypeInvalid",
                    format!("metadata.annotations.{k}"),
                    "Invalid value: annotation values must be strings",
                ));
            }
        }
    }
    causes
}

/// CEL `x-kubernetes-validations` through kube-cel; transition rules run only on update.
fn cel_causes(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    thread_local! {
        static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
    }
    let result = VALIDATOR.with(|v| v.validate(schema, obj, old));
    match result {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                let field = e.field_path.trim_start_matches('.').to_string();
                let at = if field.is_empty() {
                    Some(obj)
                } else {
                    field.split('.').try_fold(obj, |cur, k| cur.get(k))
                };
                let shown = at
                    .map(|v| format!("\"{}\"", type_name(v)))
                    .unwrap_or_else(|| "\"object\"".into());
                Cause::new(
                    e.reason.as_deref().unwrap_or("FieldValueInvalid"),
                    field,
                    format!("Invalid value: {shown}: {}", e.message),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["nodeName"],
                    "properties": {
                        "nodeName": {"type": "string", "minLength": 1,
                                     "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "nodeName is immutable"}]},
                        "action": {"type": "string", "enum": ["Verify", "Repair"], "default": "Repair"},
                        "count": {"type": "integer", "minimum": 0, "maximum": 5},
                        "image": {"type": "string", "nullable": true},
                        "flag": {"type": "boolean", "default": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                    "x-kubernetes-validations": [{"rule": "!has(self.count) || self.count != 4", "message": "four is unlucky"}]
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": spec})
    }

    #[test]
    fn defaults_prune_and_nulls() {
        let out = validate_custom_resource(
            &schema(),
            &obj(
                json!({"nodeName": "n", "flag": null, "image": null, "junk": 1, "labels": {"a": "b"}}),
            ),
            None,
            FieldValidation::Strict,
        );
        assert!(out.causes.is_empty(), "{:?}", out.causes);
        assert_eq!(out.object["spec"]["action"], "Repair");
        assert_eq!(out.object["spec"]["flag"], true);
        assert_eq!(out.object["spec"]["image"], Value::Null);
        assert!(out.object["spec"].get("junk").is_none());
        assert_eq!(out.unknown_fields, vec!["spec.junk"]);
        assert_eq!(out.object["spec"]["labels"]["a"], "b");
    }

    #[test]
    fn structural_errors_are_reported_per_field() {
        let out = validate_custom_resource(
            &schema(),
            &obj(json!({"action": "Nope", "count": "x", "nodeName": ""})),
            None,
            FieldValidation::Strict,
        );
        let fields: Vec<&str> = out.causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.action"), "{fields:?}");
        assert!(fields.contains(&"spec.count"));
        assert!(fields.contains(&"spec.nodeName"));
        let enum_cause = out
            .causes
            .iter()
            .find(|c| c.field == "spec.action")
            .unwrap();
        assert_eq!(
            enum_cause.message,
            "Unsupported value: \"Nope\": supported values: \"Verify\", \"Repair\""
        );
        let missing =
            validate_custom_resource(&schema(), &obj(json!({})), None, FieldValidation::Strict);
        assert_eq!(missing.causes[0].field, "spec.nodeName");
        assert_eq!(missing.causes[0].reason, "FieldValueRequired");
        let big = validate_custom_resource(
            &schema(),
            &obj(json!({"nodeName": "n", "count": 9})),
            None,
            FieldValidation::Strict,
        );
        assert!(
            big.causes[0].message.contains("less than or equal to 5"),
            "{:?}",
            big.causes
        );
    }

    #[test]
    fn object_meta_names_and_labels_follow_the_api_server_rules() {
        let ok = json!({"metadata": {"name": "web-1.example", "labels": {"app.kubernetes.io/name": "web", "empty": ""}, "annotations": {"a/b": "x"}}});
        assert!(validate_object_meta(&ok, false).is_empty());
        assert_eq!(
            validate_object_meta(&ok, true).len(),
            1,
            "dots are not allowed in labels-as-names"
        );
        let bad =
            json!({"metadata": {"name": "Bad_Name", "labels": {"-x": "y", "k": "has space"}}});
        let fields: Vec<String> = validate_object_meta(&bad, false)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            ["metadata.name", "metadata.labels", "metadata.labels"]
        );
        let long = json!({"metadata": {"name": "a".repeat(64)}});
        assert!(validate_object_meta(&long, false).is_empty());
        assert_eq!(validate_object_meta(&long, true).len(), 1);
    }

    #[test]
    fn cel_rules_and_transition_rules() {
        let four = validate_custom_resource(
            &schema(),
            &obj(json!({"nodeName": "n", "count": 4})),
            None,
            FieldValidation::Strict,
        );
        assert_eq!(four.causes.len(), 1, "{:?}", four.causes);
        assert!(four.causes[0].message.contains("four is unlucky"));
        let old = obj(json!({"nodeName": "n"}));
        let moved = validate_custom_resource(
            &schema(),
            &obj(json!({"nodeName": "m"})),
            Some(&old),
            FieldValidation::Strict,
        );
        assert_eq!(moved.causes.len(), 1, "{:?}", moved.causes);
        assert_eq!(moved.causes[0].field, "spec.nodeName");
        assert!(moved.causes[0].message.contains("nodeName is immutable"));
        let same = validate_custom_resource(
            &schema(),
            &obj(json!({"nodeName": "n"})),
            Some(&old),
            FieldValidation::Strict,
        );
        assert!(same.causes.is_empty());
    }
}
