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
        "Group" => user.groups.iter().any(|g| *g == s.name),
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
                && (names.is_empty() || names.iter().any(|n| *n == r.name))
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
