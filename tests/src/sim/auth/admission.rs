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
        // Every field present, as CEL sees an AdmissionRequest's UserInfo (empty, not absent).
        "userInfo": {
            "username": a.requester.user.username,
            "uid": a.requester.user.uid,
            "groups": a.requester.user.groups,
            "extra": a.requester.user.extra,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::registry::builtin_defs;
    use std::collections::BTreeMap;

    fn leases() -> ResourceDef {
        builtin_defs()
            .into_iter()
            .find(|d| d.plural == "leases")
            .unwrap()
    }

    fn requester(node: Option<&str>, subresource: &str) -> Requester {
        let mut extra = BTreeMap::new();
        if let Some(n) = node {
            extra.insert(
                "authentication.kubernetes.io/node-name".to_string(),
                vec![n.to_string()],
            );
        }
        Requester {
            user: UserInfo {
                username: "system:serviceaccount:ns:agent".into(),
                groups: vec!["system:authenticated".into()],
                extra,
                ..UserInfo::default()
            },
            subresource: subresource.into(),
        }
    }

    fn policy(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    fn binding() -> Value {
        json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}})
    }

    fn lease_rules(operations: Value, resources: Value) -> Value {
        json!({"resourceRules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
            "operations": operations, "resources": resources}]})
    }

    fn check(
        p: &Value,
        b: &Value,
        r: &Requester,
        op: &str,
        obj: &Value,
    ) -> Result<(), StatusError> {
        let def = leases();
        let a = Attributes {
            def: &def,
            operation: op,
            requester: r,
            name: obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            namespace: "ns",
            object: Some(obj),
            old_object: (op == "UPDATE").then_some(obj),
            dry_run: false,
        };
        validate(std::slice::from_ref(p), std::slice::from_ref(b), &a)
    }

    fn lease(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"leaseDurationSeconds": 15}})
    }

    #[test]
    fn variables_extra_and_message_expressions_decide_and_word_the_denial() {
        let p = policy(json!({
            "matchConstraints": lease_rules(json!(["CREATE", "UPDATE"]), json!(["leases"])),
            "variables": [{"name": "node", "expression":
                "'authentication.kubernetes.io/node-name' in request.userInfo.extra ? request.userInfo.extra['authentication.kubernetes.io/node-name'][0] : ''"}],
            "validations": [{"expression": "object.metadata.name == 'agent.' + variables.node",
                "messageExpression": "'only agent.' + variables.node", "reason": "Forbidden"}],
        }));
        let r = requester(Some("node-a"), "");
        assert!(check(&p, &binding(), &r, "CREATE", &lease("agent.node-a")).is_ok());
        let e = check(&p, &binding(), &r, "UPDATE", &lease("agent.node-b")).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "leases.coordination.k8s.io \"agent.node-b\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: only agent.node-a"
        );
        // Without the extra the variable is '' and the name cannot match.
        assert!(
            check(
                &p,
                &binding(),
                &requester(None, ""),
                "CREATE",
                &lease("agent.")
            )
            .is_ok()
        );
        assert!(
            check(
                &p,
                &binding(),
                &requester(None, ""),
                "CREATE",
                &lease("agent.x")
            )
            .is_err()
        );
    }

    #[test]
    fn the_default_reason_is_invalid_422_and_the_default_message_names_the_expression() {
        let p = policy(json!({
            "matchConstraints": lease_rules(json!(["*"]), json!(["*"])),
            "validations": [{"expression": "object.spec.leaseDurationSeconds > 60"}],
        }));
        let e = check(&p, &binding(), &requester(None, ""), "CREATE", &lease("l")).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(
            e.message.ends_with(
                "denied request: failed expression: object.spec.leaseDurationSeconds > 60"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn match_constraints_select_operations_and_subresources() {
        let deny = |constraints: Value| {
            policy(json!({"matchConstraints": constraints,
                          "validations": [{"expression": "false", "message": "no"}]}))
        };
        let r = requester(None, "");
        let status = requester(None, "status");
        // Operation not listed: not matched.
        let p = deny(lease_rules(json!(["UPDATE"]), json!(["leases"])));
        assert!(check(&p, &binding(), &r, "CREATE", &lease("l")).is_ok());
        assert!(check(&p, &binding(), &r, "UPDATE", &lease("l")).is_err());
        // "leases" is not "leases/status"; "*" is no subresource; "*/*" and "leases/*" are.
        assert!(check(&p, &binding(), &status, "UPDATE", &lease("l")).is_ok());
        let p = deny(lease_rules(json!(["*"]), json!(["*"])));
        assert!(check(&p, &binding(), &status, "UPDATE", &lease("l")).is_ok());
        for all in ["*/*", "leases/*", "*/status", "leases/status"] {
            let p = deny(lease_rules(json!(["*"]), json!([all])));
            assert!(
                check(&p, &binding(), &status, "UPDATE", &lease("l")).is_err(),
                "{all}"
            );
        }
        // Another group, or an excluded resource: not matched.
        let p = deny(
            json!({"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["*"]}]}),
        );
        assert!(check(&p, &binding(), &r, "CREATE", &lease("l")).is_ok());
        let mut c = lease_rules(json!(["*"]), json!(["*"]));
        c["excludeResourceRules"] = c["resourceRules"].clone();
        assert!(check(&deny(c), &binding(), &r, "CREATE", &lease("l")).is_ok());
        // A binding that only warns or audits does not deny; a binding of another policy neither.
        let p = deny(lease_rules(json!(["*"]), json!(["*"])));
        let warn = json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Warn", "Audit"]}});
        assert!(check(&p, &warn, &r, "CREATE", &lease("l")).is_ok());
        let other = json!({"metadata": {"name": "b"}, "spec": {"policyName": "q", "validationActions": ["Deny"]}});
        assert!(check(&p, &other, &r, "CREATE", &lease("l")).is_ok());
    }

    #[test]
    fn match_conditions_skip_and_failure_policy_decides_errors() {
        let r = requester(Some("node-a"), "");
        let p = policy(json!({
            "matchConstraints": lease_rules(json!(["*"]), json!(["*"])),
            "matchConditions": [{"name": "agents", "expression": "request.userInfo.username.startsWith('system:serviceaccount:')"}],
            "validations": [{"expression": "false", "message": "agents may not"}],
        }));
        assert!(check(&p, &binding(), &r, "CREATE", &lease("l")).is_err());
        let mut admin = r.clone();
        admin.user.username = "kubernetes-admin".into();
        assert!(check(&p, &binding(), &admin, "CREATE", &lease("l")).is_ok());
        // An expression that fails to evaluate denies (Fail, the default) or is ignored.
        let broken = |failure: &str| {
            policy(json!({
                "failurePolicy": failure,
                "matchConstraints": lease_rules(json!(["*"]), json!(["*"])),
                "validations": [{"expression": "object.spec.missing.field == 1"}],
            }))
        };
        let e = check(&broken("Fail"), &binding(), &r, "CREATE", &lease("l")).unwrap_err();
        assert!(
            e.message
                .contains("expression 'object.spec.missing.field == 1' resulted in error"),
            "{}",
            e.message
        );
        assert!(check(&broken("Ignore"), &binding(), &r, "CREATE", &lease("l")).is_ok());
    }
}
