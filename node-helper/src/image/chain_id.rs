//! ChainIDs: the identity of a stack of layers, and containerd's key for the committed
//! snapshot of that stack (containerd-layout.md §5.7).

use sha2::{Digest as _, Sha256};

/// `chain[0] = diff_ids[0]`; `chain[i] = sha256(chain[i-1] + " " + diff_ids[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}")))
            ),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE_DIFF_ID: &str =
        "sha256:eedaef6ad9d9eccdb4a91112defae7c6f82fb597578f28721cccbacfbd30392f";

    #[test]
    fn a_single_layer_chain_id_is_its_diff_id() {
        // containerd-layout.md §9: pause:3.9 diff_id = chainID
        assert_eq!(
            chain_ids(&[PAUSE_DIFF_ID.to_string()]),
            vec![PAUSE_DIFF_ID.to_string()]
        );
    }

    #[test]
    fn later_chain_ids_hash_parent_space_diff_id() {
        let a =
            "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string();
        let b =
            "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_string();
        let c =
            "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc".to_string();
        let chain = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let expect1 = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        let expect2 = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{expect1} {c}")))
        );
        assert_eq!(chain, vec![a, expect1, expect2]);
        assert!(chain_ids(&[]).is_empty());
    }
}
