//! Label and field selectors: parsing the query-string syntax and matching objects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::status::StatusError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

/// Splits on commas that are not inside parentheses (`a in (x,y),b`).
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(key: &str, rest: &str, raw: &str) -> Result<Vec<String>, StatusError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            bad_label(
                raw,
                &format!("expected a parenthesised set of values for {key}"),
            )
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn bad_label(raw: &str, why: &str) -> StatusError {
    StatusError::bad_request(format!(
        "unable to parse requirement: {why} (in label selector {raw:?})"
    ))
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    pub fn parse(raw: &str) -> Result<Self, StatusError> {
        let mut reqs = Vec::new();
        for term in split_top_level(raw) {
            let req = if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                LabelRequirement::NotIn(k.trim().to_string(), parse_set(k, rest, raw)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelRequirement::In(k.trim().to_string(), parse_set(k, rest, raw)?)
            } else if let Some((k, v)) = term.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    bad_label(
                        raw,
                        "for 'gt', 'lt' operators, the value must be an integer",
                    )
                })?;
                LabelRequirement::GreaterThan(k.trim().to_string(), n)
            } else if let Some((k, v)) = term.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    bad_label(
                        raw,
                        "for 'gt', 'lt' operators, the value must be an integer",
                    )
                })?;
                LabelRequirement::LessThan(k.trim().to_string(), n)
            } else {
                LabelRequirement::Exists(term.trim().to_string())
            };
            let key = match &req {
                LabelRequirement::Equals(k, _)
                | LabelRequirement::NotEquals(k, _)
                | LabelRequirement::In(k, _)
                | LabelRequirement::NotIn(k, _)
                | LabelRequirement::Exists(k)
                | LabelRequirement::DoesNotExist(k)
                | LabelRequirement::GreaterThan(k, _)
                | LabelRequirement::LessThan(k, _) => k,
            };
            if !valid_label_key(key) {
                return Err(bad_label(raw, &format!("invalid label key {key:?}")));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
            LabelRequirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// The labels of an object as a map (missing or malformed labels are empty).
pub fn object_labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// Splits on unescaped `sep`, keeping escapes for the caller to undo.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    pub fn parse(raw: &str) -> Result<Self, StatusError> {
        let mut reqs = Vec::new();
        for term in split_unescaped(raw, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(StatusError::bad_request(format!(
                    "invalid selector: '{raw}'; can't understand '{term}'"
                )));
            };
            reqs.push(FieldRequirement {
                field: f_trim(field),
                value: unescape(value.trim()),
                negated,
            });
        }
        Ok(Self(reqs))
    }

    /// Rejects fields that are not in `supported`, as the API server does (400).
    pub fn check_supported(&self, supported: &[String], kind: &str) -> Result<(), StatusError> {
        for r in &self.0 {
            if !supported.iter().any(|s| s == &r.field) {
                return Err(StatusError::bad_request(format!(
                    "field label not supported: {} (for {kind})",
                    r.field
                )));
            }
        }
        Ok(())
    }

    /// The value of `field.path` in a stored object, as the field-selector string it compares with.
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|r| (value_of(&r.field) == r.value) != r.negated)
    }

    /// The exact `metadata.name` the selector pins, if any (kube-rs watches single objects this way).
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negated)
            .map(|r| r.value.as_str())
    }
}

fn f_trim(s: &str) -> String {
    s.trim().to_string()
}

/// A field-selector value from a dotted path: strings as-is, scalars printed, missing as "".
pub fn field_string(obj: &Value, dotted: &str) -> String {
    let mut cur = obj;
    for part in dotted.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_supports_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("app notin (web, db)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier in (front,back),!missing", true),
            ("app=web,tier=back", false),
            ("n>4", true),
            ("n<4", false),
            ("", true),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel).unwrap();
            assert_eq!(parsed.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn label_selector_rejects_bad_sets_and_keys() {
        assert_eq!(LabelSelector::parse("a in x").unwrap_err().code, 400);
        assert_eq!(LabelSelector::parse("a b=c").unwrap_err().code, 400);
    }

    #[test]
    fn field_selector_handles_negation_escapes_and_missing_fields() {
        let obj = json!({"metadata": {"name": "a,b"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let value_of = |f: &str| field_string(&obj, f);
        let sel = FieldSelector::parse(r"metadata.name=a\,b,spec.nodeName==n1").unwrap();
        assert!(sel.matches(value_of));
        let sel = FieldSelector::parse("status.phase!=Failed,status.phase!=Succeeded").unwrap();
        assert!(sel.matches(value_of));
        let sel = FieldSelector::parse("involvedObject.namespace=").unwrap();
        assert!(sel.matches(value_of));
        let sel = FieldSelector::parse("spec.nodeName=n2").unwrap();
        assert!(!sel.matches(value_of));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert_eq!(sel.pinned_name(), None);
        assert_eq!(
            FieldSelector::parse("metadata.name=x")
                .unwrap()
                .pinned_name(),
            Some("x")
        );
    }

    #[test]
    fn unsupported_field_is_a_bad_request() {
        let sel = FieldSelector::parse("spec.foo=1").unwrap();
        let err = sel
            .check_supported(&["metadata.name".into()], "pods")
            .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("field label not supported: spec.foo"));
    }
}
