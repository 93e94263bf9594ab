//! The registry credentials an automatic SnapshotRepair inherits from the failed pod: the
//! Secrets kubelet would use to pull the pod's images. kubelet uses the pod's
//! `imagePullSecrets`; the ServiceAccount admission plugin copies the ServiceAccount's into a
//! pod that has none, so for a pod without any (an API server without that plugin, or a
//! ServiceAccount changed later) the ServiceAccount's are used. Only names are handled here;
//! the operator reads the Secrets when the repair's first request is issued.

use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, ServiceAccount};
use kube::{Api, Client};
use snapmend_crds::PullSecretRef;
use tracing::debug;

/// The CRD's bound on `spec.pullSecrets`.
pub const MAX_PULL_SECRETS: usize = 16;

/// The pod's ServiceAccount, when its pull secrets are needed (the pod names none).
pub fn service_account_to_read(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if !names(spec.image_pull_secrets.as_deref()).is_empty() {
        return None;
    }
    Some(
        spec.service_account_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
    )
}

/// `spec.pullSecrets` for a repair of `pod`'s image: the pod's imagePullSecrets, else its
/// ServiceAccount's, in order, without repeats or empty names, at most [`MAX_PULL_SECRETS`].
pub fn pull_secrets_of(pod: &Pod, service_account: Option<&ServiceAccount>) -> Vec<PullSecretRef> {
    let Some(namespace) = pod.metadata.namespace.clone().filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let mut chosen = names(
        pod.spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_deref()),
    );
    if chosen.is_empty() {
        chosen = names(service_account.and_then(|sa| sa.image_pull_secrets.as_deref()));
    }
    chosen
        .into_iter()
        .take(MAX_PULL_SECRETS)
        .map(|name| PullSecretRef {
            namespace: namespace.clone(),
            name,
        })
        .collect()
}

fn names(refs: Option<&[LocalObjectReference]>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in refs.unwrap_or_default().iter().map(|r| r.name.as_str()) {
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// [`pull_secrets_of`] with the ServiceAccount read when needed. A ServiceAccount that cannot
/// be read adds nothing (the repair still runs with the node's own credentials).
pub async fn pull_secrets_for(client: &Client, pod: &Pod) -> Vec<PullSecretRef> {
    let service_account = match (
        service_account_to_read(pod),
        pod.metadata.namespace.as_deref(),
    ) {
        (Some(name), Some(namespace)) => {
            let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
            match api.get_opt(&name).await {
                Ok(sa) => sa,
                Err(error) => {
                    debug!(%error, service_account = %format!("{namespace}/{name}"), "cannot read the pod's ServiceAccount; no pull secrets from it");
                    None
                }
            }
        }
        _ => None,
    };
    pull_secrets_of(pod, service_account.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn sa(secrets: &[&str]) -> ServiceAccount {
        let refs: Vec<_> = secrets.iter().map(|n| json!({"name": n})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": "builder", "namespace": "shop"},
            "imagePullSecrets": refs,
        }))
        .unwrap()
    }

    fn named(refs: &[PullSecretRef]) -> Vec<String> {
        refs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_pods_own_pull_secrets_win_in_order_without_repeats() {
        let p = pod(json!({
            "containers": [],
            "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "b"}, {"name": "a"}, {"name": "b"}, {"name": ""}],
        }));
        assert_eq!(
            service_account_to_read(&p),
            None,
            "kubelet ignores the SA's then"
        );
        assert_eq!(
            named(&pull_secrets_of(&p, Some(&sa(&["x"])))),
            ["shop/b", "shop/a"]
        );
    }

    #[test]
    fn a_pod_without_any_uses_its_service_accounts() {
        let p = pod(json!({"containers": [], "serviceAccountName": "builder"}));
        assert_eq!(service_account_to_read(&p).as_deref(), Some("builder"));
        assert_eq!(
            named(&pull_secrets_of(&p, Some(&sa(&["x", "y"])))),
            ["shop/x", "shop/y"]
        );
        assert!(pull_secrets_of(&p, None).is_empty());
        let default_sa = pod(json!({"containers": [], "imagePullSecrets": []}));
        assert_eq!(
            service_account_to_read(&default_sa).as_deref(),
            Some("default")
        );
    }

    #[test]
    fn the_list_is_bounded_and_needs_a_namespace() {
        let many: Vec<_> = (0..40).map(|i| json!({"name": format!("s{i}")})).collect();
        let p = pod(json!({"containers": [], "imagePullSecrets": many}));
        assert_eq!(pull_secrets_of(&p, None).len(), MAX_PULL_SECRETS);
        let mut nameless = pod(json!({"containers": [], "imagePullSecrets": [{"name": "a"}]}));
        nameless.metadata.namespace = None;
        assert!(pull_secrets_of(&nameless, None).is_empty());
        let no_spec = Pod::default();
        assert_eq!(service_account_to_read(&no_spec), None);
    }
}
