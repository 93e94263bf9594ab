//! The lock-free bolt reader against a running containerd that keeps writing meta.db:
//! every read must return a consistent tree (never block on containerd's flock, never fail
//! or return a torn copy), and must see the namespaces containerd committed.

// Test helpers: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use snapmend_node_helper::bolt::{BoltDb, Bucket, MetaDb};

struct Containerd {
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_containerd(dir: &Path) -> Containerd {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{d}/containerd.sock\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("containerd must be installed (make deps)");
    let guard = Containerd { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("containerd.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "containerd did not start; see {}",
            dir.join("containerd.log").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

fn ctr(dir: &Path, args: &[&str]) {
    let sock = dir.join("containerd.sock");
    let status = Command::new("ctr")
        .arg("-a")
        .arg(&sock)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "ctr {:?} failed",
        &args[..args.len().min(3)]
    );
}

#[test]
fn reads_stay_consistent_while_containerd_writes() {
    let tmp = tempfile::Builder::new()
        .prefix("snapmend-bolt-live")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    let _containerd = start_containerd(dir);
    ctr(dir, &["namespaces", "create", "stable"]);
    let meta_db = dir.join("root/io.containerd.metadata.v1.bolt/meta.db");

    let writing = AtomicBool::new(true);
    let (reads, distinct_txids) = std::thread::scope(|s| {
        s.spawn(|| {
            // Each ctr call is one or more committed write transactions on meta.db.
            for i in 0..25 {
                let ns = format!("churn-{i}");
                ctr(dir, &["namespaces", "create", &ns, "a=b"]);
                ctr(dir, &["namespaces", "label", &ns, "c=d"]);
                ctr(dir, &["namespaces", "remove", &ns]);
            }
            writing.store(false, Ordering::SeqCst);
        });
        let mut reads = 0u32;
        let mut txids = std::collections::BTreeSet::new();
        while writing.load(Ordering::SeqCst) {
            let db = BoltDb::read(&meta_db).expect("a read while containerd writes");
            txids.insert(db.txid);
            let meta = MetaDb::from_bolt(db);
            assert!(meta.namespaces().contains(&"stable".to_string()));
            assert_eq!(meta.schema_version(), Some(3));
            reads += 1;
        }
        (reads, txids.len())
    });
    eprintln!("{reads} consistent reads across {distinct_txids} committed transactions");
    assert!(
        reads > 10 && distinct_txids > 10,
        "the test must overlap reads with writes"
    );

    let after = MetaDb::from_bolt(BoltDb::read(&meta_db).unwrap());
    assert!(!after.namespaces().iter().any(|n| n.starts_with("churn-")));
}

/// Pages containerd wrote itself: a bucket big enough to need branch pages, and a value big
/// enough to need overflow pages.
#[test]
fn branch_and_overflow_pages_written_by_containerd_decode() {
    let tmp = tempfile::Builder::new()
        .prefix("snapmend-bolt-pages")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    let _containerd = start_containerd(dir);
    // containerd caps one label at 4 KiB; two 3000-byte labels overflow a 4 KiB leaf.
    let big = "x".repeat(3000);
    let (a, b) = (format!("a={big}"), format!("b={big}"));
    ctr(dir, &["namespaces", "create", "big", &a, &b]);
    for i in 0..150 {
        ctr(dir, &["namespaces", "create", &format!("ns-{i:03}")]);
    }
    let db = BoltDb::read(&dir.join("root/io.containerd.metadata.v1.bolt/meta.db")).unwrap();
    let v1: &Bucket = db.root.bucket(b"v1").unwrap();
    assert_eq!(v1.buckets().count(), 151);
    let labels = v1.path(&[b"big", b"labels"]).unwrap();
    assert_eq!(labels.get_str(b"a"), Some(big.as_str()));
    assert_eq!(labels.get_str(b"b"), Some(big.as_str()));
    // 151 namespace entries (~40 bytes each) cannot fit one 4 KiB leaf: bolt split them.
    let raw = std::fs::read(dir.join("root/io.containerd.metadata.v1.bolt/meta.db")).unwrap();
    let has_branch = raw
        .chunks(4096)
        .skip(2)
        .any(|p| u16::from_le_bytes([p[8], p[9]]) == 0x01);
    let has_overflow = raw
        .chunks(4096)
        .skip(2)
        .any(|p| u32::from_le_bytes([p[12], p[13], p[14], p[15]]) > 0);
    assert!(
        has_branch && has_overflow,
        "branch {has_branch}, overflow {has_overflow}"
    );
}
