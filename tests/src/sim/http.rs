//! The HTTP front: routing of API paths, content negotiation, and watch streaming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::admission::Requester;
use super::auth::{self, Action, ResourceAttributes, Tokens, UserInfo};
use super::cluster::{Change, Cluster, ListOptions, WriteOptions, Written};
use super::convert::to_served;
use super::discovery;
use super::openapi;
use super::patch::PatchKind;
use super::registry::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::StatusError;
use super::table::{IncludeObject, partial_metadata, table};
use super::validation::FieldValidation;

/// Shared state of the HTTP handlers.
pub struct App {
    pub cluster: Arc<Cluster>,
    /// Cancelled when the current serving session ends (pause, stop); replaced on resume.
    pub shutdown: Mutex<CancellationToken>,
    /// Cancelled (and replaced) to end every open watch, e.g. to test watch recovery.
    pub watch_epoch: Mutex<CancellationToken>,
    /// Stops the background controllers (the namespace controller) for good.
    pub controllers: CancellationToken,
    pub bookmark_interval: Duration,
    pub server_address: String,
    /// Every answered request, for tests that count LISTs, WATCHes and bytes.
    pub requests: super::audit::RequestLog,
    /// The admin token and the tokens the TokenRequest API issued.
    pub tokens: Arc<Tokens>,
    /// `--auth`: requests need a token, RBAC and ValidatingAdmissionPolicies apply.
    pub auth: bool,
    /// Under `--auth`: the certificate the server serves HTTPS with.
    pub tls: Option<Arc<super::tls::ServingCert>>,
}

impl App {
    pub fn end_all_watches(&self) {
        let mut epoch = self.watch_epoch.lock().unwrap_or_else(|p| p.into_inner());
        epoch.cancel();
        *epoch = CancellationToken::new();
    }

