//! RBAC authorization, as kube-apiserver's RBAC authorizer decides: the rules of every
//! ClusterRoleBinding, and of the RoleBindings in the request's namespace, whose subjects
//! name the user (User), one of its groups (Group) or its ServiceAccount. Pure: the caller
//! passes the roles and bindings it read from the store. No aggregation (aggregated
//! ClusterRoles are evaluated with the rules they hold).

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};

use super::UserInfo;

/// What a request asks to do, as the API server's RequestInfo describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Resource(ResourceAttributes),
    NonResource { path: String, verb: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests and for lists across all namespaces.
    pub namespace: String,
    /// Empty for lists, watches, and creates without a name.
    pub name: String,
}

impl Action {
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource { verb, .. } => verb,
        }
    }
}

/// The RBAC objects the authorizer reads.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

/// The group whose members every request is allowed for, as kube-apiserver's
/// privileged-group authorizer does before RBAC.
pub const MASTERS_GROUP: &str = "system:masters";

impl Policy {
    /// Whether RBAC allows `action` for `user`.
    pub fn allows(&self, user: &UserInfo, action: &Action) -> bool {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return true;
        }
        self.applicable_rules(user, action)
            .any(|rule| rule_allows(rule, action))
    }

    /// The rules bound to `user` that apply where `action` happens: cluster-wide bindings
    /// always, RoleBindings of the request's namespace for namespaced resource requests.
    fn applicable_rules<'a>(
        &'a self,
        user: &'a UserInfo,
        action: &'a Action,
    ) -> impl Iterator<Item = &'a PolicyRule> + 'a {
        let cluster = self
            .cluster_role_bindings
            .iter()
            .filter(move |b| {
                b.subjects
                    .iter()
                    .flatten()
                    .any(|s| subject_matches(s, user, ""))
            })
            .flat_map(move |b| self.cluster_role_rules(&b.role_ref.name));
        let namespace = match action {
            Action::Resource(r) if !r.namespace.is_empty() => r.namespace.as_str(),
            _ => "",
        };
        let namespaced = self
            .role_bindings
            .iter()
            .filter(move |b| {
                !namespace.is_empty() && b.metadata.namespace.as_deref() == Some(namespace)
            })
            .filter(move |b| {
                b.subjects
                    .iter()
                    .flatten()
                    .any(|s| subject_matches(s, user, namespace))
            })
            .flat_map(move |b| match b.role_ref.kind.as_str() {
                "ClusterRole" => self.cluster_role_rules(&b.role_ref.name),
                "Role" => self.role_rules(namespace, &b.role_ref.name),
                _ => &[],
            });
        cluster.chain(namespaced)
    }

    fn cluster_role_rules(&self, name: &str) -> &[PolicyRule] {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules.as_deref())
            .unwrap_or(&[])
    }

    fn role_rules(&self, namespace: &str, name: &str) -> &[PolicyRule] {
        self.roles
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(name)
                    && r.metadata.namespace.as_deref() == Some(namespace)
            })
            .and_then(|r| r.rules.as_deref())
            .unwrap_or(&[])
    }
}

