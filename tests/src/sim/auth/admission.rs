//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding
//! (admissionregistration.k8s.io/v1), as kube-apiserver's validating policy plugin applies
//! them: a binding's policy runs on writes its `matchConstraints` (and the binding's
//! `matchResources`) select, when all `matchConditions` hold; `variables` are bound under
//! `variables.NAME`; each failed validation denies with its message and reason; an
//! expression that fails to run denies unless `failurePolicy: Ignore`. `paramKind`,
//! namespace and object selectors and `auditAnnotations` are not supported (a policy
//! using a selector is not applied to anything, so a test notices).

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use super::UserInfo;
use crate::sim::registry::ResourceDef;
use crate::sim::status::StatusError;

/// Who writes, and to which subresource: what the HTTP layer knows about a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user: UserInfo,
    /// `status` for writes to `/status`; empty otherwise.
    pub subresource: String,
}

/// One write being admitted.
pub struct Attributes<'a> {
    pub def: &'a ResourceDef,
    pub operation: &'a str,
    pub requester: &'a Requester,
    pub name: &'a str,
    pub namespace: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// Runs every bound policy that matches the write. `policies` and `bindings` are the stored
/// objects. The first denial is returned, worded as kube-apiserver words it.
pub fn validate(
    policies: &[Value],
    bindings: &[Value],
    a: &Attributes<'_>,
) -> Result<(), StatusError> {
    for binding in bindings {
        let Some(policy_name) = binding.pointer("/spec/policyName").and_then(Value::as_str) else {
            continue;
        };
        let Some(policy) = policies
            .iter()
            .find(|p| p.pointer("/metadata/name").and_then(Value::as_str) == Some(policy_name))
        else {
            continue;
        };
        let denies = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .is_some_and(|acts| acts.iter().any(|x| x == "Deny"));
        if !denies
            || !matches_resources(policy.pointer("/spec/matchConstraints"), a)
            || binding
                .pointer("/spec/matchResources")
                .is_some_and(|m| !matches_resources(Some(m), a))
        {
            continue;
        }
        if let Some(denial) = evaluate(policy, a) {
            return Err(deny(policy_name, name_of(binding), a, denial));
        }
    }
    Ok(())
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A failed validation: its message and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
    pub reason: String,
}

fn deny(policy: &str, binding: &str, a: &Attributes<'_>, d: Denial) -> StatusError {
    let why = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        d.message
    );
    let mut e = super::forbidden_on(&a.def.group, &a.def.plural, a.name, &why);
    // kube-apiserver's reasonToCode: Invalid (the default) is 422.
    let (reason, code) = match d.reason.as_str() {
        "Forbidden" => ("Forbidden", 403),
        "Unauthorized" => ("Unauthorized", 401),
        "RequestEntityTooLarge" => ("RequestEntityTooLarge", 413),
        _ => ("Invalid", 422),
    };
    e.reason = reason;
    e.code = code;
    if let Some(details) = e.details.as_mut() {
        details["causes"] = json!([{"message": why}]);
    }
    e
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn listed(list: &[&str], value: &str) -> bool {
    list.iter().any(|v| *v == "*" || *v == value)
}

/// Whether a rule's `resources` entry selects `resource[/subresource]`: `*` is every
/// resource but no subresource, `*/*` everything, `res/*` and `*/sub` as written.
fn resource_selected(entry: &str, resource: &str, subresource: &str) -> bool {
    let (r, s) = entry.split_once('/').unwrap_or((entry, ""));
    if subresource.is_empty() {
        s.is_empty() && (r == "*" || r == resource)
    } else {
        (r == "*" || r == resource) && (s == "*" || s == subresource)
    }
}

fn rule_matches(rule: &Value, a: &Attributes<'_>) -> bool {
    let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => !a.def.namespaced,
        "Namespaced" => a.def.namespaced,
        _ => true,
    };
    let names = strings(rule.get("resourceNames"));
    scope_ok
        && listed(&strings(rule.get("operations")), a.operation)
        && listed(&strings(rule.get("apiGroups")), &a.def.group)
        && listed(&strings(rule.get("apiVersions")), &a.def.version)
        && strings(rule.get("resources"))
            .iter()
            .any(|r| resource_selected(r, &a.def.plural, &a.requester.subresource))
        && (names.is_empty() || names.contains(&a.name))
}

