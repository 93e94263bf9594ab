//! The object store and the API verbs, independent of HTTP.
//!
//! One global, monotonically increasing resourceVersion numbers every change; a bounded history
//! of changes lets watches resume from a resourceVersion, and a watch from a version older than
//! that history fails with 410 Expired.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::auth::admission::{self, Requester};
use super::convert::{stored_field_name, to_served, to_stored};
use super::object::{
    finalizers, generated_suffix, is_being_deleted, meta_str, metadata_mut, new_uid, now_rfc3339,
    resource_version, without_meta_and_status,
};
use super::patch::{PatchKind, apply_patch};
use super::registry::{Registry, ResourceDef, StorageKey};
use super::selectors::{FieldSelector, LabelSelector, field_string, object_labels};
use super::ssa;
use super::status::{Cause, StatusError, Target};
use super::validation::{
    FieldValidation, NameRule, validate_custom_resource, validate_object_meta_with,
};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, in stored form, with the object's previous state for selector transitions.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub storage: StorageKey,
    pub kind: ChangeKind,
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

/// Tunables of the simulated server.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How many changes are kept for watches to resume from.
    pub history_window: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            history_window: 10_000,
        }
    }
}

type ObjKey = (String, String);

struct State {
    rv: u64,
    registry: Registry,
    objects: HashMap<StorageKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_window: usize,
    /// Watches may resume from any version >= this one.
    oldest_resumable_rv: u64,
}

/// Options common to list, watch and deleteCollection.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// A list's `resourceVersion` (not "0"): served state must be at least this new.
    pub resource_version: Option<u64>,
    /// `resourceVersionMatch=Exact`: only the current version can be served (no history).
    pub exact: bool,
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    /// Who writes (`snapmend-sim --auth`): ValidatingAdmissionPolicies then apply.
    pub admission: Option<Requester>,
}

/// A write's result: the object and warnings to send as `Warning` headers.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

/// The start of a watch: the initial events (stored form) and a live feed from `from_rv` on.
pub struct WatchStart {
    pub initial: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub from_rv: u64,
    pub current_rv: u64,
}