/// Whether a binding subject names the user. A ServiceAccount subject without a namespace
/// means the binding's own namespace, as in kube-apiserver's `appliesToUser`.
fn subject_matches(
    s: &k8s_openapi::api::rbac::v1::Subject,
    user: &UserInfo,
    binding_namespace: &str,
) -> bool {
    match s.kind.as_str() {
        "User" => user.username == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user.username == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// Whether one PolicyRule allows the action (rbac/v1 `RuleAllows`).
pub fn rule_allows(rule: &PolicyRule, action: &Action) -> bool {
    if !has(&rule.verbs, action.verb()) {
        return false;
    }
    match action {
        Action::Resource(r) => {
            let groups = rule.api_groups.as_deref().unwrap_or(&[]);
            let resources = rule.resources.as_deref().unwrap_or(&[]);
            let names = rule.resource_names.as_deref().unwrap_or(&[]);
            has(groups, &r.group)
                && resource_matches(resources, &r.resource, &r.subresource)
                && (names.is_empty() || names.contains(&r.name))
        }
        Action::NonResource { path, .. } => rule
            .non_resource_urls
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|u| non_resource_url_matches(u, path)),
    }
}

/// `resource`, `resource/subresource`, `*`, or `*/subresource` (rbac/v1 `ResourceMatches`).
fn resource_matches(rule_resources: &[String], resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule_resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// An exact path, `*`, or a prefix ending in `*` (rbac/v1 `NonResourceURLMatches`).
fn non_resource_url_matches(rule_url: &str, path: &str) -> bool {
    if rule_url == "*" || rule_url == path {
        return true;
    }
    rule_url
        .strip_suffix('*')
        .is_some_and(|prefix| path.starts_with(prefix))
}

/// Cases from the Kubernetes documentation, "Using RBAC Authorization"
/// (kubernetes.io/docs/reference/access-authn-authz/rbac/).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn role(ns: &str, name: &str, rules: Value) -> Role {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}))
            .unwrap()
    }
    fn cluster_role(name: &str, rules: Value) -> ClusterRole {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    }
    fn role_binding(ns: &str, kind: &str, role: &str, subjects: Value) -> RoleBinding {
        serde_json::from_value(
            json!({"metadata": {"name": format!("b-{role}"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": subjects}),
        )
        .unwrap()
    }
    fn cluster_role_binding(role: &str, subjects: Value) -> ClusterRoleBinding {
        serde_json::from_value(json!({"metadata": {"name": format!("b-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}))
        .unwrap()
    }
    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }
    fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Action {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        Action::Resource(ResourceAttributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }
    fn path(verb: &str, p: &str) -> Action {
        Action::NonResource {
            path: p.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn a_role_binding_grants_its_role_in_its_namespace_only() {
        // "pod-reader" Role bound to User jane in "default" ("read-pods").
        let policy = Policy {
            roles: vec![role(
                "default",
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]}]),
            )],
            role_bindings: vec![role_binding(
                "default",
                "Role",
                "pod-reader",
                json!([{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]),
            )],
            ..Policy::default()
        };
        let jane = user("jane", &["system:authenticated"]);
        assert!(policy.allows(&jane, &res("get", "", "pods", "default", "p")));
        assert!(policy.allows(&jane, &res("list", "", "pods", "default", "")));
        assert!(policy.allows(&jane, &res("watch", "", "pods", "default", "")));
        assert!(!policy.allows(&jane, &res("create", "", "pods", "default", "")));
        assert!(!policy.allows(&jane, &res("get", "", "pods", "kube-system", "p")));
        assert!(!policy.allows(&jane, &res("list", "", "pods", "", "")));
        assert!(!policy.allows(&jane, &res("get", "apps", "pods", "default", "p")));
        assert!(!policy.allows(&user("bob", &[]), &res("get", "", "pods", "default", "p")));
    }

    #[test]
    fn a_cluster_role_is_namespaced_by_a_role_binding_and_global_by_a_cluster_role_binding() {
        // "secret-reader": RoleBinding "read-secrets" (dave, development) and
        // ClusterRoleBinding "read-secrets-global" (Group manager).
        let reader = cluster_role(
            "secret-reader",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]),
        );
        let policy = Policy {
            cluster_roles: vec![reader],
            role_bindings: vec![role_binding(
                "development",
                "ClusterRole",
                "secret-reader",
                json!([{"kind": "User", "name": "dave", "apiGroup": "rbac.authorization.k8s.io"}]),
            )],
            cluster_role_bindings: vec![cluster_role_binding(
                "secret-reader",
                json!([{"kind": "Group", "name": "manager", "apiGroup": "rbac.authorization.k8s.io"}]),
            )],
            ..Policy::default()
        };
        let dave = user("dave", &[]);
        assert!(policy.allows(&dave, &res("get", "", "secrets", "development", "s")));
        assert!(!policy.allows(&dave, &res("get", "", "secrets", "default", "s")));
        assert!(!policy.allows(&dave, &res("list", "", "secrets", "", "")));
        let manager = user("carol", &["manager"]);
        assert!(policy.allows(&manager, &res("get", "", "secrets", "default", "s")));
        assert!(policy.allows(&manager, &res("list", "", "secrets", "", "")));
        assert!(!policy.allows(&manager, &res("delete", "", "secrets", "default", "s")));
    }

    #[test]
    fn subresources_must_be_named_as_resource_slash_subresource() {
        // "pod-and-pod-logs-reader": resources ["pods", "pods/log"].
        let rule: PolicyRule = serde_json::from_value(
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}),
        )
        .unwrap();
        assert!(rule_allows(
            &rule,
            &res("get", "", "pods/log", "default", "p")
        ));
        assert!(rule_allows(&rule, &res("get", "", "pods", "default", "p")));
        assert!(!rule_allows(
            &rule,
            &res("get", "", "pods/exec", "default", "p")
        ));
        assert!(!rule_allows(
            &rule,
            &res("get", "", "pods/status", "default", "p")
        ));
        // "*" is every resource and subresource; "*/scale" any resource's scale subresource.
        let any: PolicyRule =
            serde_json::from_value(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))
                .unwrap();
        assert!(rule_allows(
            &any,
            &res("patch", "snapmend.io", "snapshotrepairs/status", "", "r")
        ));
        let scale: PolicyRule = serde_json::from_value(
            json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]}),
        )
        .unwrap();
        assert!(rule_allows(
            &scale,
            &res("update", "apps", "deployments/scale", "d", "x")
        ));
        assert!(!rule_allows(
            &scale,
            &res("update", "apps", "deployments", "d", "x")
        ));
    }

    #[test]
    fn resource_names_restrict_requests_that_name_an_object() {
        // "configmap-updater": resourceNames ["my-configmap"], verbs update and get.
        let rule: PolicyRule = serde_json::from_value(json!({"apiGroups": [""],
            "resources": ["configmaps"], "resourceNames": ["my-configmap"], "verbs": ["update", "get"]}))
        .unwrap();
        assert!(rule_allows(
            &rule,
            &res("update", "", "configmaps", "default", "my-configmap")
        ));
        assert!(rule_allows(
            &rule,
            &res("get", "", "configmaps", "default", "my-configmap")
        ));
        assert!(!rule_allows(
            &rule,
            &res("update", "", "configmaps", "default", "other")
        ));
        // A list, or a create (no name in the URL), cannot be restricted by name.
        let list_rule: PolicyRule = serde_json::from_value(json!({"apiGroups": [""],
            "resources": ["configmaps"], "resourceNames": ["my-configmap"], "verbs": ["list", "create"]}))
        .unwrap();
        assert!(!rule_allows(
            &list_rule,
            &res("list", "", "configmaps", "default", "")
        ));
        assert!(!rule_allows(
            &list_rule,
            &res("create", "", "configmaps", "default", "")
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_a_trailing_star() {
        // `/healthz` and `/healthz/*` ("a '*' in a nonResourceURL is a suffix glob match").
        let rule: PolicyRule = serde_json::from_value(
            json!({"nonResourceURLs": ["/healthz", "/healthz/*"], "verbs": ["get", "post"]}),
        )
        .unwrap();
        assert!(rule_allows(&rule, &path("get", "/healthz")));
        assert!(rule_allows(&rule, &path("post", "/healthz/ready")));
        assert!(!rule_allows(&rule, &path("get", "/healthzx")));
        assert!(!rule_allows(&rule, &path("delete", "/healthz")));
        assert!(!rule_allows(&rule, &path("get", "/metrics")));
        // Resource rules never allow paths, and path rules never allow resources.
        assert!(!rule_allows(&rule, &res("get", "", "healthz", "", "")));
    }

    #[test]
    fn service_account_subjects_and_groups_name_service_accounts() {
        // "the default service account in the kube-system namespace", "all service accounts in
        // the qa namespace" and "all service accounts in any namespace".
        let reader = cluster_role(
            "view-pods",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        );
        let sa = |ns: &str, name: &str| {
            user(
                &format!("system:serviceaccount:{ns}:{name}"),
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{ns}"),
                    "system:authenticated",
                ],
            )
        };
        let get = res("get", "", "pods", "qa", "p");
        let one = Policy {
            cluster_roles: vec![reader.clone()],
            cluster_role_bindings: vec![cluster_role_binding(
                "view-pods",
                json!([{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]),
            )],
            ..Policy::default()
        };
        assert!(one.allows(&sa("kube-system", "default"), &get));
        assert!(!one.allows(&sa("kube-system", "other"), &get));
        assert!(!one.allows(&sa("qa", "default"), &get));
        // A RoleBinding's ServiceAccount subject without a namespace is in the binding's.
        let in_binding_ns = Policy {
            cluster_roles: vec![reader.clone()],
            role_bindings: vec![role_binding(
                "qa",
                "ClusterRole",
                "view-pods",
                json!([{"kind": "ServiceAccount", "name": "default"}]),
            )],
            ..Policy::default()
        };
        assert!(in_binding_ns.allows(&sa("qa", "default"), &get));
        let qa = Policy {
            cluster_roles: vec![reader.clone()],
            cluster_role_bindings: vec![cluster_role_binding(
                "view-pods",
                json!([{"kind": "Group", "name": "system:serviceaccounts:qa", "apiGroup": "rbac.authorization.k8s.io"}]),
            )],
            ..Policy::default()
        };
        assert!(qa.allows(&sa("qa", "anyone"), &get));
        assert!(!qa.allows(&sa("dev", "anyone"), &get));
        assert!(!qa.allows(&user("system:serviceaccount:qa:x", &[]), &get));
    }

    #[test]
    fn system_masters_may_do_anything_and_missing_roles_grant_nothing() {
        let policy = Policy {
            cluster_role_bindings: vec![cluster_role_binding(
                "does-not-exist",
                json!([{"kind": "User", "name": "eve"}]),
            )],
            ..Policy::default()
        };
        let admin = user("kubernetes-admin", &["system:masters"]);
        assert!(policy.allows(&admin, &res("delete", "", "nodes", "", "n")));
        assert!(policy.allows(&admin, &path("get", "/metrics")));
        assert!(!policy.allows(&user("eve", &[]), &res("get", "", "pods", "default", "p")));
    }
}
