//! The request log: every request the server answered, with the verb kube-apiserver's audit log
//! and `apiserver_request_total` would give it (`list` and `watch` are different verbs), so that
//! tests can prove what a client asked for and how much it cost.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// get, list, watch, create, update, patch, delete, deletecollection; for paths that are
    /// not resources (discovery, openapi, healthz): the lowercase HTTP method.
    pub verb: String,
    /// API group ("" for core) of a resource request.
    pub group: String,
    /// Plural resource name; empty for non-resource paths.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The request path, for non-resource requests and diagnostics.
    pub path: String,
    /// The client's `User-Agent` header, which tells the operator's requests from the agents'.
    pub user_agent: Option<String>,
    pub status: u16,
    /// Response body size; `None` for streamed bodies (watches).
    pub response_bytes: Option<u64>,
}

impl RequestRecord {
    /// `verb resource[/subresource]`, as in `list nodes` or `patch snapshotrepairs/status`.
    pub fn key(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{} {}/{sub}", self.verb, self.resource),
            None => format!("{} {}", self.verb, self.resource),
        }
    }

    /// Whether the request came from a client whose User-Agent starts with `prefix`.
    pub fn from_agent(&self, prefix: &str) -> bool {
        self.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with(prefix))
    }
}

/// The verb kube-apiserver's request metrics and audit log give a request.
pub fn verb(method: &http::Method, has_name: bool, watch: bool) -> String {
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch".into(),
        ("GET", true) => "get".into(),
        ("GET", false) => "list".into(),
        ("POST", _) => "create".into(),
        ("PUT", _) => "update".into(),
        ("PATCH", _) => "patch".into(),
        ("DELETE", true) => "delete".into(),
        ("DELETE", false) => "deletecollection".into(),
        (other, _) => other.to_ascii_lowercase(),
    }
}

/// Every answered request since the log was last cleared, in order of completion (a watch is
/// recorded when its stream starts).
#[derive(Default)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    pub fn record(&self, r: RequestRecord) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Counts by [`RequestRecord::key`], e.g. `{"list nodes": 1, "watch nodes": 1}`.
pub fn count_by_key<'a>(
    records: impl IntoIterator<Item = &'a RequestRecord>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records {
        *out.entry(r.key()).or_insert(0) += 1;
    }
    out
}

/// `apiserver_request_total` in the Prometheus text format, as kube-apiserver serves it on
/// `/metrics` (verb in upper case, `LIST` and `WATCH` apart; `APPLY` for server-side apply is
/// not told apart from `PATCH` here). Watches count when they start.
pub fn request_metrics(records: &[RequestRecord]) -> String {
    let mut counts: BTreeMap<(String, String, String, String, u16), usize> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.resource.is_empty()) {
        let key = (
            r.verb.to_ascii_uppercase(),
            r.group.clone(),
            r.resource.clone(),
            r.subresource.clone().unwrap_or_default(),
            r.status,
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    let mut out = String::from(
        "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource, subresource and HTTP response code.\n# TYPE apiserver_request_total counter\n",
    );
    for ((verb, group, resource, subresource, code), n) in counts {
        out.push_str(&format!(
            "apiserver_request_total{{code=\"{code}\",group=\"{group}\",resource=\"{resource}\",subresource=\"{subresource}\",verb=\"{verb}\"}} {n}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn verbs_follow_the_api_server() {
        assert_eq!(verb(&Method::GET, false, false), "list");
        assert_eq!(verb(&Method::GET, false, true), "watch");
        assert_eq!(verb(&Method::GET, true, false), "get");
        assert_eq!(verb(&Method::PATCH, true, false), "patch");
        assert_eq!(verb(&Method::DELETE, false, false), "deletecollection");
        assert_eq!(verb(&Method::DELETE, true, false), "delete");
        assert_eq!(verb(&Method::POST, false, false), "create");
        assert_eq!(verb(&Method::PUT, true, false), "update");
    }

    #[test]
    fn counts_are_keyed_by_verb_and_resource() {
        let r = |verb: &str, resource: &str, sub: Option<&str>| RequestRecord {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: sub.map(str::to_string),
            namespace: None,
            name: None,
            path: String::new(),
            user_agent: Some("snapmend-operator/0.1.0".into()),
            status: 200,
            response_bytes: None,
        };
        let log = [
            r("list", "nodes", None),
            r("watch", "nodes", None),
            r("list", "nodes", None),
            r("patch", "snapshotrepairs", Some("status")),
        ];
        let counts = count_by_key(&log);
        assert_eq!(counts["list nodes"], 2);
        assert_eq!(counts["watch nodes"], 1);
        assert_eq!(counts["patch snapshotrepairs/status"], 1);
        assert!(log[0].from_agent("snapmend-operator"));
        assert!(!log[0].from_agent("kubectl"));
        let text = request_metrics(&log);
        assert!(text.contains(
            "apiserver_request_total{code=\"200\",group=\"\",resource=\"nodes\",subresource=\"\",verb=\"LIST\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("subresource=\"status\",verb=\"PATCH\"} 1"),
            "{text}"
        );
    }
}