    pub fn current_shutdown(&self) -> CancellationToken {
        self.shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn current_epoch(&self) -> CancellationToken {
        self.watch_epoch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rendering {
    Json,
    Table,
    Metadata,
}

impl Rendering {
    fn from_accept(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        for part in accept.split(',') {
            let p = part.replace(' ', "");
            if p.contains("as=Table") {
                if p.contains("v=v1;") || p.ends_with("v=v1") || p.contains("v=v1,") {
                    return Self::Table;
                }
                continue;
            }
            if p.contains("as=PartialObjectMetadata") {
                return Self::Metadata;
            }
            if p.starts_with("application/json")
                || p.starts_with("*/*")
                || p.starts_with("application/yaml")
            {
                return Self::Json;
            }
        }
        Self::Json
    }

    fn content_type(self, list: bool) -> &'static str {
        match (self, list) {
            (Self::Json, _) => "application/json",
            (Self::Table, _) => "application/json;as=Table;v=v1;g=meta.k8s.io",
            (Self::Metadata, true) => {
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            }
            (Self::Metadata, false) => {
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn json_response(code: StatusCode, body: &Value, content_type: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (code, bytes).into_response();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

fn error_response(e: &StatusError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status(), "application/json")
}

/// A parsed resource path.
struct Target {
    def: ResourceDef,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn resolve(app: &App, segs: &[&str]) -> Result<Option<Target>, StatusError> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let reg = app.cluster.registry();
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && reg
            .find(group, version, rest[2])
            .is_some_and(|d| d.namespaced);
    let (namespace, plural, name, sub) = if namespaced_form {
        (
            Some(rest[1]),
            rest[2],
            rest.get(3).copied(),
            rest.get(4).copied(),
        )
    } else {
        (None, rest[0], rest.get(1).copied(), rest.get(2).copied())
    };
    let extra = if namespaced_form {
        rest.len() > 5
    } else {
        rest.len() > 3
    };
    let def = reg
        .find(group, version, plural)
        .cloned()
        .ok_or_else(|| StatusError::path_not_found(&format!("get {plural}.{group}")))?;
    if extra {
        return Err(StatusError::path_not_found(&segs.join("/")));
    }
    Ok(Some(Target {
        def,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    }))
}

/// Entry point for every request.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query());
    let resp = match authenticate(&app, &headers).and_then(|user| {
        if let Some(user) = &user {
            authorize(
                &app.cluster,
                user,
                &request_action(&method, &path, &query),
                &path,
            )?;
        }
        Ok(user)
    }) {
        Ok(user) => route(&app, &method, &path, &query, &headers, &body, user.as_ref()).await,
        Err(e) => Err(e),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let record = request_record(&app, &method, &path, &query, &headers, &resp);
    tracing::debug!(%method, path = %path, query = uri.query().unwrap_or(""), status = resp.status().as_u16(), verb = %record.verb, user_agent = record.user_agent.as_deref().unwrap_or(""), "request");
    app.requests.record(record);
    resp
}

/// `--auth`: who sends the request (401 without a valid bearer token); `None` without `--auth`.
fn authenticate(app: &App, headers: &HeaderMap) -> Result<Option<UserInfo>, StatusError> {
    if !app.auth {
        return Ok(None);
    }
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::bearer_token(header).ok_or_else(auth::unauthorized)?;
    app.tokens
        .authenticate(&app.cluster, token)
        .map(Some)
        .ok_or_else(auth::unauthorized)
}

/// The RBAC objects in the store.
fn rbac_policy(cluster: &Cluster) -> auth::Policy {
    fn parse<T: serde::de::DeserializeOwned>(cluster: &Cluster, plural: &str) -> Vec<T> {
        cluster
            .all_objects("rbac.authorization.k8s.io", plural)
            .into_iter()
            .filter_map(|o| serde_json::from_value(o).ok())
            .collect()
    }
    auth::Policy {
        cluster_roles: parse(cluster, "clusterroles"),
        cluster_role_bindings: parse(cluster, "clusterrolebindings"),
        roles: parse(cluster, "roles"),
        role_bindings: parse(cluster, "rolebindings"),
    }
}

fn allowed(cluster: &Cluster, user: &UserInfo, action: &Action) -> bool {
    user.groups.iter().any(|g| g == auth::rbac::MASTERS_GROUP)
        || rbac_policy(cluster).allows(user, action)
}

/// RBAC: 403 unless a rule bound to the user allows the action.
fn authorize(
    cluster: &Cluster,
    user: &UserInfo,
    action: &Action,
    path: &str,
) -> Result<(), StatusError> {
    if allowed(cluster, user, action) {
        Ok(())
    } else {
        Err(auth::forbidden(user, action, path))
    }
}

/// What a request asks to do, read from its path the way kube-apiserver's RequestInfo does:
/// `/api/v1/...` and `/apis/GROUP/VERSION/...` with a resource are resource requests (a
/// namespace's own path is in that namespace; a list or watch selecting `metadata.name`
/// names its object); everything else is a non-resource path.
fn request_action(method: &Method, path: &str, q: &HashMap<String, String>) -> Action {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => {
            return Action::NonResource {
                path: path.to_string(),
                verb: method.as_str().to_ascii_lowercase(),
            };
        }
    };
    let mut namespace = "";
    let mut parts = rest;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = parts[1];
        if parts.len() > 2 {
            parts = &parts[2..];
        }
    }
    let mut name = parts.get(1).copied().unwrap_or("").to_string();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = super::audit::verb(method, !name.is_empty(), watch);
    if (verb == "list" || verb == "watch")
        && let Some(selected) = q
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
    {
        name = selected.to_string();
    }
    Action::Resource(ResourceAttributes {
        verb,
        group: group.to_string(),
        resource: parts[0].to_string(),
        subresource: parts.get(2).copied().unwrap_or("").to_string(),
        namespace: namespace.to_string(),
        name,
    })
}

/// `POST .../selfsubjectaccessreviews` (`kubectl auth can-i`): the review, answered.
fn review_access(app: &App, user: Option<&UserInfo>, body: &Value) -> Response {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let action = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Action::Resource(ResourceAttributes {
            verb: text(r, "verb"),
            group: text(r, "group"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
        })
    } else {
        let n = spec
            .get("nonResourceAttributes")
            .cloned()
            .unwrap_or_else(|| json!({}));
        Action::NonResource {
            path: text(&n, "path"),
            verb: text(&n, "verb"),
        }
    };
    // Without --auth every request is allowed, so every review is too.
    let allowed = user.is_none_or(|u| allowed(&app.cluster, u, &action));
    let mut status = json!({"allowed": allowed});
    if allowed && user.is_some() {
        status["reason"] = json!("");
    }
    let mut out = body.clone();
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!("SelfSubjectAccessReview");
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = Value::Null;
    out["status"] = status;
    json_response(StatusCode::CREATED, &out, "application/json")
}

/// What the request log keeps about an answered request.
fn request_record(
    app: &App,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    resp: &Response,
) -> super::audit::RequestRecord {
    use axum::body::HttpBody;
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let target = resolve(app, &segs).ok().flatten();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match &target {
        Some(t) => super::audit::verb(method, t.name.is_some(), watch),
        None => method.as_str().to_ascii_lowercase(),
    };
    super::audit::RequestRecord {
        verb,
        group: target
            .as_ref()
            .map(|t| t.def.group.clone())
            .unwrap_or_default(),
        resource: target
            .as_ref()
            .map(|t| t.def.plural.clone())
            .unwrap_or_default(),
        subresource: target.as_ref().and_then(|t| t.subresource.clone()),
        namespace: target.as_ref().and_then(|t| t.namespace.clone()),
        name: target.as_ref().and_then(|t| t.name.clone()),
        path: path.to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: resp.status().as_u16(),
        response_bytes: resp.body().size_hint().exact(),
    }
}

async fn route(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    user: Option<&UserInfo>,
) -> Result<Response, StatusError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = app.cluster.registry();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, "application/json"));
    match segs.as_slice() {
        ["version"] => return ok(discovery::version()),
        ["healthz"] | ["readyz"] | ["livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["metrics"] => {
            let text = super::audit::request_metrics(&app.requests.snapshot());
            let mut resp = (StatusCode::OK, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(resp);
        }
        ["api"] => return ok(discovery::core_versions(&app.server_address)),
        ["apis"] => return ok(discovery::group_list(&reg)),
        ["api", v] => {
            return discovery::resource_list(&reg, "", v)
                .map(|l| json_response(StatusCode::OK, &l, "application/json"))
                .ok_or_else(|| StatusError::path_not_found(path));
        }
        ["apis", g] => {
            return discovery::group(&reg, g)
                .map(|l| json_response(StatusCode::OK, &l, "application/json"))
                .ok_or_else(|| StatusError::path_not_found(path));
        }
        ["apis", g, v] => {
            return discovery::resource_list(&reg, g, v)
                .map(|l| json_response(StatusCode::OK, &l, "application/json"))
                .ok_or_else(|| StatusError::path_not_found(path));
        }
        ["openapi", "v2"] => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("protobuf") {
                let mut resp = (StatusCode::OK, openapi::v2_protobuf()).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(openapi::V2_PROTOBUF),
                );
                return Ok(resp);
            }
            return ok(openapi::v2(&reg));
        }
        ["openapi", "v3"] => return ok(openapi::v3_root(&reg)),
        ["openapi", "v3", rest @ ..] => {
            return openapi::v3_group_version(&reg, &rest.join("/"))
                .map(|d| json_response(StatusCode::OK, &d, "application/json"))
                .ok_or_else(|| StatusError::path_not_found(path));
        }
        _ => {}
    }
    let Some(t) = resolve(app, &segs)? else {
        return Err(StatusError::path_not_found(path));
    };
    resource_request(app, method, t, q, headers, body, user).await
}

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, StatusError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").cloned(),
        // Watches interpret resourceVersion themselves; "0" means any version.
        resource_version: q
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
            .filter(|r| *r > 0 && !q.get("watch").is_some_and(|w| w == "true" || w == "1")),
        exact: q.get("resourceVersionMatch").is_some_and(|m| m == "Exact"),
    })
}

