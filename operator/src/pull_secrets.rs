//! `spec.pullSecrets` handed to the agent: the operator (which may read Secrets cluster-wide)
//! reads each referenced Secret, merges their registry `auths` into ONE Secret in its own
//! namespace (`snapmend-pull-<repair>`, owned by the SnapshotRepair), names it in
//! `status.request.pullSecret`, and deletes it when the repair finishes. The agent may read
//! Secrets of that namespace only.
//!
//! Credentials never leave the Secret objects: messages name Secrets and keys, never values,
//! and parse errors give a position, not the text (serde's "invalid type: string …" would).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Map, Value};
use snapmend_crds::labels::{PULL_SECRET_FOR_LABEL, pull_secret_copy_name};
use snapmend_crds::{PullSecretRef, SnapshotRepair};
use tracing::{debug, info};

use crate::error::{Error, kube_context};
use crate::phases::PullSecretState;

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The legacy form kubelet still accepts: the `auths` map itself.
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
pub const DOCKERCFG_KEY: &str = ".dockercfg";
/// Field manager of the copy.
const MANAGER: &str = "snapmend-operator";

/// The parts of a referenced Secret the merge looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFacts<'a> {
    pub type_: Option<&'a str>,
    pub data: Option<&'a BTreeMap<String, ByteString>>,
}

impl<'a> SecretFacts<'a> {
    pub fn of(secret: &'a Secret) -> Self {
        SecretFacts {
            type_: secret.type_.as_deref(),
            data: secret.data.as_ref(),
        }
    }
}

/// The registry `auths` of one pull secret, checked for form only (the agent interprets the
/// entries exactly as it does `--auth` files).
pub fn auths_of(
    reference: &PullSecretRef,
    secret: &SecretFacts,
) -> Result<Map<String, Value>, String> {
    let type_ = secret.type_.unwrap_or("Opaque");
    let key = match type_ {
        DOCKER_CONFIG_JSON_TYPE => DOCKER_CONFIG_JSON_KEY,
        DOCKERCFG_TYPE => DOCKERCFG_KEY,
        other => {
            return Err(format!(
                "pull secret {reference} has type {other}; it must be {DOCKER_CONFIG_JSON_TYPE}"
            ));
        }
    };
    let bytes = secret
        .data
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("pull secret {reference} has no {key} key"))?;
    let doc: Value = serde_json::from_slice(&bytes.0).map_err(|e| {
        format!(
            "pull secret {reference}: {key} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let auths = if type_ == DOCKER_CONFIG_JSON_TYPE {
        doc.get("auths")
            .cloned()
            .unwrap_or(Value::Object(Map::new()))
    } else {
        doc
    };
    match auths {
        Value::Object(map) => Ok(map),
        _ => Err(format!(
            "pull secret {reference}: {key} must hold a JSON object of registry entries"
        )),
    }
}

/// One docker config.json holding the `auths` of every pull secret, in order; where two name
/// the same registry key the first keeps it (the pod's first pull secret, as kubelet tries
/// them in order).
pub fn merge(secrets: &[(PullSecretRef, SecretFacts)]) -> Result<Vec<u8>, String> {
    let mut auths = Map::new();
    for (reference, facts) in secrets {
        for (key, entry) in auths_of(reference, facts)? {
            auths.entry(key).or_insert(entry);
        }
    }
    let mut doc = Map::new();
    doc.insert("auths".into(), Value::Object(auths));
    serde_json::to_vec(&Value::Object(doc)).map_err(|e| format!("merging pull secrets: {e}"))
}

/// The copy for `repair`: type dockerconfigjson, labelled, owned by the SnapshotRepair (so
/// garbage collection removes it with the repair even if the operator never gets to).
pub fn copy_object(repair: &SnapshotRepair, namespace: &str, config: Vec<u8>) -> Secret {
    let name = repair.name_any();
    let mut labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGER.to_string(),
    )]);
    if crate::reconcile::is_label_value(&name) {
        labels.insert(PULL_SECRET_FOR_LABEL.to_string(), name.clone());
    }
    let owner = repair.meta().uid.clone().map(|uid| OwnerReference {
        api_version: SnapshotRepair::api_version(&()).to_string(),
        kind: SnapshotRepair::kind(&()).to_string(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(pull_secret_copy_name(&name)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some(DOCKER_CONFIG_JSON_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            ByteString(config),
        )])),
        ..Default::default()
    }
}

