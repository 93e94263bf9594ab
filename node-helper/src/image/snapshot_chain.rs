//! Cross-checks a layer's snapshot records against the image's layer order. A record that
//! lost its parent would otherwise look like a base layer, and the base-layer rules turn an
//! upper layer's whiteouts into deletions: the one way a repair could make a healthy snapshot
//! worse. Pure; `resolve` gathers the facts and turns a mismatch into `Error::SnapshotChain`.

use crate::store::bolt::Recorded;

/// What the two databases record for the snapshot of layer `index`.
#[derive(Clone, Copy, Debug)]
pub struct RecordedChain<'a> {
    /// chainID of the layer below; `None` for layer 0.
    pub parent_chain_id: Option<&'a str>,
    /// `parent` of the snapshot in meta.db (a snapshot key, i.e. a chainID).
    pub meta_parent: &'a Recorded,
    /// The snapshotter backend key meta.db records for the layer below, when it has one.
    pub parent_backend_key: Option<&'a str>,
    /// `parent` of the snapshot in the snapshotter's metadata.db (a backend key).
    pub backend_parent: &'a Recorded,
}

/// Which record disagrees, with what the image needs and what is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainMismatch {
    /// `meta.db` or the snapshotter's `metadata.db`.
    pub in_snapshotter_db: bool,
    pub expected: String,
    pub recorded: String,
}

/// The snapshotter's `<namespace>/<N>/<key>` names snapshot `key`.
fn backend_key_names(backend_key: &str, key: &str) -> bool {
    let mut parts = backend_key.splitn(3, '/');
    let (Some(ns), Some(n), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !ns.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && name == key
}

/// Both parents agree with the image's layer order.
pub fn check_recorded_parents(r: &RecordedChain<'_>) -> Result<(), ChainMismatch> {
    let meta_ok = match (r.parent_chain_id, r.meta_parent) {
        (None, Recorded::Absent) => true,
        (Some(want), Recorded::Text(got)) => got == want,
        _ => false,
    };
    if !meta_ok {
        return Err(ChainMismatch {
            in_snapshotter_db: false,
            expected: r
                .parent_chain_id
                .map_or("none".into(), |p| format!("{p:?}")),
            recorded: r.meta_parent.describe(),
        });
    }
    let backend_ok = match (r.parent_chain_id, r.backend_parent) {
        (None, Recorded::Absent) => true,
        (Some(want), Recorded::Text(got)) => match r.parent_backend_key {
            Some(key) => got == key,
            None => backend_key_names(got, want),
        },
        _ => false,
    };
    if !backend_ok {
        let expected = match (r.parent_chain_id, r.parent_backend_key) {
            (None, _) => "none".into(),
            (Some(_), Some(key)) => format!("{key:?}"),
            (Some(want), None) => format!("\"<namespace>/<N>/{want}\""),
        };
        return Err(ChainMismatch {
            in_snapshotter_db: true,
            expected,
            recorded: r.backend_parent.describe(),
        });
    }
    Ok(())
}

/// The snapshotter's chain below the snapshot has as many snapshots as layers below it.
pub fn check_chain_length(index: usize, lowers: usize) -> Result<(), ChainMismatch> {
    if index == lowers {
        return Ok(());
    }
    Err(ChainMismatch {
        in_snapshotter_db: true,
        expected: format!("{index} lower snapshots"),
        recorded: format!("{lowers} lower snapshots"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "sha256:aaaa";
    const BASE_KEY: &str = "k8s.io/1/sha256:aaaa";

    fn text(t: &str) -> Recorded {
        Recorded::Text(t.into())
    }

    fn upper<'a>(
        meta: &'a Recorded,
        backend: &'a Recorded,
        key: Option<&'a str>,
    ) -> RecordedChain<'a> {
        RecordedChain {
            parent_chain_id: Some(BASE),
            meta_parent: meta,
            parent_backend_key: key,
            backend_parent: backend,
        }
    }

    #[test]
    fn consistent_records_pass() {
        let base = RecordedChain {
            parent_chain_id: None,
            meta_parent: &Recorded::Absent,
            parent_backend_key: None,
            backend_parent: &Recorded::Absent,
        };
        assert_eq!(check_recorded_parents(&base), Ok(()));
        let (m, b) = (text(BASE), text(BASE_KEY));
        assert_eq!(
            check_recorded_parents(&upper(&m, &b, Some(BASE_KEY))),
            Ok(())
        );
        // The layer below has no meta.db record: the backend key must still name its chainID.
        assert_eq!(check_recorded_parents(&upper(&m, &b, None)), Ok(()));
    }

    #[test]
    fn a_lost_snapshotter_parent_is_a_mismatch_not_a_base_layer() {
        let m = text(BASE);
        for backend in [
            Recorded::Absent,
            Recorded::NotText(vec![0xff, 0xfe]),
            text("k8s.io/9/sha256:other"),
            text("sha256:aaaa"),
            text("k8s.io/x/sha256:aaaa"),
            text(""),
        ] {
            let e = check_recorded_parents(&upper(&m, &backend, None)).unwrap_err();
            assert!(e.in_snapshotter_db, "{backend:?}");
            assert_eq!(e.recorded, backend.describe());
            assert_eq!(e.expected, "\"<namespace>/<N>/sha256:aaaa\"");
        }
        let e = check_recorded_parents(&upper(&m, &text("k8s.io/2/sha256:aaaa"), Some(BASE_KEY)))
            .unwrap_err();
        assert_eq!(e.expected, format!("{BASE_KEY:?}"));
        assert_eq!(e.recorded, "\"k8s.io/2/sha256:aaaa\"");
    }

    #[test]
    fn a_wrong_or_lost_meta_parent_is_a_mismatch() {
        let b = text(BASE_KEY);
        for meta in [
            Recorded::Absent,
            text("sha256:bbbb"),
            Recorded::NotText(vec![0x80]),
        ] {
            let e = check_recorded_parents(&upper(&meta, &b, Some(BASE_KEY))).unwrap_err();
            assert!(!e.in_snapshotter_db);
            assert_eq!(e.expected, "\"sha256:aaaa\"");
        }
    }

    #[test]
    fn a_base_layer_with_a_parent_is_a_mismatch() {
        let p = text(BASE_KEY);
        let base = RecordedChain {
            parent_chain_id: None,
            meta_parent: &Recorded::Absent,
            parent_backend_key: None,
            backend_parent: &p,
        };
        let e = check_recorded_parents(&base).unwrap_err();
        assert_eq!((e.expected.as_str(), e.in_snapshotter_db), ("none", true));
        let m = text(BASE);
        let base = RecordedChain {
            meta_parent: &m,
            backend_parent: &Recorded::Absent,
            ..base
        };
        assert!(!check_recorded_parents(&base).unwrap_err().in_snapshotter_db);
    }

    #[test]
    fn chain_length_must_equal_the_layer_index() {
        assert_eq!(check_chain_length(0, 0), Ok(()));
        assert_eq!(check_chain_length(3, 3), Ok(()));
        let e = check_chain_length(2, 1).unwrap_err();
        assert_eq!(e.expected, "2 lower snapshots");
        assert_eq!(e.recorded, "1 lower snapshots");
    }

    #[test]
    fn recorded_values_are_described_boundedly() {
        assert!(Recorded::NotText(vec![0xff; 100]).describe().contains("…)"));
        assert!(text(&"x".repeat(10_000)).describe().len() < 400);
    }
}
