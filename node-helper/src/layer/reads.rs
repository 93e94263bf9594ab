//! How often each layer was read by verification in this process: its blob streamed
//! (inflated and hashed) or its TOC loaded. A scan reports the difference across itself, the
//! proof that a layer many images share was read once (`ScanReport.layerReads`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use snapmend_crds::LayerReads;

use crate::image::ResolvedLayer;

/// Per (chainID, diffID): blob passes and TOC loads.
type Counts = BTreeMap<(String, String), (u64, u64)>;

static READS: Mutex<Counts> = Mutex::new(BTreeMap::new());

fn bump(layer: &ResolvedLayer, blob: u64, toc: u64) {
    let mut reads = READS.lock().unwrap_or_else(|p| p.into_inner());
    let e = reads
        .entry((layer.chain_id.clone(), layer.diff_id.clone()))
        .or_default();
    e.0 += blob;
    e.1 += toc;
}

/// One pass over the layer's blob.
pub fn count_blob_pass(layer: &ResolvedLayer) {
    bump(layer, 1, 0);
}

/// One verification with the layer's TOC (no blob read).
pub fn count_toc_load(layer: &ResolvedLayer) {
    bump(layer, 0, 1);
}

/// Every count so far.
pub fn snapshot() -> Counts {
    READS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What was read between two snapshots, by chainID then diffID; layers not read are left out.
pub fn since(before: &Counts, after: &Counts) -> Vec<LayerReads> {
    after
        .iter()
        .filter_map(|(k, &(blob, toc))| {
            let (b0, t0) = before.get(k).copied().unwrap_or_default();
            let (blob, toc) = (blob.saturating_sub(b0), toc.saturating_sub(t0));
            (blob + toc > 0).then(|| LayerReads {
                chain_id: k.0.clone(),
                diff_id: k.1.clone(),
                blob,
                toc,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_lists_only_what_was_read_in_between() {
        let k = |c: &str| (c.to_string(), format!("d-{c}"));
        let before = Counts::from([(k("a"), (1, 0)), (k("b"), (2, 3))]);
        let after = Counts::from([(k("a"), (1, 0)), (k("b"), (3, 3)), (k("c"), (0, 1))]);
        let got = since(&before, &after);
        assert_eq!(
            got,
            vec![
                LayerReads {
                    chain_id: "b".into(),
                    diff_id: "d-b".into(),
                    blob: 1,
                    toc: 0
                },
                LayerReads {
                    chain_id: "c".into(),
                    diff_id: "d-c".into(),
                    blob: 0,
                    toc: 1
                },
            ]
        );
    }
}