/// The simulated cluster state shared by all requests.
pub struct Cluster {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The namespaces a fresh cluster has.
const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn target<'a>(def: &'a ResourceDef, name: &'a str) -> Target<'a> {
    Target {
        group: &def.group,
        kind: &def.plural,
        name,
    }
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Self {
        let (changes, _) = broadcast::channel(16_384);
        let cluster = Self {
            state: Mutex::new(State {
                rv: 1,
                registry: Registry::default(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_window: config.history_window.max(1),
                oldest_resumable_rv: 1,
            }),
            changes,
        };
        let ns_def = cluster.registry().find("", "v1", "namespaces").cloned();
        if let Some(ns_def) = ns_def {
            for ns in DEFAULT_NAMESPACES {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                if let Err(e) = cluster.create(&ns_def, None, body, &WriteOptions::default()) {
                    tracing::error!(namespace = ns, error = %e, "creating a default namespace failed");
                }
            }
        }
        cluster
    }

    /// Every stored object of a type (stored form), e.g. the RBAC objects an authorizer reads.
    pub fn all_objects(&self, group: &str, plural: &str) -> Vec<Value> {
        let key = StorageKey {
            group: group.to_string(),
            plural: plural.to_string(),
        };
        Self::stored_of(&self.lock(), &key)
    }

    fn stored_of(st: &State, key: &StorageKey) -> Vec<Value> {
        st.objects
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The ValidatingAdmissionPolicies that bind this write (only for writes of a known user).
    fn admit_by_policies(
        st: &State,
        def: &ResourceDef,
        served: &Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<(), StatusError> {
        let Some(requester) = &opts.admission else {
            return Ok(());
        };
        let key = |plural: &str| StorageKey {
            group: "admissionregistration.k8s.io".into(),
            plural: plural.into(),
        };
        let bindings = Self::stored_of(st, &key("validatingadmissionpolicybindings"));
        if bindings.is_empty() {
            return Ok(());
        }
        let policies = Self::stored_of(st, &key("validatingadmissionpolicies"));
        let attributes = admission::Attributes {
            def,
            operation: if old.is_some() { "UPDATE" } else { "CREATE" },
            requester,
            name: meta_str(served, "name").unwrap_or(""),
            namespace: meta_str(served, "namespace").unwrap_or(""),
            object: Some(served),
            old_object: old,
            dry_run: opts.dry_run,
        };
        admission::validate(&policies, &bindings, &attributes)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every write is a single insert).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Shrinks or grows the watch history; older changes can no longer be resumed from (410).
    pub fn set_history_window(&self, window: usize) {
        let mut st = self.lock();
        st.history_window = window.max(1);
        trim_history(&mut st);
    }

    /// Forgets all history: every watch resuming from an older version gets 410 Expired.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.oldest_resumable_rv = st.rv;
    }

    fn commit(
        &self,
        st: &mut State,
        def: &ResourceDef,
        key: ObjKey,
        kind: ChangeKind,
        mut obj: Value,
        previous: Option<Value>,
    ) -> Value {
        st.rv += 1;
        let rv = st.rv;
        metadata_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let objects = st.objects.entry(def.storage.clone()).or_default();
        if kind == ChangeKind::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key, obj.clone());
        }
        let change = Arc::new(Change {
            rv,
            storage: def.storage.clone(),
            kind,
            object: Arc::new(obj.clone()),
            previous: previous.map(Arc::new),
        });
        st.history.push_back(change.clone());
        trim_history(st);
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
        obj
    }

    fn stored<'a>(st: &'a State, def: &ResourceDef, ns: &str, name: &str) -> Option<&'a Value> {
        st.objects
            .get(&def.storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    fn ns_of(def: &ResourceDef, ns: Option<&str>) -> String {
        if def.namespaced {
            ns.unwrap_or("").to_string()
        } else {
            String::new()
        }
    }

    pub fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, StatusError> {
        let st = self.lock();
        let ns = Self::ns_of(def, ns);
        Self::stored(&st, def, &ns, name)
            .map(|o| to_served(def, o))
            .ok_or_else(|| StatusError::not_found(target(def, name)))
    }

    fn selected(def: &ResourceDef, obj: &Value, opts: &ListOptions) -> bool {
        opts.labels.matches(&object_labels(obj))
            && opts
                .fields
                .matches(|f| field_value(obj, &stored_field_name(def, f)))
    }

    /// A list (served form) with `metadata.resourceVersion`, `continue` and `remainingItemCount`.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, StatusError> {
        opts.fields
            .check_supported(&def.field_selectors, &def.plural)?;
        let st = self.lock();
        if let Some(rv) = opts.resource_version {
            if rv > st.rv {
                return Err(StatusError {
                    code: 504,
                    reason: "Timeout",
                    message: format!("Too large resource version: {rv}, current: {}", st.rv),
                    details: Some(
                        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                    ),
                });
            }
            if opts.exact && rv != st.rv {
                return Err(StatusError::gone(format!(
                    "too old resource version: {rv} ({}); only the current state is kept",
                    st.rv
                )));
            }
        }
        let start_after = match &opts.continue_token {
            Some(t) if !t.is_empty() => Some(decode_continue(t)?),
            _ => None,
        };
        let mut items = Vec::new();
        let mut remaining = 0usize;
        let mut next: Option<ObjKey> = None;
        if let Some(objects) = st.objects.get(&def.storage) {
            for (key, obj) in objects {
                if def.namespaced && ns.is_some_and(|n| n != key.0) {
                    continue;
                }
                if start_after.as_ref().is_some_and(|after| key <= after) {
                    continue;
                }
                if !Self::selected(def, obj, opts) {
                    continue;
                }
                if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                next = Some(key.clone());
                items.push(to_served(def, obj));
            }
        }
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".into(), Value::String(st.rv.to_string()));
        if remaining > 0
            && let Some(last) = next
        {
            metadata.insert("continue".into(), Value::String(encode_continue(&last)));
            metadata.insert("remainingItemCount".into(), json!(remaining));
        }
        Ok(json!({
            "apiVersion": def.api_version(),
            "kind": format!("{}List", def.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Starts a watch. `rv`: None/0 → synthetic ADDED for the current objects, then changes;
    /// N → changes after N, or 410 if N is older than the history.
    pub fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        rv: Option<u64>,
        send_initial: bool,
        opts: &ListOptions,
    ) -> Result<WatchStart, StatusError> {
        opts.fields
            .check_supported(&def.field_selectors, &def.plural)?;
        let st = self.lock();
        let live = self.changes.subscribe();
        let mut initial = Vec::new();
        let from_rv;
        let want_initial = send_initial || rv.is_none_or(|r| r == 0);
        if want_initial {
            from_rv = st.rv;
            if let Some(objects) = st.objects.get(&def.storage) {
                for ((obj_ns, _), obj) in objects {
                    if def.namespaced && ns.is_some_and(|n| n != obj_ns) {
                        continue;
                    }
                    initial.push(Arc::new(Change {
                        rv: resource_version(obj).unwrap_or(st.rv),
                        storage: def.storage.clone(),
                        kind: ChangeKind::Added,
                        object: Arc::new(obj.clone()),
                        previous: None,
                    }));
                }
            }
        } else {
            let r = rv.unwrap_or(0);
            if r < st.oldest_resumable_rv {
                return Err(StatusError::gone(format!(
                    "too old resource version: {r} ({})",
                    st.oldest_resumable_rv
                )));
            }
            from_rv = r;
            initial.extend(
                st.history
                    .iter()
                    .filter(|c| c.rv > r && c.storage == def.storage)
                    .cloned(),
            );
        }
        Ok(WatchStart {
            initial,
            live,
            from_rv,
            current_rv: st.rv,
        })
    }

    /// Whether a change concerns a watch, and as which event type (selector transitions included).
    pub fn watch_event_kind(
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
        change: &Change,
    ) -> Option<ChangeKind> {
        if change.storage != def.storage {
            return None;
        }
        if def.namespaced
            && let Some(ns) = ns
            && meta_str(&change.object, "namespace").unwrap_or("") != ns
        {
            return None;
        }
        let now = Self::selected(def, &change.object, opts);
        let before = change
            .previous
            .as_deref()
            .is_some_and(|p| Self::selected(def, p, opts));
        match (change.kind, before, now) {
            (ChangeKind::Added, _, true) => Some(ChangeKind::Added),
            (ChangeKind::Deleted, _, true) => Some(ChangeKind::Deleted),
            (ChangeKind::Modified, true, true) => Some(ChangeKind::Modified),
            (ChangeKind::Modified, false, true) => Some(ChangeKind::Added),
            (ChangeKind::Modified, true, false) => Some(ChangeKind::Deleted),
            _ => None,
        }
    }

    fn check_namespace(st: &State, def: &ResourceDef, ns: &str) -> Result<(), StatusError> {
        if !def.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(StatusError::bad_request(
                "the namespace of the object must be set for a namespaced resource",
            ));
        }
        let ns_key = StorageKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        match st
            .objects
            .get(&ns_key)
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
        {
            Some(n) if is_being_deleted(n) => Err(StatusError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
                details: None,
            }),
            Some(_) => Ok(()),
            None => Err(StatusError::not_found(Target {
                group: "",
                kind: "namespaces",
                name: ns,
            })),
        }
    }

    pub fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, StatusError> {
        let mut st = self.lock();
        self.create_locked(&mut st, def, ns, body, opts)
    }

    fn create_locked(
        &self,
        st: &mut State,
        def: &ResourceDef,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, StatusError> {
        if !body.is_object() {
            return Err(StatusError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type_of_body(def, &body)?;
        let body_ns = meta_str(&body, "namespace").map(str::to_string);
        let ns = Self::ns_of(def, ns.or(body_ns.as_deref()));
        if def.namespaced
            && let Some(bns) = &body_ns
            && bns != &ns
        {
            return Err(StatusError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut served = body;
        let name = match meta_str(&served, "name") {
            Some(n) => n.to_string(),
            None => match meta_str(&served, "generateName") {
                Some(prefix) => format!("{prefix}{}", generated_suffix()),
                None => {
                    return Err(StatusError::invalid(
                        &def.kind_group(),
                        "",
                        &def.group,
                        &def.kind,
                        &[Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            },
        };
        Self::check_namespace(st, def, &ns)?;
        if Self::stored(st, def, &ns, &name).is_some() {
            return Err(StatusError::already_exists(target(def, &name)));
        }
        {
            let meta = metadata_mut(&mut served);
            meta.insert("name".into(), Value::String(name.clone()));
            if def.namespaced {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), Value::String(new_uid()));
            meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            if def.tracks_generation() {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
            for f in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "selfLink",
            ] {
                meta.remove(f);
            }
        }
        reset_status_on_create(def, &mut served);
        let mut warnings = Vec::new();
        if let Some(manager) = &opts.field_manager {
            ssa::record_update(&mut served, None, manager, &def.api_version(), None);
        }
        let served = self.admit(st, def, served, None, opts, &mut warnings)?;
        let stored = to_stored(def, &served);
        if opts.dry_run {
            return Ok(Written {
                object: to_served(def, &stored),
                warnings,
                created: true,
            });
        }
        let stored = self.commit(st, def, (ns, name), ChangeKind::Added, stored, None);
        self.after_write(st, def, &stored);
        Ok(Written {
            object: to_served(def, &stored),
            warnings,
            created: true,
        })
    }

    /// Type-specific validation, defaulting and side effects before an object is stored.
    fn admit(
        &self,
        st: &State,
        def: &ResourceDef,
        mut served: Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value, StatusError> {
        let name = meta_str(&served, "name").unwrap_or("").to_string();
        let meta_causes = validate_object_meta_with(&served, NameRule::of(&def.group, &def.plural));
        if !meta_causes.is_empty() {
            return Err(StatusError::invalid(
                &def.kind_group(),
                &name,
                &def.group,
                &def.kind,
                &meta_causes,
            ));
        }
        if let Some(schema) = &def.schema {
            let outcome = validate_custom_resource(schema, &served, old, opts.field_validation);
            if !outcome.unknown_fields.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = outcome
                            .unknown_fields
                            .iter()
                            .map(|f| format!("unknown field \"{f}\""))
                            .collect();
                        return Err(StatusError::bad_request(format!(
                            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                            list.join(", "),
                            kind = def.kind,
                            version = def.version,
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(
                            outcome
                                .unknown_fields
                                .iter()
                                .map(|f| format!("unknown field \"{f}\"")),
                        );
                    }
                    FieldValidation::Ignore => {}
                }
            }
            if !outcome.causes.is_empty() {
                return Err(StatusError::invalid(
                    &def.kind_group(),
                    &name,
                    &def.group,
                    &def.kind,
                    &outcome.causes,
                ));
            }
            served = outcome.object;
        }
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            served = super::crd::admit_crd(served, st.registry.all())?;
        }
        if def.group.is_empty() && def.plural == "secrets" {
            served = match super::secret::admit(served, old) {
                Ok(s) => s,
                Err(super::secret::AdmitError::BadRequest(why)) => {
                    return Err(StatusError::bad_request(why));
                }
                Err(super::secret::AdmitError::Invalid(causes)) => {
                    return Err(StatusError::invalid(
                        &def.kind_group(),
                        &name,
                        &def.group,
                        &def.kind,
                        &causes,
                    ));
                }
            };
        }
        if def.group.is_empty() && def.plural == "namespaces" {
            let phase = if is_being_deleted(&served) {
                "Terminating"
            } else {
                "Active"
            };
            served["status"] = json!({"phase": phase});
        }
        if let Some(old) = old {
            let new_f = finalizers(&served);
            let old_f = finalizers(old);
            if is_being_deleted(old) && new_f.iter().any(|f| !old_f.contains(f)) {
                return Err(StatusError::invalid(
                    &def.kind_group(),
                    &name,
                    &def.group,
                    &def.kind,
                    &[Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        Self::admit_by_policies(st, def, &served, old, opts)?;
        Ok(served)
    }

    /// Registry and cascade effects of a committed write.
    fn after_write(&self, st: &mut State, def: &ResourceDef, stored: &Value) {
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            st.registry.set_crd(stored);
        }
    }

    /// Update (PUT) of the object or its status subresource.
    pub fn update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Written, StatusError> {
        if !body.is_object() {
            return Err(StatusError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type_of_body(def, &body)?;
        if meta_str(&body, "name").is_some_and(|n| n != name) {
            return Err(StatusError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let mut st = self.lock();
        self.update_locked(&mut st, def, ns, name, status_only, opts, |_| Ok(body))
    }

    /// Patch of any kind, on the object or its status subresource. Apply patches create.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch: &Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Written, StatusError> {
        let mut st = self.lock();
        let nsk = Self::ns_of(def, ns);
        let exists = Self::stored(&st, def, &nsk, name).is_some();
        if kind == PatchKind::Apply {
            let manager = opts.field_manager.clone().ok_or_else(|| {
                StatusError::bad_request(
                    "PATCH, application/apply-patch+yaml requests must set fieldManager",
                )
            })?;
            if !exists {
                if status_only {
                    return Err(StatusError::not_found(target(def, name)));
                }
                let mut obj = patch.clone();
                if meta_str(&obj, "name").is_none() {
                    metadata_mut(&mut obj).insert("name".into(), Value::String(name.to_string()));
                }
                ssa::record_apply(&mut obj, None, patch, &manager, &def.api_version(), None);
                let write = WriteOptions {
                    field_manager: None,
                    ..opts.clone()
                };
                return self.create_locked(&mut st, def, ns, obj, &write);
            }
            let api_version = def.api_version();
            let force = opts.force;
            let subresource = status_only.then_some("status");
            return self.update_locked(
                &mut st,
                def,
                ns,
                name,
                status_only,
                &WriteOptions {
                    field_manager: None,
                    ..opts.clone()
                },
                |old| {
                    // A resourceVersion in an apply configuration is a precondition.
                    if let Some(rv) = meta_str(patch, "resourceVersion")
                        && Some(rv) != meta_str(old, "resourceVersion")
                    {
                        return Err(StatusError::stale_resource_version(target(def, name)));
                    }
                    ssa::apply(old, patch, &manager, &api_version, force, subresource)
                        .map_err(|causes| StatusError::apply_conflict(target(def, name), &causes))
                },
            );
        }
        if !exists {
            return Err(StatusError::not_found(target(def, name)));
        }
        self.update_locked(&mut st, def, ns, name, status_only, opts, |old| {
            apply_patch(kind, old, patch)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        st: &mut State,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        opts: &WriteOptions,
        build: impl FnOnce(&Value) -> Result<Value, StatusError>,
    ) -> Result<Written, StatusError> {
        let nsk = Self::ns_of(def, ns);
        let old_stored = Self::stored(st, def, &nsk, name)
            .cloned()
            .ok_or_else(|| StatusError::not_found(target(def, name)))?;
        let old_served = to_served(def, &old_stored);
        let mut new_served = build(&old_served)?;
        if !new_served.is_object() {
            return Err(StatusError::bad_request(
                "the resulting object must be a JSON object",
            ));
        }
        if let Some(rv) = meta_str(&new_served, "resourceVersion")
            && Some(rv) != meta_str(&old_served, "resourceVersion")
        {
            return Err(StatusError::stale_resource_version(target(def, name)));
        }
        if let Some(uid) = meta_str(&new_served, "uid")
            && Some(uid) != meta_str(&old_served, "uid")
        {
            return Err(StatusError::conflict(
                target(def, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old_served, "uid").unwrap_or("")
                ),
            ));
        }
        prepare_update(def, &old_served, &mut new_served, status_only);
        if let Some(manager) = &opts.field_manager {
            ssa::record_update(
                &mut new_served,
                Some(&old_served),
                manager,
                &def.api_version(),
                status_only.then_some("status"),
            );
        }
        let mut warnings = Vec::new();
        let new_served = self.admit(st, def, new_served, Some(&old_served), opts, &mut warnings)?;
        let new_stored = to_stored(def, &new_served);
        let key = (nsk, name.to_string());
        let emptied_namespace = !(def.group.is_empty()
            && def.plural == "namespaces"
            && namespace_has_contents(st, name));
        if is_being_deleted(&new_stored) && finalizers(&new_stored).is_empty() && emptied_namespace
        {
            if opts.dry_run {
                return Ok(Written {
                    object: to_served(def, &new_stored),
                    warnings,
                    created: false,
                });
            }
            let gone = self.remove_locked(st, def, key, new_stored, Some(old_stored));
            return Ok(Written {
                object: to_served(def, &gone),
                warnings,
                created: false,
            });
        }
        if same_ignoring_rv(&new_stored, &old_stored) || opts.dry_run {
            let object = if opts.dry_run { new_stored } else { old_stored };
            return Ok(Written {
                object: to_served(def, &object),
                warnings,
                created: false,
            });
        }
        let stored = self.commit(
            st,
            def,
            key,
            ChangeKind::Modified,
            new_stored,
            Some(old_stored),
        );
        self.after_write(st, def, &stored);
        Ok(Written {
            object: to_served(def, &stored),
            warnings,
            created: false,
        })
    }

    /// Removes an object for good, then its dependents and (namespaces, CRDs) its contents.
    fn remove_locked(
        &self,
        st: &mut State,
        def: &ResourceDef,
        key: ObjKey,
        last: Value,
        previous: Option<Value>,
    ) -> Value {
        let gone = self.commit(st, def, key.clone(), ChangeKind::Deleted, last, previous);
        let uid = meta_str(&gone, "uid").unwrap_or("").to_string();
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            let crd_defs: Vec<ResourceDef> = st
                .registry
                .all()
                .iter()
                .filter(|d| d.crd_name.as_deref() == Some(key.1.as_str()))
                .cloned()
                .collect();
            if let Some(d) = crd_defs.first() {
                let keys: Vec<ObjKey> = st
                    .objects
                    .get(&d.storage)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    if let Some(obj) = st.objects.get(&d.storage).and_then(|m| m.get(&k)).cloned() {
                        self.commit(st, d, k, ChangeKind::Deleted, obj.clone(), Some(obj));
                    }
                }
            }
            st.registry.remove_crd(&key.1);
        }
        if def.group.is_empty() && def.plural == "namespaces" {
            let namespaced: Vec<ResourceDef> = st
                .registry
                .all()
                .iter()
                .filter(|d| d.namespaced)
                .cloned()
                .collect();
            for d in namespaced {
                let keys: Vec<ObjKey> = st
                    .objects
                    .get(&d.storage)
                    .map(|m| m.keys().filter(|k| k.0 == key.1).cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    if let Some(obj) = st.objects.get(&d.storage).and_then(|m| m.get(&k)).cloned() {
                        self.commit(st, &d, k, ChangeKind::Deleted, obj.clone(), Some(obj));
                    }
                }
            }
        }
        if !uid.is_empty() {
            self.collect_garbage(st, &uid);
        }
        gone
    }

    /// Background cascading deletion of objects whose ownerReferences name `owner_uid`.
    fn collect_garbage(&self, st: &mut State, owner_uid: &str) {
        let defs: Vec<ResourceDef> = st.registry.all().to_vec();
        let mut seen = std::collections::HashSet::new();
        for d in defs {
            if !seen.insert(d.storage.clone()) {
                continue;
            }
            let owned: Vec<ObjKey> = st
                .objects
                .get(&d.storage)
                .map(|m| {
                    m.iter()
                        .filter(|(_, o)| {
                            o.pointer("/metadata/ownerReferences")
                                .and_then(Value::as_array)
                                .is_some_and(|refs| {
                                    refs.iter().any(|r| {
                                        r.get("uid").and_then(Value::as_str) == Some(owner_uid)
                                    })
                                })
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            for k in owned {
                let ns = (!k.0.is_empty()).then_some(k.0.clone());
                if let Err(e) = self.delete_locked(st, &d, ns.as_deref(), &k.1, &Value::Null, false)
                {
                    tracing::debug!(name = %k.1, error = %e, "garbage collection skipped an object");
                }
            }
        }
    }

    /// Delete: objects with finalizers get a deletionTimestamp, the rest go at once.
    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, StatusError> {
        let mut st = self.lock();
        self.delete_locked(&mut st, def, ns, name, options, dry_run)
    }

    fn delete_locked(
        &self,
        st: &mut State,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, StatusError> {
        let nsk = Self::ns_of(def, ns);
        let old = Self::stored(st, def, &nsk, name)
            .cloned()
            .ok_or_else(|| StatusError::not_found(target(def, name)))?;
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(StatusError::conflict(
                target(def, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(StatusError::conflict(
                target(def, name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        if dry_run {
            return Ok(to_served(def, &old));
        }
        let is_namespace = def.group.is_empty() && def.plural == "namespaces";
        let held =
            !finalizers(&old).is_empty() || (is_namespace && namespace_has_contents(st, name));
        if held {
            if is_being_deleted(&old) {
                return Ok(to_served(def, &old));
            }
            let mut marked = old.clone();
            let meta = metadata_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            // The API server bumps the generation when it starts a deletion.
            if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                meta.insert("generation".into(), json!(g + 1));
            }
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let stored = self.commit(
                st,
                def,
                (nsk, name.to_string()),
                ChangeKind::Modified,
                marked,
                Some(old),
            );
            return Ok(to_served(def, &stored));
        }
        let gone = self.remove_locked(st, def, (nsk, name.to_string()), old.clone(), Some(old));
        Ok(to_served(def, &gone))
    }

    /// One pass of the namespace controller: namespaces Terminating for at least `min_age`
    /// get their contents deleted, and go once nothing is left in them.
    pub fn finalize_terminating_namespaces(&self, min_age: std::time::Duration) {
        let mut st = self.lock();
        let Some(ns_def) = st.registry.find("", "v1", "namespaces").cloned() else {
            return;
        };
        let now = jiff::Timestamp::now();
        let due: Vec<String> = st
            .objects
            .get(&ns_def.storage)
            .map(|m| {
                m.values()
                    .filter(|n| finalizers(n).is_empty())
                    .filter(|n| {
                        meta_str(n, "deletionTimestamp")
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .is_some_and(|t| {
                                now.as_second() - t.as_second() >= min_age.as_secs() as i64
                            })
                    })
                    .filter_map(|n| meta_str(n, "name").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for ns in due {
            let mut seen = std::collections::HashSet::new();
            let defs: Vec<ResourceDef> = st
                .registry
                .all()
                .iter()
                .filter(|d| d.namespaced)
                .cloned()
                .collect();
            for d in defs {
                if !seen.insert(d.storage.clone()) {
                    continue;
                }
                let names: Vec<String> = st
                    .objects
                    .get(&d.storage)
                    .map(|m| {
                        m.keys()
                            .filter(|k| k.0 == ns)
                            .map(|k| k.1.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for name in names {
                    if let Err(e) =
                        self.delete_locked(&mut st, &d, Some(&ns), &name, &Value::Null, false)
                    {
                        tracing::debug!(namespace = %ns, %name, error = %e, "namespace cleanup skipped an object");
                    }
                }
            }
            if !namespace_has_contents(&st, &ns)
                && let Some(obj) = Self::stored(&st, &ns_def, "", &ns).cloned()
            {
                self.remove_locked(
                    &mut st,
                    &ns_def,
                    (String::new(), ns.clone()),
                    obj.clone(),
                    Some(obj),
                );
            }
        }
    }

    /// deleteCollection: deletes every selected object, returning them as a list.
    pub fn delete_collection(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, StatusError> {
        let all = ListOptions {
            limit: None,
            continue_token: None,
            ..opts.clone()
        };
        let listed = self.list(def, ns, &all)?;
        let mut deleted = Vec::new();
        let mut st = self.lock();
        for item in listed["items"].as_array().into_iter().flatten() {
            let name = meta_str(item, "name").unwrap_or("").to_string();
            let item_ns = meta_str(item, "namespace").map(str::to_string);
            match self.delete_locked(&mut st, def, item_ns.as_deref(), &name, options, dry_run) {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": def.api_version(),
            "kind": format!("{}List", def.kind),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": deleted,
        }))
    }

    /// Pod eviction (no PodDisruptionBudgets here): the pod is deleted.
    pub fn evict(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: &Value,
    ) -> Result<Value, StatusError> {
        let options = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
        self.delete(def, ns, name, &options, false)?;
        Ok(super::status::success_status(None))
    }
}

/// Whether any namespaced object lives in namespace `ns`.
fn namespace_has_contents(st: &State, ns: &str) -> bool {
    st.registry.all().iter().filter(|d| d.namespaced).any(|d| {
        st.objects
            .get(&d.storage)
            .is_some_and(|m| m.keys().any(|k| k.0 == ns))
    })
}

fn trim_history(st: &mut State) {
    while st.history.len() > st.history_window {
        if let Some(c) = st.history.pop_front() {
            st.oldest_resumable_rv = c.rv;
        }
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    match field {
        "source" => field_string(obj, "source.component"),
        other => field_string(obj, other),
    }
}

fn check_type_of_body(def: &ResourceDef, body: &Value) -> Result<(), StatusError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != def.kind
    {
        return Err(StatusError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({})",
            def.kind
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
        let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if !av.is_empty() && group != def.group {
            return Err(StatusError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                def.api_version()
            )));
        }
    }
    Ok(())
}

/// What create does to a client-supplied status, per type.
fn reset_status_on_create(def: &ResourceDef, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if def.group.is_empty() && def.plural == "pods" {
        map.insert("status".into(), json!({"phase": "Pending"}));
    } else if def.status_subresource
        && def.plural != "nodes"
        && def.plural != "namespaces"
        && def.plural != "customresourcedefinitions"
    {
        map.remove("status");
    }
}

/// Keeps server-owned metadata, isolates spec from status, and bumps generation on spec changes.
fn prepare_update(def: &ResourceDef, old: &Value, new: &mut Value, status_only: bool) {
    if status_only {
        let status = new.get("status").cloned();
        let managed = new.pointer("/metadata/managedFields").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let Some(mf) = managed {
            metadata_mut(new).insert("managedFields".into(), mf);
        }
        return;
    }
    if def.status_subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or(Value::Null);
    let generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bumped = without_meta_and_status(old) != without_meta_and_status(new);
    let meta = metadata_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "name",
        "namespace",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    if def.tracks_generation() {
        meta.insert(
            "generation".into(),
            json!(if bumped { generation + 1 } else { generation }),
        );
    } else {
        meta.remove("generation");
    }
    if !meta.contains_key("managedFields")
        && let Some(mf) = old_meta.get("managedFields")
    {
        meta.insert("managedFields".into(), mf.clone());
    }
}

fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

fn encode_continue(key: &ObjKey) -> String {
    hex::encode(format!("{}\u{0}{}", key.0, key.1))
}

fn decode_continue(token: &str) -> Result<ObjKey, StatusError> {
    let bad = || StatusError::bad_request(format!("invalid continue token {token:?}"));
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('\u{0}').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(cluster: &Cluster, group: &str, plural: &str) -> ResourceDef {
        let reg = cluster.registry();
        reg.all()
            .iter()
            .find(|d| d.group == group && d.plural == plural)
            .cloned()
            .unwrap()
    }

    fn cm(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "1"}})
    }

    #[test]
    fn create_assigns_server_metadata_and_rejects_duplicates() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let w = c
            .create(
                &d,
                Some("default"),
                cm("x", json!({})),
                &WriteOptions::default(),
            )
            .unwrap();
        let m = &w.object["metadata"];
        assert!(
            m.get("generation").is_none(),
            "configmaps have no generation"
        );
        assert!(m["uid"].as_str().is_some() && m["creationTimestamp"].as_str().is_some());
        let err = c
            .create(
                &d,
                Some("default"),
                cm("x", json!({})),
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
        let err = c
            .create(
                &d,
                Some("nope"),
                cm("y", json!({})),
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code, 404);
    }

    #[test]
    fn update_with_stale_resource_version_conflicts() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let w = c
            .create(
                &d,
                Some("default"),
                cm("x", json!({})),
                &WriteOptions::default(),
            )
            .unwrap();
        let mut first = w.object.clone();
        first["data"]["a"] = json!("2");
        c.update(
            &d,
            Some("default"),
            "x",
            first,
            false,
            &WriteOptions::default(),
        )
        .unwrap();
        let mut stale = w.object.clone();
        stale["data"]["a"] = json!("3");
        let err = c
            .update(
                &d,
                Some("default"),
                "x",
                stale,
                false,
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
    }

    #[test]
    fn list_paginates_and_filters_by_labels() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        for i in 0..5 {
            let labels = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
            c.create(
                &d,
                Some("default"),
                cm(&format!("c{i}"), labels),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        let mut opts = ListOptions {
            limit: Some(2),
            ..Default::default()
        };
        let mut names = Vec::new();
        loop {
            let page = c.list(&d, Some("default"), &opts).unwrap();
            names.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
            );
            match page["metadata"]["continue"].as_str() {
                Some(t) => opts.continue_token = Some(t.to_string()),
                None => break,
            }
        }
        assert_eq!(names, vec!["c0", "c1", "c2", "c3", "c4"]);
        let even = ListOptions {
            labels: LabelSelector::parse("parity=even").unwrap(),
            ..Default::default()
        };
        assert_eq!(
            c.list(&d, None, &even).unwrap()["items"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn list_resource_version_semantics() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let now = c.current_rv();
        let at = |rv: u64, exact: bool| ListOptions {
            resource_version: Some(rv),
            exact,
            ..Default::default()
        };
        assert!(c.list(&d, None, &at(now, true)).is_ok());
        assert!(
            c.list(&d, None, &at(now - 1, false)).is_ok(),
            "not older than: current state is newer"
        );
        assert_eq!(c.list(&d, None, &at(now - 1, true)).unwrap_err().code, 410);
        assert_eq!(c.list(&d, None, &at(now + 5, false)).unwrap_err().code, 504);
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let mut body = cm("x", json!({}));
        body["metadata"]["finalizers"] = json!(["example.com/hold"]);
        c.create(&d, Some("default"), body, &WriteOptions::default())
            .unwrap();
        let marked = c
            .delete(&d, Some("default"), "x", &Value::Null, false)
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let mut adding = marked.clone();
        adding["metadata"]["finalizers"] = json!(["example.com/hold", "another"]);
        assert_eq!(
            c.update(
                &d,
                Some("default"),
                "x",
                adding,
                false,
                &WriteOptions::default()
            )
            .unwrap_err()
            .code,
            422
        );
        let mut release = marked;
        release["metadata"]["finalizers"] = json!([]);
        c.update(
            &d,
            Some("default"),
            "x",
            release,
            false,
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(c.get(&d, Some("default"), "x").unwrap_err().code, 404);
    }

    #[test]
    fn apply_with_a_stale_resource_version_conflicts() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let opts = WriteOptions {
            field_manager: Some("m".into()),
            ..Default::default()
        };
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
        let w = c
            .patch(
                &d,
                Some("default"),
                "x",
                PatchKind::Apply,
                &cfg,
                false,
                &opts,
            )
            .unwrap();
        assert!(w.created);
        let mut stale = cfg.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        stale["data"]["a"] = json!("2");
        let err = c
            .patch(
                &d,
                Some("default"),
                "x",
                PatchKind::Apply,
                &stale,
                false,
                &opts,
            )
            .unwrap_err();
        assert_eq!(err.reason, "Conflict");
        stale["metadata"]["resourceVersion"] = w.object["metadata"]["resourceVersion"].clone();
        let ok = c
            .patch(
                &d,
                Some("default"),
                "x",
                PatchKind::Apply,
                &stale,
                false,
                &opts,
            )
            .unwrap();
        assert_eq!(ok.object["data"]["a"], "2");
    }

    #[test]
    fn namespaces_with_content_terminate_until_emptied() {
        let c = Cluster::new(ClusterConfig::default());
        let ns = def(&c, "", "namespaces");
        let d = def(&c, "", "configmaps");
        let body = json!({"metadata": {"name": "work"}});
        c.create(&ns, None, body, &WriteOptions::default()).unwrap();
        let mut held = cm("held", json!({}));
        held["metadata"]["finalizers"] = json!(["example.com/hold"]);
        c.create(&d, Some("work"), held, &WriteOptions::default())
            .unwrap();
        c.create(
            &d,
            Some("work"),
            cm("free", json!({})),
            &WriteOptions::default(),
        )
        .unwrap();

        let marked = c.delete(&ns, None, "work", &Value::Null, false).unwrap();
        assert_eq!(marked["status"]["phase"], "Terminating");
        let refused = c.create(
            &d,
            Some("work"),
            cm("new", json!({})),
            &WriteOptions::default(),
        );
        assert_eq!(refused.unwrap_err().code, 403);

        c.finalize_terminating_namespaces(std::time::Duration::ZERO);
        assert_eq!(c.get(&d, Some("work"), "free").unwrap_err().code, 404);
        let still = c.get(&d, Some("work"), "held").unwrap();
        assert!(still["metadata"]["deletionTimestamp"].is_string());
        assert!(
            c.get(&ns, None, "work").is_ok(),
            "held by the finalizer of its content"
        );

        let mut release = still;
        release["metadata"]["finalizers"] = json!([]);
        c.update(
            &d,
            Some("work"),
            "held",
            release,
            false,
            &WriteOptions::default(),
        )
        .unwrap();
        c.finalize_terminating_namespaces(std::time::Duration::ZERO);
        assert_eq!(c.get(&ns, None, "work").unwrap_err().code, 404);
    }

    #[test]
    fn deleting_an_owner_deletes_its_dependents() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let owner = c
            .create(
                &d,
                Some("default"),
                cm("owner", json!({})),
                &WriteOptions::default(),
            )
            .unwrap()
            .object;
        let mut dep = cm("dep", json!({}));
        dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
        c.create(&d, Some("default"), dep, &WriteOptions::default())
            .unwrap();
        c.delete(&d, Some("default"), "owner", &Value::Null, false)
            .unwrap();
        assert_eq!(c.get(&d, Some("default"), "dep").unwrap_err().code, 404);
    }

    #[test]
    fn watch_from_compacted_version_is_gone() {
        let c = Cluster::new(ClusterConfig { history_window: 2 });
        let d = def(&c, "", "configmaps");
        let start = c.current_rv();
        for i in 0..5 {
            c.create(
                &d,
                Some("default"),
                cm(&format!("c{i}"), json!({})),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        let err = c
            .watch(&d, None, Some(start), false, &ListOptions::default())
            .err()
            .unwrap();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        let now = c.current_rv();
        assert!(
            c.watch(&d, None, Some(now), false, &ListOptions::default())
                .is_ok()
        );
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let c = Cluster::new(ClusterConfig::default());
        let d = def(&c, "", "configmaps");
        let opts = ListOptions {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let change = |prev: Value, now: Value| Change {
            rv: 9,
            storage: d.storage.clone(),
            kind: ChangeKind::Modified,
            object: Arc::new(now),
            previous: Some(Arc::new(prev)),
        };
        let web = cm("x", json!({"app": "web"}));
        let other = cm("x", json!({"app": "db"}));
        assert_eq!(
            Cluster::watch_event_kind(&d, None, &opts, &change(other.clone(), web.clone())),
            Some(ChangeKind::Added)
        );
        assert_eq!(
            Cluster::watch_event_kind(&d, None, &opts, &change(web.clone(), other.clone())),
            Some(ChangeKind::Deleted)
        );
        assert_eq!(
            Cluster::watch_event_kind(&d, None, &opts, &change(other.clone(), other)),
            None
        );
    }
}
