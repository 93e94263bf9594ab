//! The `SnapshotRepair` custom resource (snapmend.io/v1alpha1, cluster-scoped, short name `sr`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::culprit::RepairCulprit;
use crate::report::Report;

/// What a person or the operator asks for: verify (read-only) or repair one image's snapshots on one node.
// Repeated `type_ = "string"` in printcolumn(...) are separate columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "snapmend.io",
    version = "v1alpha1",
    kind = "SnapshotRepair",
    plural = "snapshotrepairs",
    shortname = "sr",
    category = "snapmend",
    status = "SnapshotRepairStatus",
    derive = "PartialEq",
    doc = "Verify, and if needed repair, the containerd overlayfs snapshots of one image on one node",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.target",
        description = "the image, \"sandbox\" for the node's sandbox image, or \"all\" for every image"
    ),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Findings", type_ = "string", json_path = ".status.findings"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.nodeName"
)]
#[x_kube(validation = Rule::new("[has(self.image) && self.image != '', has(self.sandboxImage) && self.sandboxImage, has(self.allImages) && self.allImages].filter(x, x).size() == 1").message("exactly one of image, sandboxImage and allImages must be set"))]
// A target that changed after it was verified would be repaired unverified: the target is
// immutable, including whether `image` is set at all (the field rule below covers its value).
#[x_kube(validation = Rule::new("has(self.image) == has(oldSelf.image)").message("image is immutable: create a new SnapshotRepair for another target"))]
// The pull secrets are copied for the agent when the first request is issued; a later change
// would silently not apply, so they are immutable too (including whether they are set).
#[x_kube(validation = Rule::new("(has(self.sandboxImage) && self.sandboxImage) == (has(oldSelf.sandboxImage) && oldSelf.sandboxImage) && (has(self.allImages) && self.allImages) == (has(oldSelf.allImages) && oldSelf.allImages)").message("the target is immutable: create a new SnapshotRepair for another target"))]
#[x_kube(validation = Rule::new("has(self.pullSecrets) == has(oldSelf.pullSecrets)").message("pullSecrets is immutable: create a new SnapshotRepair"))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRepairSpec {
    /// The node whose snapshots are checked. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// Image name as containerd records it (a tag or a digest reference). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("image is immutable: create a new SnapshotRepair for another target"))]
    #[schemars(length(max = 1024))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// true: the node's configured sandbox (pause) image. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("sandboxImage is immutable: create a new SnapshotRepair for another target"))]
    #[serde(default)]
    pub sandbox_image: bool,
    /// true: every image of the node (a scan of the node's snapshot store). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("allImages is immutable: create a new SnapshotRepair for another target"))]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_images: bool,
    #[serde(default)]
    pub action: RepairAction,
    /// Cordon the node while repairing.
    #[serde(default = "default_true")]
    pub cordon: bool,
    #[serde(default)]
    pub content_check: ContentCheck,
    /// Secrets (type `kubernetes.io/dockerconfigjson`) with registry credentials for layer
    /// blobs the node lacks, e.g. a pod's imagePullSecrets. The operator reads them and hands
    /// the agent a merged copy; their contents never appear in status, events or logs. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("pullSecrets is immutable: create a new SnapshotRepair"))]
    #[schemars(length(max = 16))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<PullSecretRef>,
}

/// A Secret holding registry credentials, by namespace and name.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct PullSecretRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl std::fmt::Display for PullSecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn default_true() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RepairAction {
    Verify,
    #[default]
    Repair,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ContentCheck {
    /// Hash every regular file.
    #[default]
    Full,
    /// Compare metadata and sizes only.
    Metadata,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Verifying,
    Cordoning,
    Repairing,
    Uncordoning,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the node helper must do now; written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairRequest {
    /// Changes for every new request.
    pub id: String,
    pub action: RepairAction,
    /// The Secret (in the agent's own namespace) holding the merged docker config of
    /// `spec.pullSecrets`, which the agent adds to its registry credentials for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
}

/// The node helper's Report for one request; written by the agent only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestReport {
    pub request_id: String,
    #[serde(flatten)]
    pub report: Report,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRepairStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The image, or `sandbox` for the node's sandbox image (printer column Target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RepairRequest>,
    /// When the operator issued the current request; its age is measured against `--helper-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RequestReport>,
    /// true only if the operator changed the node's unschedulable from false to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned_by_operator: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who damaged the snapshot, as the node's culprit guard saw it: from the layer `culprit`
    /// of the report that found the damage (kept when a later report has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<RepairCulprit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

impl SnapshotRepairSpec {
    /// The Target column: the image, `sandbox`, or `all`.
    pub fn target(&self) -> String {
        if self.all_images {
            return "all".to_string();
        }
        match &self.image {
            Some(i) if !i.is_empty() && !self.sandbox_image => i.clone(),
            _ => "sandbox".to_string(),
        }
    }
}
