//! `snapmend-sim --auth`: who a request comes from (bearer tokens: the admin token of the
//! kubeconfig and ServiceAccount tokens from the TokenRequest API), what RBAC lets it do, and
//! which ValidatingAdmissionPolicies its writes must pass, as kube-apiserver decides them.
//! Without `--auth` none of this runs and every request is allowed.

pub mod admission;
pub mod bootstrap;
pub mod rbac;
pub mod tokens;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::status::StatusError;
pub use rbac::{Action, Policy, ResourceAttributes};
pub use tokens::Tokens;

/// An authenticated user, as kube-apiserver's `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The `userInfo` of an admission request or a review.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// The extra keys kube-apiserver (1.32+) puts into a Pod-bound ServiceAccount token's user.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// 401, worded and shaped as kube-apiserver answers a request without valid credentials.
pub fn unauthorized() -> StatusError {
    StatusError {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }
}

/// 403 for an action RBAC does not allow, worded as kube-apiserver's `forbiddenMessage`.
pub fn forbidden(user: &UserInfo, action: &Action, path: &str) -> StatusError {
    match action {
        Action::NonResource { verb, .. } => StatusError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "forbidden: User {:?} cannot {verb} path {path:?}",
                user.username
            ),
            details: Some(json!({})),
        },
        Action::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            let why = format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                user.username, r.verb, r.group
            );
            forbidden_on(&r.group, &r.resource, &r.name, &why)
        }
    }
}

/// `errors.NewForbidden(groupResource, name, why)`.
pub fn forbidden_on(group: &str, resource: &str, name: &str, why: &str) -> StatusError {
    let gr = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if name.is_empty() {
        format!("{gr} is forbidden: {why}")
    } else {
        format!("{gr} {name:?} is forbidden: {why}")
    };
    let mut details = json!({"group": group, "kind": resource});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    StatusError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
    }
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa_user() -> UserInfo {
        UserInfo {
            username: "system:serviceaccount:snapmend-system:snapmend-node-helper".into(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn forbidden_messages_are_worded_as_kube_apiserver_words_them() {
        let cluster_scoped = Action::Resource(ResourceAttributes {
            verb: "patch".into(),
            group: "snapmend.io".into(),
            resource: "snapshotrepairs".into(),
            subresource: "status".into(),
            name: "r1".into(),
            ..ResourceAttributes::default()
        });
        let e = forbidden(&sa_user(), &cluster_scoped, "/x");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "snapshotrepairs.snapmend.io \"r1\" is forbidden: User \"system:serviceaccount:snapmend-system:snapmend-node-helper\" cannot patch resource \"snapshotrepairs/status\" in API group \"snapmend.io\" at the cluster scope"
        );
        let namespaced_list = Action::Resource(ResourceAttributes {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: "kube-system".into(),
            ..ResourceAttributes::default()
        });
        assert_eq!(
            forbidden(&sa_user(), &namespaced_list, "/x").message,
            "secrets is forbidden: User \"system:serviceaccount:snapmend-system:snapmend-node-helper\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        );
        let path = Action::NonResource {
            path: "/metrics".into(),
            verb: "get".into(),
        };
        assert_eq!(
            forbidden(&sa_user(), &path, "/metrics").message,
            "forbidden: User \"system:serviceaccount:snapmend-system:snapmend-node-helper\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }
}
