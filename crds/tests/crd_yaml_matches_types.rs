//! The committed CRD YAML must be exactly what the Rust types generate.
//! Regenerate with `make crds` (sets SNAPMEND_UPDATE_CRDS=1).

use std::path::PathBuf;

fn committed_paths() -> Vec<PathBuf> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    vec![
        crate_dir.join("snapshotrepair.yaml"),
        crate_dir.join("../deploy/crd/snapshotrepair.yaml"),
    ]
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    let generated = snapmend_crds::crd_yaml().expect("CRD serializes to YAML");
    let update = std::env::var_os("SNAPMEND_UPDATE_CRDS").is_some();
    for path in committed_paths() {
        if update {
            std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            std::fs::write(&path, &generated).expect("write CRD");
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

#[test]
fn crd_has_the_contract_names() {
    let yaml = snapmend_crds::crd_yaml().expect("yaml");
    let crd: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parse");
    assert_eq!(crd["metadata"]["name"], "snapshotrepairs.snapmend.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "sr");
    assert_eq!(crd["spec"]["names"]["categories"][0], "snapmend");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_mapping());
    assert_eq!(v["selectableFields"][0]["jsonPath"], ".spec.nodeName");
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_sequence()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        cols,
        ["Node", "Target", "Action", "Phase", "Findings", "Age"]
    );
    let text = serde_yaml::to_string(v).expect("yaml");
    assert!(
        text.contains("self == oldSelf"),
        "nodeName immutability rule"
    );
    assert!(
        text.contains("exactly one of image, sandboxImage and allImages"),
        "one-of rule"
    );
}