/// Reads the repair's pull secrets and writes the merged copy. A Secret that is missing,
/// forbidden or malformed makes the state `Unusable` (the repair fails saying which); other
/// API errors are returned and retried.
pub async fn prepare(
    client: &Client,
    repair: &SnapshotRepair,
    namespace: &str,
) -> Result<PullSecretState, Error> {
    if repair.spec.pull_secrets.is_empty() {
        return Ok(PullSecretState::NotRequested);
    }
    let mut secrets = Vec::new();
    for reference in &repair.spec.pull_secrets {
        let api = Api::<Secret>::namespaced(client.clone(), &reference.namespace);
        match api.get_opt(&reference.name).await {
            Ok(Some(secret)) => secrets.push((reference.clone(), secret)),
            Ok(None) => {
                return Ok(PullSecretState::Unusable(format!(
                    "pull secret {reference} not found"
                )));
            }
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Ok(PullSecretState::Unusable(format!(
                    "the operator may not read pull secret {reference} (forbidden)"
                )));
            }
            Err(source) => {
                return Err(kube_context("get", format!("pull secret {reference}"))(
                    source,
                ));
            }
        }
    }
    let facts: Vec<(PullSecretRef, SecretFacts)> = secrets
        .iter()
        .map(|(r, s)| (r.clone(), SecretFacts::of(s)))
        .collect();
    let config = match merge(&facts) {
        Ok(c) => c,
        Err(why) => return Ok(PullSecretState::Unusable(why)),
    };
    let copy = copy_object(repair, namespace, config);
    let name = copy.name_any();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&copy),
        )
        .await
        .map_err(kube_context("apply", format!("Secret {namespace}/{name}")))?;
    info!(secret = %format!("{namespace}/{name}"), sources = repair.spec.pull_secrets.len(), "pull secrets copied for the agent");
    Ok(PullSecretState::Ready(name))
}

