//! The served resource types: the built-in ones and those created from CustomResourceDefinitions.

use std::sync::Arc;

use serde_json::Value;

/// Where objects of a type live; two API versions of one type share it (core and events.k8s.io events).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    pub group: String,
    pub plural: String,
}

/// How an object is converted between its stored form and the served version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Same shape; only `apiVersion` is rewritten.
    Identity,
    /// events.k8s.io/v1 served from core/v1 storage.
    EventsV1,
}

/// Server-side printing of a type for `kubectl get`.
#[derive(Debug, Clone, PartialEq)]
pub enum Printer {
    Node,
    Pod,
    Event,
    EventsV1,
    Namespace,
    ConfigMap,
    Lease,
    Deployment,
    DaemonSet,
    CustomResourceDefinition,
    /// A CRD version's additionalPrinterColumns (empty: Name and Age only).
    Columns(Vec<PrinterColumn>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    pub printer: Printer,
    /// Field paths accepted by fieldSelector, without the leading dot.
    pub field_selectors: Vec<String>,
    /// The openAPIV3Schema of a custom resource version.
    pub schema: Option<Arc<Value>>,
    pub storage: StorageKey,
    pub conversion: Conversion,
    /// The CRD that serves this type, if any.
    pub crd_name: Option<String>,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Kind.group`, as 422 messages name a type.
    pub fn kind_group(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether the API server keeps `metadata.generation` for this type (custom resources,
    /// CRDs, deployments, daemonsets); core types such as configmaps, nodes, pods, events and
    /// leases have none.
    pub fn tracks_generation(&self) -> bool {
        self.crd_name.is_some()
            || matches!(
                (self.group.as_str(), self.plural.as_str()),
                ("apps", "deployments")
                    | ("apps", "daemonsets")
                    | ("apiextensions.k8s.io", "customresourcedefinitions")
            )
    }

    /// Reviews are answered, never stored: create is their only verb.
    pub fn is_review(&self) -> bool {
        self.group == "authorization.k8s.io" && self.plural == "selfsubjectaccessreviews"
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_review() {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    printer: Printer,
    extra_fields: &'static [&'static str],
    storage_group: &'static str,
    conversion: Conversion,
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

/// A v1 type that is stored and served but has no behaviour (so `kubectl apply -k deploy/` works).
fn stored_only(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        status: plural == "poddisruptionbudgets" || plural == "services",
        printer: Printer::Columns(Vec::new()),
        extra_fields: &[],
        storage_group: group,
        conversion: Conversion::Identity,
    }
}

fn builtins() -> Vec<Builtin> {
    vec![
        Builtin {
            group: "",
            version: "v1",
            plural: "namespaces",
            singular: "namespace",
            kind: "Namespace",
            namespaced: false,
            short_names: &["ns"],
            categories: &[],
            status: true,
            printer: Printer::Namespace,
            extra_fields: &["status.phase"],
            storage_group: "",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "",
            version: "v1",
            plural: "nodes",
            singular: "node",
            kind: "Node",
            namespaced: false,
            short_names: &["no"],
            categories: &[],
            status: true,
            printer: Printer::Node,
            extra_fields: &["spec.unschedulable"],
            storage_group: "",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "",
            version: "v1",
            plural: "pods",
            singular: "pod",
            kind: "Pod",
            namespaced: true,
            short_names: &["po"],
            categories: &["all"],
            status: true,
            printer: Printer::Pod,
            extra_fields: &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            storage_group: "",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "",
            version: "v1",
            plural: "events",
            singular: "event",
            kind: "Event",
            namespaced: true,
            short_names: &["ev"],
            categories: &[],
            status: false,
            printer: Printer::Event,
            extra_fields: EVENT_FIELDS,
            storage_group: "",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "",
            version: "v1",
            plural: "configmaps",
            singular: "configmap",
            kind: "ConfigMap",
            namespaced: true,
            short_names: &["cm"],
            categories: &[],
            status: false,
            printer: Printer::ConfigMap,
            extra_fields: &[],
            storage_group: "",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "events.k8s.io",
            version: "v1",
            plural: "events",
            singular: "event",
            kind: "Event",
            namespaced: true,
            short_names: &["ev"],
            categories: &[],
            status: false,
            printer: Printer::EventsV1,
            extra_fields: EVENTS_V1_FIELDS,
            storage_group: "",
            conversion: Conversion::EventsV1,
        },
        Builtin {
            group: "coordination.k8s.io",
            version: "v1",
            plural: "leases",
            singular: "lease",
            kind: "Lease",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            printer: Printer::Lease,
            extra_fields: &[],
            storage_group: "coordination.k8s.io",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "apps",
            version: "v1",
            plural: "deployments",
            singular: "deployment",
            kind: "Deployment",
            namespaced: true,
            short_names: &["deploy"],
            categories: &["all"],
            status: true,
            printer: Printer::Deployment,
            extra_fields: &[],
            storage_group: "apps",
            conversion: Conversion::Identity,
        },
        Builtin {
            group: "apps",
            version: "v1",
            plural: "daemonsets",
            singular: "daemonset",
            kind: "DaemonSet",
            namespaced: true,
            short_names: &["ds"],
            categories: &["all"],
            status: true,
            printer: Printer::DaemonSet,
            extra_fields: &[],
            storage_group: "apps",
            conversion: Conversion::Identity,
        },
        stored_only(
            "",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
        ),
        stored_only("", "secrets", "secret", "Secret", true, &[]),
        stored_only("", "services", "service", "Service", true, &["svc"]),
        stored_only(
            "rbac.authorization.k8s.io",
            "roles",
            "role",
            "Role",
            true,
            &[],
        ),
        stored_only(
            "rbac.authorization.k8s.io",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            &[],
        ),
        stored_only(
            "rbac.authorization.k8s.io",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            &[],
        ),
        stored_only(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            &[],
        ),
        stored_only(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            false,
            &[],
        ),
        stored_only(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            false,
            &[],
        ),
        // Answered, not stored (`kubectl auth can-i`): see `http.rs`.
        stored_only(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            false,
            &[],
        ),
        stored_only(
            "policy",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
            &["pdb"],
        ),
        Builtin {
            group: "apiextensions.k8s.io",
            version: "v1",
            plural: "customresourcedefinitions",
            singular: "customresourcedefinition",
            kind: "CustomResourceDefinition",
            namespaced: false,
            short_names: &["crd", "crds"],
            categories: &["api-extensions"],
            status: true,
            printer: Printer::CustomResourceDefinition,
            extra_fields: &[],
            storage_group: "apiextensions.k8s.io",
            conversion: Conversion::Identity,
        },
    ]
}

fn base_fields(namespaced: bool) -> Vec<String> {
    let mut f = vec!["metadata.name".to_string()];
    if namespaced {
        f.push("metadata.namespace".to_string());
    }
    f
}

/// The built-in types this server serves.
pub fn builtin_defs() -> Vec<ResourceDef> {
    builtins()
        .into_iter()
        .map(|b| {
            let mut fields = base_fields(b.namespaced);
            fields.extend(b.extra_fields.iter().map(|s| s.to_string()));
            ResourceDef {
                group: b.group.into(),
                version: b.version.into(),
                plural: b.plural.into(),
                singular: b.singular.into(),
                kind: b.kind.into(),
                namespaced: b.namespaced,
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                status_subresource: b.status,
                printer: b.printer,
                field_selectors: fields,
                schema: None,
                storage: StorageKey {
                    group: b.storage_group.into(),
                    plural: b.plural.into(),
                },
                conversion: b.conversion,
                crd_name: None,
            }
        })
        .collect()
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The served versions of a CRD as resource definitions (one per `served: true` version).
pub fn defs_from_crd(crd: &Value) -> Vec<ResourceDef> {
    let group = str_at(crd, "/spec/group").to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let plural = str_at(&names, "/plural").to_string();
    let kind = str_at(&names, "/kind").to_string();
    let singular = match str_at(&names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let namespaced = str_at(crd, "/spec/scope") != "Cluster";
    let crd_name = str_at(crd, "/metadata/name").to_string();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .map(|v| {
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: str_at(c, "/name").to_string(),
                            type_: str_at(c, "/type").to_string(),
                            format: str_at(c, "/format").to_string(),
                            description: str_at(c, "/description").to_string(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: str_at(c, "/jsonPath").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut fields = base_fields(namespaced);
            for f in v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let path = str_at(f, "/jsonPath").trim_start_matches('.').to_string();
                if !path.is_empty() {
                    fields.push(path);
                }
            }
            ResourceDef {
                group: group.clone(),
                version: str_at(v, "/name").to_string(),
                plural: plural.clone(),
                singular: singular.clone(),
                kind: kind.clone(),
                namespaced,
                short_names: str_list(names.get("shortNames")),
                categories: str_list(names.get("categories")),
                status_subresource: v.pointer("/subresources/status").is_some(),
                printer: Printer::Columns(columns),
                field_selectors: fields,
                schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
                storage: StorageKey {
                    group: group.clone(),
                    plural: plural.clone(),
                },
                conversion: Conversion::Identity,
                crd_name: Some(crd_name.clone()),
            }
        })
        .collect()
}

/// All served types, built-in first, then custom resources in creation order.
#[derive(Debug, Clone)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            defs: builtin_defs(),
        }
    }
}

impl Registry {
    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Replaces the types served for `crd` (an update may add, drop or change versions).
    pub fn set_crd(&mut self, crd: &Value) {
        let name = str_at(crd, "/metadata/name").to_string();
        self.remove_crd(&name);
        self.defs.extend(defs_from_crd(crd));
    }

    pub fn remove_crd(&mut self, name: &str) {
        self.defs.retain(|d| d.crd_name.as_deref() != Some(name));
    }

    /// Groups in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in &self.defs {
            if d.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| g == &d.group) {
                Some((_, versions)) => {
                    if !versions.contains(&d.version) {
                        versions.push(d.version.clone());
                    }
                }
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceDef> {
        self.defs
            .iter()
            .filter(move |d| d.group == group && d.version == version)
    }
}

/// Kubernetes version ordering: GA > beta > alpha, then by number (v2 > v1, v1beta2 > v1beta1).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_versions_become_served_types_with_columns_and_selectable_fields() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}},
                     "selectableFields": [{"jsonPath": ".spec.color"}],
                     "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"}]},
                    {"name": "v1beta1", "served": false, "storage": false}
                ]
            }
        });
        let defs = defs_from_crd(&crd);
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(d.singular, "widget");
        assert!(d.namespaced && d.status_subresource);
        assert_eq!(d.short_names, vec!["wd"]);
        assert!(d.field_selectors.contains(&"spec.color".to_string()));
        match &d.printer {
            Printer::Columns(c) => assert_eq!(c[0].json_path, ".spec.color"),
            other => panic!("unexpected printer {other:?}"),
        }
        let mut reg = Registry::default();
        reg.set_crd(&crd);
        assert!(reg.find("example.com", "v1", "widgets").is_some());
        reg.remove_crd("widgets.example.com");
        assert!(reg.find("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn versions_sort_ga_then_beta_then_alpha() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
