//! Bearer tokens: the admin token the sim writes into its kubeconfig, and ServiceAccount
//! tokens issued by the TokenRequest API (`kubectl create token SA --bound-object-kind Pod
//! --bound-object-name P`). A token bound to a Pod carries the Pod's node in its user's extra
//! and stops working once that Pod (same uid) is gone, as kube-apiserver's bound tokens do.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    EXTRA_CREDENTIAL_ID, EXTRA_NODE_NAME, EXTRA_NODE_UID, EXTRA_POD_NAME, EXTRA_POD_UID, UserInfo,
};
use crate::sim::cluster::Cluster;
use crate::sim::object::{meta_str, new_uid};
use crate::sim::status::{Cause, StatusError, Target};

/// The admin's user name in the kubeconfig, as kubeadm names it.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// kube-apiserver's default `--api-audiences` (the issuer of a kubeadm cluster).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The default and smallest lifetime kube-apiserver accepts (`expirationSeconds`).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// What a token's holder is bound to; the token stops working when this object is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    namespace: String,
    service_account: String,
    service_account_uid: String,
    pod: Option<(String, String)>,
}

#[derive(Debug, Clone)]
struct Issued {
    user: UserInfo,
    binding: Option<Binding>,
    expires: jiff::Timestamp,
}

/// The tokens the server accepts.
#[derive(Debug)]
pub struct Tokens {
    admin_token: String,
    issued: Mutex<HashMap<String, Issued>>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

/// An unguessable token string.
fn random_token() -> String {
    let mut h = Sha256::new();
    h.update(new_uid());
    h.update(new_uid());
    h.update(
        jiff::Timestamp::now()
            .as_nanosecond()
            .to_string()
            .as_bytes(),
    );
    hex::encode(h.finalize())
}

impl Tokens {
    pub fn new() -> Self {
        Self {
            admin_token: random_token(),
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// The token of a `system:masters` user, written into the kubeconfig.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn admin() -> UserInfo {
        UserInfo {
            username: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![
                super::rbac::MASTERS_GROUP.into(),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// Who holds `token`, or `None` (401): unknown, expired, or bound to an object that is
    /// gone (a deleted Pod or ServiceAccount, or a new one with the same name).
    pub fn authenticate(&self, cluster: &Cluster, token: &str) -> Option<UserInfo> {
        if token == self.admin_token {
            return Some(Self::admin());
        }
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()?;
        if issued.expires <= jiff::Timestamp::now() {
            return None;
        }
        if let Some(b) = &issued.binding {
            let sa = object(cluster, "serviceaccounts", &b.namespace, &b.service_account)?;
            if meta_str(&sa, "uid") != Some(b.service_account_uid.as_str()) {
                return None;
            }
            if let Some((pod, uid)) = &b.pod {
                let obj = object(cluster, "pods", &b.namespace, pod)?;
                if meta_str(&obj, "uid") != Some(uid.as_str())
                    || obj.pointer("/metadata/deletionTimestamp").is_some()
                {
                    return None;
                }
            }
        }
        Some(issued.user)
    }

    /// `POST /api/v1/namespaces/NS/serviceaccounts/SA/token`: a TokenRequest answered with
    /// its `status.token`, as kube-apiserver's TokenREST does.
    pub fn request_token(
        &self,
        cluster: &Cluster,
        namespace: &str,
        service_account: &str,
        body: &Value,
    ) -> Result<Value, StatusError> {
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        if !kind.is_empty() && kind != "TokenRequest" {
            return Err(StatusError::bad_request(format!(
                "the body of a token request must be a TokenRequest, not {kind}"
            )));
        }
        let sa =
            object(cluster, "serviceaccounts", namespace, service_account).ok_or_else(|| {
                StatusError::not_found(Target {
                    group: "",
                    kind: "serviceaccounts",
                    name: service_account,
                })
            })?;
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let seconds = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(invalid_token_request(
                service_account,
                "spec.expirationSeconds",
                "may not specify a duration less than 10 minutes",
            ));
        }
        let audiences = spec
            .get("audiences")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![json!(DEFAULT_AUDIENCE)]);
        let credential_id = new_uid();
        let mut user = UserInfo {
            username: format!("system:serviceaccount:{namespace}:{service_account}"),
            uid: meta_str(&sa, "uid").unwrap_or("").to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::from([(
                EXTRA_CREDENTIAL_ID.to_string(),
                vec![format!("JTI={credential_id}")],
            )]),
        };
        let mut binding = Binding {
            namespace: namespace.into(),
            service_account: service_account.into(),
            service_account_uid: user.uid.clone(),
            pod: None,
        };
        let mut bound_ref = Value::Null;
        if let Some(r) = spec.get("boundObjectRef").filter(|r| !r.is_null()) {
            let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if kind != "Pod" {
                return Err(invalid_token_request(
                    service_account,
                    "spec.boundObjectRef.kind",
                    &format!(
                        "Unsupported value: {kind:?}: supported values: \"Pod\" (this server binds tokens to Pods only)"
                    ),
                ));
            }
            let pod = object(cluster, "pods", namespace, name).ok_or_else(|| {
                StatusError::not_found(Target {
                    group: "",
                    kind: "pods",
                    name,
                })
            })?;
            let pod_uid = meta_str(&pod, "uid").unwrap_or("").to_string();
            if let Some(uid) = r
                .get("uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                && uid != pod_uid
            {
                return Err(StatusError::conflict(
                    Target {
                        group: "",
                        kind: "pods",
                        name,
                    },
                    &format!(
                        "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let pod_sa = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if pod_sa != service_account {
                return Err(StatusError::bad_request(format!(
                    "cannot bind token for serviceaccount {service_account:?} to pod running with different serviceaccount name."
                )));
            }
            user.extra
                .insert(EXTRA_POD_NAME.into(), vec![name.to_string()]);
            user.extra
                .insert(EXTRA_POD_UID.into(), vec![pod_uid.clone()]);
            if let Some(node) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                user.extra
                    .insert(EXTRA_NODE_NAME.into(), vec![node.to_string()]);
                if let Some(node_obj) = object(cluster, "nodes", "", node)
                    && let Some(node_uid) = meta_str(&node_obj, "uid")
                {
                    user.extra
                        .insert(EXTRA_NODE_UID.into(), vec![node_uid.to_string()]);
                }
            }
            bound_ref = json!({"kind": "Pod", "apiVersion": "v1", "name": name, "uid": pod_uid});
            binding.pod = Some((name.to_string(), pod_uid));
        }
        let expires = jiff::Timestamp::now()
            .checked_add(Duration::from_secs(seconds.unsigned_abs()))
            .map_err(|e| StatusError::internal(format!("token expiry: {e}")))?;
        let token = random_token();
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.clone(),
                Issued {
                    user,
                    binding: Some(binding),
                    expires,
                },
            );
        let mut out_spec = json!({"audiences": audiences, "expirationSeconds": seconds});
        if !bound_ref.is_null() {
            out_spec["boundObjectRef"] = bound_ref;
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": service_account, "namespace": namespace, "creationTimestamp": null},
            "spec": out_spec,
            "status": {
                "token": token,
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        }))
    }
}

fn invalid_token_request(name: &str, field: &str, why: &str) -> StatusError {
    StatusError::invalid(
        "TokenRequest.authentication.k8s.io",
        name,
        "authentication.k8s.io",
        "TokenRequest",
        &[Cause::new("FieldValueInvalid", field, why)],
    )
}

/// A core/v1 object from the store, if it exists.
fn object(cluster: &Cluster, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let def = cluster.registry().find("", "v1", plural).cloned()?;
    let ns = (!namespace.is_empty()).then_some(namespace);
    cluster.get(&def, ns, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::cluster::{ClusterConfig, WriteOptions};

    fn create(cluster: &Cluster, plural: &str, ns: Option<&str>, body: Value) -> Value {
        let def = cluster.registry().find("", "v1", plural).cloned().unwrap();
        cluster
            .create(&def, ns, body, &WriteOptions::default())
            .unwrap()
            .object
    }

    fn setup() -> (Cluster, Value) {
        let cluster = Cluster::new(ClusterConfig::default());
        create(
            &cluster,
            "nodes",
            None,
            json!({"metadata": {"name": "node-a"}}),
        );
        create(
            &cluster,
            "serviceaccounts",
            Some("default"),
            json!({"metadata": {"name": "agent"}}),
        );
        let pod = create(
            &cluster,
            "pods",
            Some("default"),
            json!({"metadata": {"name": "agent-1"}, "spec": {"nodeName": "node-a", "serviceAccountName": "agent", "containers": [{"name": "c", "image": "i"}]}}),
        );
        (cluster, pod)
    }

    #[test]
    fn pod_bound_tokens_carry_the_pods_node_and_die_with_the_pod() {
        let (cluster, pod) = setup();
        let tokens = Tokens::new();
        let req = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-1"}}});
        let answer = tokens
            .request_token(&cluster, "default", "agent", &req)
            .unwrap();
        let token = answer["status"]["token"].as_str().unwrap();
        let user = tokens.authenticate(&cluster, token).unwrap();
        assert_eq!(user.username, "system:serviceaccount:default:agent");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        assert_eq!(user.extra[EXTRA_NODE_NAME], ["node-a"]);
        assert_eq!(user.extra[EXTRA_POD_NAME], ["agent-1"]);
        assert_eq!(
            user.extra[EXTRA_POD_UID],
            [meta_str(&pod, "uid").unwrap().to_string()]
        );
        assert!(user.extra.contains_key(EXTRA_NODE_UID));
        assert!(tokens.authenticate(&cluster, "not-a-token").is_none());

        // The Pod goes and comes back with a new uid: the token is dead.
        let def = cluster.registry().find("", "v1", "pods").cloned().unwrap();
        cluster
            .delete(&def, Some("default"), "agent-1", &Value::Null, false)
            .unwrap();
        assert!(tokens.authenticate(&cluster, token).is_none());
        create(
            &cluster,
            "pods",
            Some("default"),
            json!({"metadata": {"name": "agent-1"}, "spec": {"nodeName": "node-a", "serviceAccountName": "agent", "containers": [{"name": "c", "image": "i"}]}}),
        );
        assert!(tokens.authenticate(&cluster, token).is_none());
    }

    #[test]
    fn token_requests_are_checked_like_kube_apiservers() {
        let (cluster, _) = setup();
        let tokens = Tokens::new();
        let e = tokens
            .request_token(&cluster, "default", "nobody", &json!({}))
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "serviceaccounts \"nobody\" not found")
        );
        let e = tokens
            .request_token(
                &cluster,
                "default",
                "agent",
                &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "missing"}}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 404);
        let e = tokens
            .request_token(
                &cluster,
                "default",
                "agent",
                &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "agent-1", "uid": "other"}}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 409);
        let e = tokens
            .request_token(
                &cluster,
                "default",
                "agent",
                &json!({"spec": {"expirationSeconds": 60}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        // An unbound token has no node.
        let answer = tokens
            .request_token(&cluster, "default", "agent", &json!({}))
            .unwrap();
        let user = tokens
            .authenticate(&cluster, answer["status"]["token"].as_str().unwrap())
            .unwrap();
        assert!(!user.extra.contains_key(EXTRA_NODE_NAME));
        assert_eq!(answer["spec"]["audiences"], json!([DEFAULT_AUDIENCE]));
    }
}