/// Removes the copy of `repair`'s pull secrets; one that is already gone is fine.
pub async fn delete_copy(client: &Client, repair: &str, namespace: &str) -> Result<(), Error> {
    let name = pull_secret_copy_name(repair);
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            info!(secret = %format!("{namespace}/{name}"), "pull secret copy deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            debug!(secret = %format!("{namespace}/{name}"), "pull secret copy already gone");
            Ok(())
        }
        Err(source) => Err(kube_context("delete", format!("Secret {namespace}/{name}"))(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-pa55";

    fn reference(name: &str) -> PullSecretRef {
        PullSecretRef {
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn data(key: &str, json: &str) -> BTreeMap<String, ByteString> {
        BTreeMap::from([(key.to_string(), ByteString(json.as_bytes().to_vec()))])
    }

    fn facts<'a>(type_: &'a str, data: &'a BTreeMap<String, ByteString>) -> SecretFacts<'a> {
        SecretFacts {
            type_: Some(type_),
            data: Some(data),
        }
    }

    #[test]
    fn auths_of_every_secret_are_merged_first_one_wins() {
        let a = data(
            DOCKER_CONFIG_JSON_KEY,
            r#"{"auths":{"reg.example:5443":{"auth":"YTpi"},"other.example":{"username":"u","password":"p"}}}"#,
        );
        let b = data(
            DOCKER_CONFIG_JSON_KEY,
            r#"{"auths":{"reg.example:5443":{"auth":"ZZZZ"},"third.example":{"identitytoken":"t"}}}"#,
        );
        let legacy = data(DOCKERCFG_KEY, r#"{"legacy.example":{"auth":"bGc6cA=="}}"#);
        let merged = merge(&[
            (reference("a"), facts(DOCKER_CONFIG_JSON_TYPE, &a)),
            (reference("b"), facts(DOCKER_CONFIG_JSON_TYPE, &b)),
            (reference("c"), facts(DOCKERCFG_TYPE, &legacy)),
        ])
        .expect("merge");
        let doc: Value = serde_json::from_slice(&merged).expect("json");
        let auths = doc["auths"].as_object().expect("auths");
        assert_eq!(auths.len(), 4);
        assert_eq!(
            auths["reg.example:5443"]["auth"], "YTpi",
            "the first secret wins"
        );
        assert_eq!(auths["third.example"]["identitytoken"], "t");
        assert_eq!(auths["legacy.example"]["auth"], "bGc6cA==");
    }

    #[test]
    fn no_secrets_merge_to_an_empty_config() {
        let merged = merge(&[]).expect("merge");
        assert_eq!(merged, br#"{"auths":{}}"#);
        let empty = data(DOCKER_CONFIG_JSON_KEY, "{}");
        let merged = merge(&[(reference("a"), facts(DOCKER_CONFIG_JSON_TYPE, &empty))])
            .expect("a config without auths is empty, not wrong");
        assert_eq!(merged, br#"{"auths":{}}"#);
    }

    #[test]
    fn unusable_secrets_are_named_and_their_content_never_shown() {
        let opaque = data("password", PASSWORD);
        let why = merge(&[(reference("plain"), facts("Opaque", &opaque))]).unwrap_err();
        assert_eq!(
            why,
            "pull secret app/plain has type Opaque; it must be kubernetes.io/dockerconfigjson"
        );
        let untyped = SecretFacts {
            type_: None,
            data: Some(&opaque),
        };
        assert!(
            auths_of(&reference("u"), &untyped)
                .unwrap_err()
                .contains("type Opaque")
        );

        let wrong_key = data("config.json", "{}");
        let why =
            auths_of(&reference("k"), &facts(DOCKER_CONFIG_JSON_TYPE, &wrong_key)).unwrap_err();
        assert_eq!(why, "pull secret app/k has no .dockerconfigjson key");
        let no_data = SecretFacts {
            type_: Some(DOCKER_CONFIG_JSON_TYPE),
            data: None,
        };
        assert!(auths_of(&reference("n"), &no_data).is_err());

        // serde would quote the offending text; the message gives only its position.
        let broken = data(
            DOCKER_CONFIG_JSON_KEY,
            &format!(r#"{{"auths": "{PASSWORD}"#),
        );
        let why = auths_of(&reference("b"), &facts(DOCKER_CONFIG_JSON_TYPE, &broken)).unwrap_err();
        assert!(
            why.starts_with("pull secret app/b: .dockerconfigjson is not valid JSON (line 1"),
            "{why}"
        );
        assert!(!why.contains(PASSWORD), "{why}");
        let not_a_map = data(
            DOCKER_CONFIG_JSON_KEY,
            &format!(r#"{{"auths": "{PASSWORD}"}}"#),
        );
        let why =
            auths_of(&reference("m"), &facts(DOCKER_CONFIG_JSON_TYPE, &not_a_map)).unwrap_err();
        assert!(why.contains("must hold a JSON object"), "{why}");
        assert!(!why.contains(PASSWORD), "{why}");
    }

    #[test]
    fn the_copy_is_owned_labelled_and_typed() {
        let mut sr = SnapshotRepair::new(
            "auto-n1-abc",
            snapmend_crds::SnapshotRepairSpec {
                node_name: "n1".into(),
                image: Some("reg.example/app:1".into()),
                sandbox_image: false,
                all_images: false,
                action: snapmend_crds::RepairAction::Repair,
                cordon: true,
                content_check: snapmend_crds::ContentCheck::Full,
                pull_secrets: vec![reference("a")],
            },
        );
        sr.metadata.uid = Some("uid-1".into());
        let copy = copy_object(&sr, "snapmend-system", b"{}".to_vec());
        assert_eq!(
            copy.metadata.name.as_deref(),
            Some("snapmend-pull-auto-n1-abc")
        );
        assert_eq!(copy.metadata.namespace.as_deref(), Some("snapmend-system"));
        assert_eq!(copy.type_.as_deref(), Some(DOCKER_CONFIG_JSON_TYPE));
        assert_eq!(
            copy.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(PULL_SECRET_FOR_LABEL))
                .map(String::as_str),
            Some("auto-n1-abc")
        );
        let owner = &copy.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("SnapshotRepair", "uid-1")
        );
        assert_eq!(owner.api_version, "snapmend.io/v1alpha1");
        assert_eq!(
            copy.data
                .as_ref()
                .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
                .map(|b| b.0.as_slice()),
            Some(b"{}".as_slice())
        );
    }
}