fn write_options(
    q: &HashMap<String, String>,
    user: Option<&UserInfo>,
    subresource: Option<&str>,
) -> Result<WriteOptions, StatusError> {
    let fv = q.get("fieldValidation").map(String::as_str).unwrap_or("");
    Ok(WriteOptions {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: q.get("fieldManager").filter(|m| !m.is_empty()).cloned(),
        field_validation: FieldValidation::parse(fv).ok_or_else(|| {
            StatusError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict (got {fv:?})"
            ))
        })?,
        force: q.get("force").is_some_and(|f| f == "true"),
        admission: user.map(|u| Requester {
            user: u.clone(),
            subresource: subresource.unwrap_or("").to_string(),
        }),
    })
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, StatusError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("protobuf") {
        return super::proto::decode(body).map_err(|why| StatusError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: why,
            details: None,
        });
    }
    if ct.contains("cbor") {
        return Err(StatusError::unsupported_media_type(ct));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| {
            StatusError::bad_request(format!("the request body could not be decoded: {e}"))
        })
}

fn render_one(t: &Target, rendering: Rendering, obj: &Value, q: &HashMap<String, String>) -> Value {
    match rendering {
        Rendering::Json => obj.clone(),
        Rendering::Metadata => partial_metadata(obj),
        Rendering::Table => {
            let include =
                IncludeObject::parse(q.get("includeObject").map(String::as_str).unwrap_or(""));
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            table(&t.def, std::slice::from_ref(obj), include, true, rv, None)
        }
    }
}