/// `matchConstraints` / `matchResources`: one of `resourceRules` and none of
/// `excludeResourceRules`. Selectors other than empty ones are not supported.
fn matches_resources(m: Option<&Value>, a: &Attributes<'_>) -> bool {
    let Some(m) = m else { return false };
    let selector_set = |k: &str| {
        m.get(k)
            .and_then(Value::as_object)
            .is_some_and(|s| !s.is_empty())
    };
    if selector_set("namespaceSelector") || selector_set("objectSelector") {
        return false;
    }
    let included = m
        .get("resourceRules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, a)));
    let excluded = m
        .get("excludeResourceRules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, a)));
    included && !excluded
}

/// JSON to CEL, with whole numbers as `int` (as the API server's CEL sees integer fields).
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => n
                .as_u64()
                .map(Cel::UInt)
                .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => Cel::Map(Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// The `request` variable: AdmissionRequest as CEL sees it.
fn request_json(a: &Attributes<'_>) -> Value {
    let kind = json!({"group": a.def.group, "version": a.def.version, "kind": a.def.kind});
    let resource =
        json!({"group": a.def.group, "version": a.def.version, "resource": a.def.plural});
    json!({
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "subResource": a.requester.subresource,
        "requestSubResource": a.requester.subresource,
        "name": a.name, "namespace": a.namespace, "operation": a.operation,
        "userInfo": a.requester.user.to_json(),
        "dryRun": a.dry_run,
    })
}

enum Outcome {
    True,
    False,
    Error(String),
}

fn run(ctx: &Context<'_>, expression: &str) -> Outcome {
    match Program::compile(expression) {
        Err(e) => Outcome::Error(format!("compilation failed: {e}")),
        Ok(p) => match p.execute(ctx) {
            Ok(Cel::Bool(true)) => Outcome::True,
            Ok(Cel::Bool(false)) => Outcome::False,
            Ok(other) => Outcome::Error(format!("expected a bool, got {other:?}")),
            Err(e) => Outcome::Error(e.to_string()),
        },
    }
}

/// Evaluates one matched policy; `Some` denial when it refuses the write.
pub fn evaluate(policy: &Value, a: &Attributes<'_>) -> Option<Denial> {
    let spec = policy.get("spec")?;
    let fail_closed = spec.get("failurePolicy").and_then(Value::as_str) != Some("Ignore");
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", a.object.map(to_cel).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("oldObject", a.old_object.map(to_cel).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("request", to_cel(&request_json(a)));
    // Variables are evaluated in order; each may use the earlier ones. One that fails is left
    // unset, so that an expression using it fails (and failurePolicy decides).
    let mut variables: HashMap<String, Cel> = HashMap::new();
    for v in spec
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(expr)) = (
            v.get("name").and_then(Value::as_str),
            v.get("expression").and_then(Value::as_str),
        ) else {
            continue;
        };
        ctx.add_variable_from_value("variables", variables_value(&variables));
        if let Ok(value) = Program::compile(expr)
            .map_err(|e| e.to_string())
            .and_then(|p| p.execute(&ctx).map_err(|e| e.to_string()))
        {
            variables.insert(name.to_string(), value);
        }
    }
    ctx.add_variable_from_value("variables", variables_value(&variables));
    let error = |what: &str, expr: &str, why: String| {
        fail_closed.then(|| Denial {
            message: format!("{what} '{expr}' resulted in error: {why}"),
            reason: "Invalid".into(),
        })
    };
    for c in spec
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expr = c.get("expression").and_then(Value::as_str).unwrap_or("");
        match run(&ctx, expr) {
            Outcome::True => {}
            Outcome::False => return None,
            Outcome::Error(why) => return error("matchCondition", expr, why),
        }
    }
    for v in spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expr = v.get("expression").and_then(Value::as_str).unwrap_or("");
        match run(&ctx, expr) {
            Outcome::True => {}
            Outcome::Error(why) => {
                if let Some(d) = error("expression", expr.trim(), why) {
                    return Some(d);
                }
            }
            Outcome::False => {
                let from_expression = v
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .and_then(|me| Program::compile(me).ok())
                    .and_then(|p| match p.execute(&ctx) {
                        Ok(Cel::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    });
                let message = from_expression
                    .or_else(|| {
                        v.get("message")
                            .and_then(Value::as_str)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| format!("failed expression: {}", expr.trim()));
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Invalid")
                    .to_string();
                return Some(Denial { message, reason });
            }
        }
    }
    None
}

fn variables_value(vars: &HashMap<String, Cel>) -> Cel {
    let map: HashMap<Key, Cel> = vars
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), v.clone()))
        .collect();
    Cel::Map(Map { map: Arc::new(map) })
}
