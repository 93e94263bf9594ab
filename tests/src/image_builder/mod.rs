//! Test images built from scratch, byte for byte: layer tarballs with every kind of entry
//! containerd's applier handles, images in OCI and Docker schema2 form, multi-platform indexes,
//! and the OCI layout tarball that `ctr images import` reads. Everything is deterministic.

mod big_layer;
mod catalog;
mod oci_archive;
mod pause_binary;
pub mod random_layers;
pub mod raw_tar;
mod tar_layer;

use sha2::{Digest, Sha256};

pub use big_layer::{BigLayer, big_layer_file_size, write_big_layer_archive, write_big_layer_blob};
pub use catalog::{
    CAP_NET_BIND_SERVICE_XATTR, compressed_image, index_image, long_file_name, many_files_image,
    pause_image, rich_image, shared_base_images,
};
pub use oci_archive::{
    BuiltImage, IMAGE_NAME_ANNOTATION, ImageLayer, ImageSpec, ManifestStyle, Platform,
    write_oci_archive,
};
pub use pause_binary::pause_binary;
pub use tar_layer::{
    BuiltLayer, Compression, DEFAULT_MTIME, EntryBody, LayerSpec, TarEntry, build_layer, compress,
    write_tar,
};

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// ChainIDs of a list of diffIDs (OCI image spec): the first is the diffID itself, then
/// `sha256(parent_chain + " " + diff_id)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => digest_of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d = vec!["sha256:aa".to_string()];
        assert_eq!(chain_ids(&d), d);
    }

    #[test]
    fn chain_id_follows_the_image_spec_formula() {
        // Reference values computed with the OCI formula by hand (sha256 of "sha256:aa sha256:bb").
        let d = vec![
            "sha256:aa".to_string(),
            "sha256:bb".to_string(),
            "sha256:cc".to_string(),
        ];
        let c = chain_ids(&d);
        assert_eq!(c[1], digest_of(b"sha256:aa sha256:bb"));
        assert_eq!(c[2], digest_of(format!("{} sha256:cc", c[1]).as_bytes()));
        assert_eq!(chain_ids(&[]), Vec::<String>::new());
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