fn written_response(
    t: &Target,
    w: Written,
    rendering: Rendering,
    q: &HashMap<String, String>,
) -> Response {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = json_response(
        code,
        &render_one(t, rendering, &w.object, q),
        rendering.content_type(false),
    );
    for warning in w.warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

async fn resource_request(
    app: &Arc<App>,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    user: Option<&UserInfo>,
) -> Result<Response, StatusError> {
    let cluster = &app.cluster;
    let ns = t.namespace.as_deref();
    let rendering = Rendering::from_accept(headers);
    let status_only = match t.subresource.as_deref() {
        None => false,
        Some("status") if t.def.status_subresource => true,
        Some("eviction")
            if t.def.plural == "pods" && t.def.group.is_empty() && *method == Method::POST =>
        {
            false
        }
        Some("token")
            if t.def.plural == "serviceaccounts"
                && t.def.group.is_empty()
                && *method == Method::POST =>
        {
            false
        }
        Some(other) => {
            return Err(StatusError::path_not_found(&format!(
                "{}/{other}",
                t.def.plural
            )));
        }
    };
    if t.def.is_review() {
        if *method != Method::POST || t.name.is_some() {
            return Err(StatusError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
        return Ok(review_access(app, user, &decode_body(headers, body)?));
    }
    match (method.clone(), t.name.clone()) {
        (Method::POST, Some(name)) if t.subresource.as_deref() == Some("token") => {
            let body = decode_body(headers, body)?;
            let answer =
                app.tokens
                    .request_token(cluster, ns.unwrap_or("default"), &name, &body)?;
            Ok(json_response(
                StatusCode::CREATED,
                &answer,
                "application/json",
            ))
        }
        (Method::GET, None) => {
            let opts = list_options(q)?;
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(app, &t, ns, q, opts, rendering);
            }
            let list = cluster.list(&t.def, ns, &opts)?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let cont = list
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .map(str::to_string);
            let out = match rendering {
                Rendering::Json => list,
                Rendering::Table => {
                    let include = IncludeObject::parse(
                        q.get("includeObject").map(String::as_str).unwrap_or(""),
                    );
                    table(&t.def, &items, include, true, &rv, cont.as_deref())
                }
                Rendering::Metadata => {
                    let mut meta = list.get("metadata").cloned().unwrap_or_else(|| json!({}));
                    meta["resourceVersion"] = json!(rv);
                    json!({
                        "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                        "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
                    })
                }
            };
            Ok(json_response(
                StatusCode::OK,
                &out,
                rendering.content_type(true),
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = cluster.get(&t.def, ns, &name)?;
            Ok(json_response(
                StatusCode::OK,
                &render_one(&t, rendering, &obj, q),
                rendering.content_type(false),
            ))
        }
        (Method::POST, None) => {
            let body = decode_body(headers, body)?;
            let w = cluster.create(
                &t.def,
                ns,
                body,
                &write_options(q, user, t.subresource.as_deref())?,
            )?;
            Ok(written_response(&t, w, rendering, q))
        }
        (Method::POST, Some(name)) if t.subresource.as_deref() == Some("eviction") => {
            let body = decode_body(headers, body)?;
            let status = cluster.evict(&t.def, ns, &name, &body)?;
            Ok(json_response(
                StatusCode::CREATED,
                &status,
                "application/json",
            ))
        }
        (Method::PUT, Some(name)) => {
            let body = decode_body(headers, body)?;
            let w = cluster.update(
                &t.def,
                ns,
                &name,
                body,
                status_only,
                &write_options(q, user, t.subresource.as_deref())?,
            )?;
            Ok(written_response(&t, w, rendering, q))
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(ct)
                .ok_or_else(|| StatusError::unsupported_media_type(ct))?;
            if kind == PatchKind::Strategic && t.def.crd_name.is_some() {
                return Err(StatusError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for custom resources; got {ct:?})"
                    ),
                    details: None,
                });
            }
            let patch = if kind == PatchKind::Apply {
                serde_yaml::from_slice::<Value>(body)
                    .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| StatusError::bad_request(format!("invalid patch body: {e}")))?
            };
            let w = cluster.patch(
                &t.def,
                ns,
                &name,
                kind,
                &patch,
                status_only,
                &write_options(q, user, t.subresource.as_deref())?,
            )?;
            Ok(written_response(&t, w, rendering, q))
        }
        (Method::DELETE, name) => {
            let mut options = decode_body(headers, body)?;
            if let Some(uid) = q.get("preconditions.uid") {
                options["preconditions"]["uid"] = json!(uid);
            }
            let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|x| x == "All"));
            let out = match name {
                Some(name) => cluster.delete(&t.def, ns, &name, &options, dry_run)?,
                None => {
                    cluster.delete_collection(&t.def, ns, &list_options(q)?, &options, dry_run)?
                }
            };
            Ok(json_response(StatusCode::OK, &out, "application/json"))
        }
        (m, _) => Err(StatusError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta})
}

