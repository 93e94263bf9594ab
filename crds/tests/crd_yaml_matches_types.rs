//! The committed CRD YAML must be exactly what the Rust types generate.
//! Regenerate with `make crds` (sets SNAPMEND_UPDATE_CRDS=1).

use std::path::PathBuf;

/// Each CRD with the generated YAML and where it is committed.
type Generated = (&'static str, fn() -> Result<String, serde_yaml::Error>);
const CRDS: [Generated; 2] = [
    ("snapshotrepair.yaml", snapmend_crds::crd_yaml),
    ("snapshotscan.yaml", snapmend_crds::scan_crd_yaml),
];

fn committed_paths(file: &str) -> Vec<PathBuf> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    vec![
        crate_dir.join(file),
        crate_dir.join("../deploy/crd").join(file),
    ]
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    for (file, generate) in CRDS {
        check_or_update(file, &generate().expect("CRD serializes to YAML"));
    }
}

fn check_or_update(file: &str, generated: &str) {
    let update = std::env::var_os("SNAPMEND_UPDATE_CRDS").is_some();
    for path in committed_paths(file) {
        if update {
            std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            std::fs::write(&path, generated).expect("write CRD");
            continue;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        assert!(
            committed == generated,
            "{} drifted from the Rust types; run `make crds` and commit the result",
            path.display()
        );
    }
}

/// The names, scope, version, status subresource and printer columns the contract fixes;
/// returns the version for further checks.
fn assert_contract_shape(
    yaml: &str,
    name: &str,
    short: &str,
    columns: &[&str],
) -> serde_yaml::Value {
    let crd: serde_yaml::Value = serde_yaml::from_str(yaml).expect("parse");
    assert_eq!(crd["metadata"]["name"], name);
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], short);
    assert_eq!(crd["spec"]["names"]["categories"][0], "snapmend");
    let v = crd["spec"]["versions"][0].clone();
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_mapping());
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_sequence()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(cols, columns);
    v
}

#[test]
fn crd_has_the_contract_names() {
    let yaml = snapmend_crds::crd_yaml().expect("yaml");
    let v = assert_contract_shape(
        &yaml,
        "snapshotrepairs.snapmend.io",
        "sr",
        &["Node", "Target", "Action", "Phase", "Findings", "Age"],
    );
    assert_eq!(v["selectableFields"][0]["jsonPath"], ".spec.nodeName");
    let text = serde_yaml::to_string(&v).expect("yaml");
    assert!(
        text.contains("self == oldSelf"),
        "nodeName immutability rule"
    );
    assert!(
        text.contains("exactly one of image, sandboxImage and allImages"),
        "one-of rule"
    );
}

#[test]
fn scan_crd_has_the_contract_names_columns_and_defaults() {
    let yaml = snapmend_crds::scan_crd_yaml().expect("yaml");
    let v = assert_contract_shape(
        &yaml,
        "snapshotscans.snapmend.io",
        "sscan",
        &["Schedule", "Action", "Last Run", "Nodes", "Damaged", "Age"],
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"][0], "schedule");
    let p = &spec["properties"];
    assert_eq!(p["schedule"]["pattern"], r"^\s*\S+(\s+\S+){4}\s*$");
    assert_eq!(p["action"]["default"], "Verify");
    assert_eq!(p["contentCheck"]["default"], "Metadata");
    assert_eq!(p["maxConcurrentNodes"]["default"], 1);
    assert_eq!(p["maxConcurrentNodes"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(p["historyLimit"]["default"], 3);
    assert_eq!(p["suspend"]["default"], false);
    assert!(p["nodeSelector"]["properties"]["matchLabels"].is_mapping());
}