/// Streams a watch. Errors found before streaming (bad selectors) are plain error responses;
/// an expired resourceVersion is an ERROR event carrying a 410 Status, as the API server sends.
fn watch(
    app: &Arc<App>,
    t: &Target,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    opts: ListOptions,
    rendering: Rendering,
) -> Result<Response, StatusError> {
    let rv = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| StatusError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let send_initial = q.get("sendInitialEvents").is_some_and(|s| s == "true");
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|s| s == "true");
    if send_initial && !bookmarks {
        return Err(StatusError::forbidden_invalid(
            "sendInitialEvents requires allowWatchBookmarks=true",
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str).unwrap_or(""));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let start = app.cluster.watch(&t.def, ns, rv, send_initial, &opts);
    let def = t.def.clone();
    let ns = ns.map(str::to_string);
    let shutdown = app.current_shutdown();
    let epoch = app.current_epoch();
    let bookmark_interval = app.bookmark_interval;
    let render = move |kind: &str, obj: &Value, headers_sent: &mut bool| -> Bytes {
        let served = to_served(&def, obj);
        let object = match rendering {
            Rendering::Json => served,
            Rendering::Metadata => partial_metadata(&served),
            Rendering::Table => {
                let rv = served
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let t = table(
                    &def,
                    std::slice::from_ref(&served),
                    include,
                    !*headers_sent,
                    &rv,
                    None,
                );
                *headers_sent = true;
                t
            }
        };
        event_line(kind, &object)
    };
    let def = t.def.clone();
    tokio::spawn(async move {
        let mut headers_sent = false;
        let mut start = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                return;
            }
        };
        // A watch from a future version starts there, not at the present.
        let threshold = start.current_rv.max(start.from_rv);
        let mut last_rv = threshold;
        for change in &start.initial {
            if let Some(kind) = Cluster::watch_event_kind(&def, ns.as_deref(), &opts, change)
                && tx
                    .send(render(kind.as_str(), &change.object, &mut headers_sent))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if send_initial
            && tx
                .send(event_line("BOOKMARK", &bookmark(&def, last_rv, true)))
                .await
                .is_err()
        {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                // Ending the watch wins over pending changes, so `end_watches` cuts at a known point.
                biased;
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = epoch.cancelled() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(event_line("BOOKMARK", &bookmark(&def, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                change = start.live.recv() => {
                    let change: Arc<Change> = match change {
                        Ok(c) => c,
                        // Lagging or closing ends the watch; the client re-watches from its last version.
                        Err(_) => return,
                    };
                    if change.rv <= threshold {
                        continue;
                    }
                    last_rv = change.rv;
                    if let Some(kind) = Cluster::watch_event_kind(&def, ns.as_deref(), &opts, &change) && tx.send(render(kind.as_str(), &change.object, &mut headers_sent)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    if let Ok(ct) = HeaderValue::from_str(rendering.content_type(false)) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=true&x",
        ));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn accept_headers_choose_the_rendering() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(Rendering::from_accept(&h), Rendering::Table);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            ),
        );
        assert_eq!(Rendering::from_accept(&h), Rendering::Metadata);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf, application/json"),
        );
        assert_eq!(Rendering::from_accept(&h), Rendering::Json);
    }
}
