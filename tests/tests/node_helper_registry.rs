//! Issue 13: verify and repair when the layer blobs are not on the node, fetched from the
//! image's registry. Real parts: Debian's `docker-registry` on loopback with a generated CA,
//! TLS and htpasswd basic auth (and an anonymous one as a mirror), images pushed with Debian's
//! `skopeo`, a private containerd whose layer blobs are removed with `ctr content rm`, and
//! the real `snapmend-node-helper` binary. A tiny registry double serves wrong bytes and drops
//! connections mid-blob.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use snapmend_crds::{BlobSource, BlobState, LayerState, Outcome, Report};
use snapmend_tests::containerd::{ContainerdFixture, CriPlugin, FixtureOptions};
use snapmend_tests::cri::{CriAuth, pull_image};
use snapmend_tests::fs_tree::{capture_tree, tar_mtime_paths};
use snapmend_tests::image_builder::{ImageSpec, pause_image, rich_image, write_oci_archive};
use snapmend_tests::node_helper_cli::{
    HelperRun, NodeHelper, PristineImage, PristineLayer, Scenario, flip_blob_byte,
};
use snapmend_tests::registry::{
    Blackhole, BlobMode, BlobServer, Registry, TestCa, free_port, write_docker_config,
    write_hosts_toml,
};

const PAUSE: &str = "snapmend.test/pause:3.10";
const RICH: &str = "snapmend.test/rich:1";
const USER: &str = "snapmend";
const PASSWORD: &str = "Pa55-w0rd-never-printed";
const WRONG: &str = "wrong-pa55-never-printed";

/// Every output of every run, to prove no credential was ever printed.
#[derive(Default)]
struct Outputs(Vec<String>);

impl Outputs {
    fn keep(&mut self, run: HelperRun) -> HelperRun {
        self.0.push(format!("{}\n{}", run.stdout, run.stderr));
        run
    }

    fn assert_no_credentials(&self) {
        let b64 = |s: &str| {
            // base64 of user:password as it would appear in a header or config.
            let mut out = String::new();
            let t = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for c in s.as_bytes().chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
                    if i <= c.len() {
                        out.push(t[(n >> shift) as usize & 63] as char);
                    }
                }
            }
            out
        };
        let secrets = [
            PASSWORD.to_string(),
            WRONG.to_string(),
            b64(&format!("{USER}:{PASSWORD}")),
            b64(&format!("{USER}:{WRONG}")),
        ];
        assert!(!self.0.is_empty(), "no runs recorded");
        for out in &self.0 {
            for s in &secrets {
                assert!(
                    !out.contains(s.as_str()),
                    "a credential was printed:\n{out}"
                );
            }
        }
    }
}

fn run(
    s: &Scenario,
    outputs: &mut Outputs,
    subcommand: &str,
    image: &str,
    extra: &[&str],
) -> HelperRun {
    let mut args = vec!["--image", image, "--json"];
    args.extend_from_slice(extra);
    // Debug logging on: the logs must not carry credentials either.
    let out = s
        .helper
        .command(subcommand, &args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let mut all = vec![subcommand.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    outputs.keep(HelperRun {
        args: all,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn report(r: &HelperRun) -> Report {
    r.report().unwrap_or_else(|e| panic!("{e}"))
}

/// Removes every layer blob of the images from the content store, as `discard_unpacked_layers`
/// or a cleanup script would.
fn remove_layer_blobs(s: &Scenario) {
    for image in &s.images {
        for layer in &image.layers {
            s.fixture.ctr(&["content", "rm", layer.digest()]).unwrap();
        }
    }
    // `content rm` drops the records; a synchronous garbage collection deletes the files.
    s.fixture.settle().unwrap();
    for image in &s.images {
        for layer in &image.layers {
            assert!(!s.fixture.blob_path(layer.digest()).exists());
        }
    }
}

/// Deletes the first regular file (in name order) of a layer's snapshot; returns its path.
fn delete_a_file(fs: &Path) -> PathBuf {
    let mut pending = vec![fs.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let t = e.file_type().unwrap();
            if t.is_file() {
                std::fs::remove_file(e.path()).unwrap();
                return e.path();
            }
            if t.is_dir() {
                pending.push(e.path());
            }
        }
    }
    panic!("no regular file in {}", fs.display())
}

fn archive(spec: &ImageSpec, path: &Path) -> PathBuf {
    write_oci_archive(std::slice::from_ref(spec), path).unwrap();
    path.to_path_buf()
}

fn assert_nothing_written(p: &PristineImage, before: &[String]) {
    assert_eq!(
        p.differences_now().unwrap(),
        before,
        "the snapshots changed"
    );
}

#[test]
fn blobs_come_from_a_tls_registry_with_basic_auth_through_containerds_hosts() {
    let work = tempfile::Builder::new()
        .prefix("snapmend-reg-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let ca = TestCa::generate(&w.join("ca")).unwrap();
    let main = Registry::start(&w.join("main"), &ca, Some((USER, PASSWORD))).unwrap();
    // Anonymous, and without the images: a mirror that lacks the blobs.
    let mirror = Registry::start(&w.join("mirror"), &ca, None).unwrap();

    let pause = pause_image(PAUSE).unwrap();
    let rich = rich_image(RICH).unwrap();
    // The same image under the registry's own name, for the credential provider plugin
    // (kubelet's plugins answer for the image's own registry).
    let by_host = format!("{}/pause:3.10", main.host());
    let pause_by_host = pause_image(&by_host).unwrap();
    main.push(&archive(&pause, &w.join("pause.tar")), "pause:3.10", &ca)
        .unwrap();
    main.push(&archive(&rich, &w.join("rich.tar")), "rich:1", &ca)
        .unwrap();

    let s = Scenario::start(&[pause, rich, pause_by_host]).unwrap();
    let pristine_pause = s.capture_pristine(PAUSE).unwrap();
    let pristine_rich = s.capture_pristine(RICH).unwrap();
    remove_layer_blobs(&s);

    let hosts = write_hosts_toml(
        &w.join("certs.d"),
        "snapmend.test",
        &format!(
            "server = \"https://{main}\"\nca = \"{ca}\"\n\n[host.\"https://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            main = main.host(),
            mirror = mirror.host(),
            ca = ca.ca_cert().display()
        ),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap().to_string();
    let good = w.join("good.json");
    let bad = w.join("bad.json");
    write_docker_config(&good, &main.host(), USER, PASSWORD).unwrap();
    write_docker_config(&bad, &main.host(), USER, WRONG).unwrap();
    let (good, bad) = (
        good.to_str().unwrap().to_string(),
        bad.to_str().unwrap().to_string(),
    );
    let cache = w.join("cache");
    let cache = cache.to_str().unwrap().to_string();
    let mut outputs = Outputs::default();
    let fetch = |auth: &str, cache_dir: &str| -> Vec<String> {
        [
            "--registry-config",
            hosts.as_str(),
            "--auth",
            auth,
            "--cache-dir",
            cache_dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // --fetch never: today's behaviour, the blobs are Missing and no registry is asked.
    let never = run(
        &s,
        &mut outputs,
        "verify",
        PAUSE,
        &[
            "--fetch",
            "never",
            "--registry-config",
            &hosts,
            "--auth",
            &good,
        ],
    );
    assert_eq!(never.code, Some(1), "{never}");
    let r = report(&never);
    assert!(
        r.layers
            .iter()
            .all(|l| l.blob == BlobState::Missing && l.blob_source.is_none()),
        "{never}"
    );

    // Verify from the registry: the mirror answers 404, the server has it.
    for image in [PAUSE, RICH] {
        let v = fetch(&good, "none");
        let ok = run(&s, &mut outputs, "verify", image, &args(&v));
        assert_eq!(ok.code, Some(0), "{ok}");
        let r = report(&ok);
        assert_eq!(r.outcome, Outcome::Healthy, "{ok}");
        let repo = image
            .trim_start_matches("snapmend.test/")
            .split(':')
            .next()
            .unwrap();
        for l in &r.layers {
            assert_eq!(l.blob, BlobState::Verified, "{ok}");
            assert_eq!(l.blob_source, Some(BlobSource::Registry), "{ok}");
            assert_eq!(
                l.fetched_from.as_deref(),
                Some(format!("{}/{repo}", main.host()).as_str()),
                "{ok}"
            );
            let detail = l.blob_detail.as_deref().unwrap_or_default();
            assert!(
                detail.contains(&format!("{}: 404 Not Found", mirror.host())),
                "{ok}"
            );
        }
    }

    // Damage: the incident's /pause, and a file in the rich image's zstd layer.
    std::fs::remove_file(pristine_pause.layers[0].fs.join("pause")).unwrap();
    delete_a_file(&pristine_rich.layers[1].fs);
    let damaged_pause = pristine_pause.differences_now().unwrap();
    let damaged_rich = pristine_rich.differences_now().unwrap();
    assert!(!damaged_pause.is_empty() && !damaged_rich.is_empty());

    // Wrong credentials: exit 1, the registry and its 401 named, nothing written.
    let v = fetch(&bad, &cache);
    let denied = run(&s, &mut outputs, "verify", PAUSE, &args(&v));
    assert_eq!(denied.code, Some(1), "{denied}");
    let r = report(&denied);
    let detail = r.layers[0].blob_detail.clone().unwrap_or_default();
    assert!(
        detail.contains(&format!("{}: 401 Unauthorized", main.host())),
        "{denied}"
    );
    assert_eq!(r.layers[0].blob, BlobState::Missing, "{denied}");
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("401 Unauthorized"),
        "{denied}"
    );
    let denied = run(&s, &mut outputs, "repair", PAUSE, &args(&v));
    assert_eq!(denied.code, Some(1), "{denied}");
    assert_eq!(report(&denied).outcome, Outcome::Unrepairable, "{denied}");
    assert_nothing_written(&pristine_pause, &damaged_pause);
    assert!(
        !Path::new(&cache).exists(),
        "a refused download left files in the cache"
    );

    // Repair from the registry: equal to containerd's own unpack; blobs land in the cache.
    for (image, pristine) in [(PAUSE, &pristine_pause), (RICH, &pristine_rich)] {
        let v = fetch(&good, &cache);
        let fixed = run(&s, &mut outputs, "repair", image, &args(&v));
        assert_eq!(fixed.code, Some(0), "{fixed}");
        let r = report(&fixed);
        assert_eq!(r.outcome, Outcome::Repaired, "{fixed}");
        assert!(
            r.layers.iter().any(|l| l.state == LayerState::Repaired),
            "{fixed}"
        );
        assert!(
            r.layers
                .iter()
                .all(|l| l.blob_source == Some(BlobSource::Registry)),
            "{fixed}"
        );
        let diffs = pristine.differences_now().unwrap();
        assert!(
            diffs.is_empty(),
            "repaired tree differs from containerd's unpack:\n{}",
            diffs.join("\n")
        );
    }

    // The cache serves the next verification; no registry needed (wrong credentials, even).
    let v = fetch(&bad, &cache);
    let cached = run(&s, &mut outputs, "verify", RICH, &args(&v));
    assert_eq!(cached.code, Some(0), "{cached}");
    assert!(
        report(&cached)
            .layers
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Cache)),
        "{cached}"
    );

    // kubelet's credential provider exec plugin supplies the credentials (no docker config).
    let plugins = w.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::write(
        plugins.join("test-provider"),
        format!(
            "#!/bin/sh\ncat >/dev/null\necho '{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"5m\",\"auth\":{{\"{}\":{{\"username\":\"{USER}\",\"password\":\"{PASSWORD}\"}}}}}}'\n",
            main.host()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        plugins.join("test-provider"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let provider_config = w.join("credential-providers.yaml");
    // kubelet matches ports exactly and globs host labels.
    std::fs::write(
        &provider_config,
        format!("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: test-provider\n    matchImages: [\"*.0.0.1:{}\"]\n    defaultCacheDuration: 1m\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", main.addr.port()),
    )
    .unwrap();
    write_hosts_toml(
        &w.join("certs.d"),
        &main.host(),
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\n",
            main.host(),
            ca.ca_cert().display()
        ),
    )
    .unwrap();
    let empty = w.join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let plugin = run(
        &s,
        &mut outputs,
        "verify",
        &by_host,
        &[
            "--registry-config",
            &hosts,
            "--auth",
            empty.to_str().unwrap(),
            "--cache-dir",
            "none",
            "--credential-provider-config",
            provider_config.to_str().unwrap(),
            "--credential-provider-bin-dir",
            plugins.to_str().unwrap(),
        ],
    );
    assert_eq!(plugin.code, Some(0), "{plugin}");
    let r = report(&plugin);
    assert!(
        r.layers
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Registry)),
        "{plugin}"
    );
    assert_eq!(
        r.layers[0].fetched_from.as_deref(),
        Some(format!("{}/pause", main.host()).as_str())
    );

    // containerd's config.toml `config_path` is found without --registry-config.
    let config = s.fixture.config_path();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{hosts}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let from_config = run(
        &s,
        &mut outputs,
        "verify",
        PAUSE,
        &["--auth", &good, "--cache-dir", "none"],
    );
    assert_eq!(from_config.code, Some(0), "{from_config}");
    assert_eq!(
        report(&from_config).layers[0].blob_source,
        Some(BlobSource::Registry),
        "{from_config}"
    );

    // Fetched blobs never go into containerd's content store.
    for image in &s.images {
        for layer in &image.layers {
            assert!(
                !s.fixture.blob_path(layer.digest()).exists(),
                "{} was written to the content store",
                layer.digest()
            );
        }
    }
    outputs.assert_no_credentials();
}

#[test]
fn a_registry_that_tampers_or_drops_the_connection_gets_nothing_written() {
    let rich = rich_image(RICH).unwrap();
    let s = Scenario::start(&[rich]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    let blobs: Vec<(String, Vec<u8>)> = s.images[0]
        .layers
        .iter()
        .map(|l| (l.digest().to_string(), l.built.blob.clone()))
        .collect();
    let server = BlobServer::start(blobs).unwrap();
    let work = tempfile::tempdir().unwrap();
    let hosts = write_hosts_toml(
        &work.path().join("certs.d"),
        "snapmend.test",
        &format!("server = \"http://{}\"\n", server.host()),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap().to_string();
    let none_auth = work.path().join("empty.json");
    std::fs::write(&none_auth, "{}").unwrap();
    let none_auth = none_auth.to_str().unwrap().to_string();
    let args = [
        "--registry-config",
        hosts.as_str(),
        "--auth",
        none_auth.as_str(),
        "--cache-dir",
        "none",
    ];
    let mut outputs = Outputs::default();

    // A corrupt blob in the content store: the registry's copy is used instead.
    flip_blob_byte(&s.fixture.blob_path(s.images[0].layers[0].digest())).unwrap();
    let healed = run(&s, &mut outputs, "verify", RICH, &args);
    assert_eq!(healed.code, Some(0), "{healed}");
    let r = report(&healed);
    assert_eq!(
        r.layers[0].blob_source,
        Some(BlobSource::Registry),
        "{healed}"
    );
    assert!(
        r.layers[0]
            .blob_detail
            .as_deref()
            .unwrap_or_default()
            .contains("content store: DigestMismatch"),
        "{healed}"
    );
    assert!(
        r.layers[1..]
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Local)),
        "{healed}"
    );

    remove_layer_blobs(&s);
    delete_a_file(&pristine.layers[0].fs);
    delete_a_file(&pristine.layers[1].fs);
    let damaged = pristine.differences_now().unwrap();

    // Bytes of another blob: DigestMismatch, named, nothing written.
    server.set_mode(BlobMode::Tampered);
    let tampered = run(&s, &mut outputs, "repair", RICH, &args);
    assert_eq!(tampered.code, Some(1), "{tampered}");
    let r = report(&tampered);
    assert_eq!(r.outcome, Outcome::Unrepairable, "{tampered}");
    for l in &r.layers {
        assert_eq!(l.blob, BlobState::DigestMismatch, "{tampered}");
        let detail = l.blob_detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(&server.host()) && detail.contains("DigestMismatch"),
            "{tampered}"
        );
    }
    assert_nothing_written(&pristine, &damaged);

    // The connection drops mid-blob on every attempt: a clear error, nothing written.
    server.set_mode(BlobMode::DropMidBlob);
    let before = server.requests.lock().unwrap().len();
    let dropped = run(&s, &mut outputs, "repair", RICH, &args);
    assert_eq!(dropped.code, Some(1), "{dropped}");
    let r = report(&dropped);
    for l in &r.layers {
        assert_eq!(l.blob, BlobState::Missing, "{dropped}");
        let detail = l.blob_detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(&format!("{}: connection failed after", server.host())),
            "{dropped}"
        );
    }
    let attempts = server.requests.lock().unwrap().len() - before;
    assert_eq!(
        attempts,
        3 * r.layers.len(),
        "each blob retried from byte 0, 3 attempts"
    );
    assert_nothing_written(&pristine, &damaged);

    // The registry recovers: the rerun repairs everything, equal to containerd's unpack.
    server.set_mode(BlobMode::Honest);
    let fixed = run(&s, &mut outputs, "repair", RICH, &args);
    assert_eq!(fixed.code, Some(0), "{fixed}");
    assert_eq!(report(&fixed).outcome, Outcome::Repaired, "{fixed}");
    let diffs = pristine.differences_now().unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // Requests to a server that is not the image's host say which upstream they are for.
    assert!(
        server
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|p| p.ends_with("?ns=snapmend.test"))
    );

    // `scan` fetches too: every image of the namespace, its blobs from the registry.
    let out = s
        .helper
        .command(
            "scan",
            &[
                "--json",
                "--registry-config",
                &hosts,
                "--auth",
                &none_auth,
                "--cache-dir",
                "none",
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    outputs
        .0
        .push(format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let scan: snapmend_crds::ScanReport =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(scan.images.len(), 1, "{text}");
    assert_eq!(scan.images[0].outcome, Outcome::Healthy, "{text}");
    assert!(
        scan.images[0]
            .layers
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Registry)),
        "{text}"
    );

    // A registry with a token service: the bearer challenge is answered with the basic
    // credentials of the docker config; wrong ones are named as the token endpoint's 401.
    let blobs: Vec<(String, Vec<u8>)> = s.images[0]
        .layers
        .iter()
        .map(|l| (l.digest().to_string(), l.built.blob.clone()))
        .collect();
    let token = (
        USER.to_string(),
        PASSWORD.to_string(),
        "t0ken-never-printed".to_string(),
    );
    let bearer = BlobServer::start_with_token(blobs, Some(token)).unwrap();
    let hosts = write_hosts_toml(
        &work.path().join("bearer.d"),
        "snapmend.test",
        &format!("server = \"http://{}\"\n", bearer.host()),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap().to_string();
    for (password, code) in [(WRONG, 1), (PASSWORD, 0)] {
        let auth = work.path().join("bearer.json");
        write_docker_config(&auth, &bearer.host(), USER, password).unwrap();
        let auth = auth.to_str().unwrap().to_string();
        let v = run(
            &s,
            &mut outputs,
            "verify",
            RICH,
            &[
                "--registry-config",
                &hosts,
                "--auth",
                &auth,
                "--cache-dir",
                "none",
            ],
        );
        assert_eq!(v.code, Some(code), "{v}");
        let r = report(&v);
        if code == 0 {
            assert!(
                r.layers
                    .iter()
                    .all(|l| l.blob_source == Some(BlobSource::Registry)),
                "{v}"
            );
        } else {
            let detail = r.layers[0].blob_detail.as_deref().unwrap_or_default();
            assert!(
                detail.contains(&format!("{}: token: 401 Unauthorized", bearer.host())),
                "{v}"
            );
        }
    }
    assert!(outputs.0.iter().all(|o| !o.contains("t0ken-never-printed")));
    outputs.assert_no_credentials();
}

/// containerd's host rules that decide how, and how long, a host is tried: `dial_timeout`
/// bounds the wait for a host that never answers a connect, a refusing host is left at once,
/// and an `http://` host with TLS settings (or a loopback registry without any hosts.toml) is
/// tried over https first and over http when the server answers the handshake in plain http.
#[test]
fn plain_http_registries_and_unreachable_hosts_as_containerd_tries_them() {
    let work = tempfile::Builder::new()
        .prefix("snapmend-reg-http-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let plain = Registry::start_plain_http(&w.join("plain"), None).unwrap();
    let pause = pause_image(PAUSE).unwrap();
    let by_host = format!("{}/pause:3.10", plain.host());
    let pause_by_host = pause_image(&by_host).unwrap();
    plain
        .push_plain_http(&archive(&pause, &w.join("pause.tar")), "pause:3.10")
        .unwrap();
    let s = Scenario::start(&[pause, pause_by_host]).unwrap();
    let pristine = s.capture_pristine(PAUSE).unwrap();
    remove_layer_blobs(&s);

    let blackhole = Blackhole::start().unwrap();
    let refused = format!("127.0.0.1:{}", free_port().unwrap());
    let hosts = write_hosts_toml(
        &w.join("certs.d"),
        "snapmend.test",
        &format!(
            "server = \"http://{plain}\"\nskip_verify = true\n\n\
             [host.\"https://{blackhole}\"]\n  capabilities = [\"pull\"]\n  dial_timeout = \"300ms\"\n\n\
             [host.\"http://{refused}\"]\n  capabilities = [\"pull\"]\n",
            plain = plain.host(),
            blackhole = blackhole.host(),
        ),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap().to_string();
    let empty = w.join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let fetch_args = [
        "--registry-config",
        hosts.as_str(),
        "--auth",
        empty.to_str().unwrap(),
        "--cache-dir",
        "none",
    ];
    let mut outputs = Outputs::default();

    // The blackholed host costs its dial_timeout, the refusing one nothing; the plain-http
    // server, configured with TLS settings, answers the https attempt in http and serves.
    let started = std::time::Instant::now();
    let ok = run(&s, &mut outputs, "verify", PAUSE, &fetch_args);
    let took = started.elapsed();
    assert_eq!(ok.code, Some(0), "{ok}");
    let r = report(&ok);
    assert_eq!(r.outcome, Outcome::Healthy, "{ok}");
    for l in &r.layers {
        assert_eq!(l.blob_source, Some(BlobSource::Registry), "{ok}");
        assert_eq!(
            l.fetched_from.as_deref(),
            Some(format!("{}/pause", plain.host()).as_str()),
            "{ok}"
        );
        let detail = l.blob_detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(&format!(
                "{}: no connection within 300ms (dial_timeout)",
                blackhole.host()
            )),
            "{ok}"
        );
        assert!(detail.contains(&format!("{refused}: ")), "{ok}");
    }
    // Without dial_timeout the blackholed host alone would hold each layer 15 s.
    assert!(
        took < std::time::Duration::from_secs(8),
        "verify took {took:?}: {ok}"
    );
    assert!(
        ok.stderr.contains("answered https in plain http"),
        "the fallback is logged: {ok}"
    );

    // Damaged, then repaired from the plain-http registry: equal to containerd's unpack.
    std::fs::remove_file(pristine.layers[0].fs.join("pause")).unwrap();
    let fixed = run(&s, &mut outputs, "repair", PAUSE, &fetch_args);
    assert_eq!(fixed.code, Some(0), "{fixed}");
    assert_eq!(report(&fixed).outcome, Outcome::Repaired, "{fixed}");
    let diffs = pristine.differences_now().unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // A loopback registry named by the image itself, with no hosts.toml: containerd's
    // default for it is https without verification, then http.
    let default = run(&s, &mut outputs, "verify", &by_host, &fetch_args);
    assert_eq!(default.code, Some(0), "{default}");
    let r = report(&default);
    assert!(
        r.layers
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Registry)
                && l.fetched_from.as_deref() == Some(format!("{}/pause", plain.host()).as_str())),
        "{default}"
    );
    outputs.assert_no_credentials();
}

/// The EKS node: containerd's CRI with `discard_unpacked_layers = true` pulls the images
/// itself, through its hosts directory, from the TLS registry with basic auth passed in the
/// CRI AuthConfig as kubelet passes a pull secret. The layer blobs are really gone; the helper
/// finds the registry from containerd's own config.toml, verifies from it, and repairs a
/// damaged snapshot to what containerd's unpack produced.
#[test]
fn a_cri_node_that_discards_unpacked_layers_is_verified_and_repaired_from_the_registry() {
    let work = tempfile::Builder::new()
        .prefix("snapmend-reg-cri-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let ca = TestCa::generate(&w.join("ca")).unwrap();
    let main = Registry::start(&w.join("main"), &ca, Some((USER, PASSWORD))).unwrap();
    let mut built = Vec::new();
    for (spec, repo_tag) in [
        (pause_image(PAUSE).unwrap(), "pause:3.10"),
        (rich_image(RICH).unwrap(), "rich:1"),
    ] {
        let path = w.join(format!("{}.tar", repo_tag.replace(':', "-")));
        built.extend(write_oci_archive(std::slice::from_ref(&spec), &path).unwrap());
        main.push(&path, repo_tag, &ca).unwrap();
    }
    // containerd 1.6 (Debian 12's) cannot parse a hosts.toml without any `[host."…"]`
    // section ("invalid `host` tree") and would fall back to resolving the image's own host,
    // so the registry is named as a host too (the server entry then only repeats it).
    let hosts = write_hosts_toml(
        &w.join("certs.d"),
        "snapmend.test",
        &format!(
            "server = \"https://{main}\"\nca = \"{ca}\"\n\n[host.\"https://{main}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            main = main.host(),
            ca = ca.ca_cert().display()
        ),
    )
    .unwrap();
    let fixture = ContainerdFixture::start_with(FixtureOptions {
        cri: Some(CriPlugin {
            registry_config_path: hosts,
            discard_unpacked_layers: true,
        }),
        ..FixtureOptions::default()
    })
    .unwrap();

    // Wrong credentials: containerd's CRI refuses, as it would for a bad pull secret.
    let denied = pull_image(
        &fixture.socket(),
        PAUSE,
        Some(CriAuth {
            username: USER,
            password: WRONG,
        }),
        std::time::Duration::from_secs(60),
    );
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.to_string().contains("401")),
        "{denied:?}"
    );
    for image in &built {
        let image_ref = pull_image(
            &fixture.socket(),
            &image.name,
            Some(CriAuth {
                username: USER,
                password: PASSWORD,
            }),
            std::time::Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", fixture.log_tail()));
        assert_eq!(image_ref, image.config_digest);
    }
    fixture.settle().unwrap();

    // Discarded: the layer blobs are gone from the content store, manifests and configs stay.
    let content = fixture.ctr(&["content", "ls", "-q"]).unwrap();
    for image in &built {
        assert!(content.contains(&image.manifest_digest), "{content}");
        assert!(content.contains(&image.config_digest), "{content}");
        for layer in &image.layers {
            assert!(
                !content.contains(layer.digest()),
                "layer {} kept:\n{content}",
                layer.digest()
            );
            assert!(!fixture.blob_path(layer.digest()).exists());
        }
    }

    // The helper finds the hosts directory in containerd's config.toml and the credentials
    // in a docker config, as on a node.
    let helper = NodeHelper::for_fixture(&fixture).unwrap();
    let s = Scenario {
        fixture,
        helper,
        images: built,
    };
    let good = w.join("good.json");
    write_docker_config(&good, &main.host(), USER, PASSWORD).unwrap();
    let fetch_args = ["--auth", good.to_str().unwrap(), "--cache-dir", "none"];
    let mut outputs = Outputs::default();
    let mut pristine = Vec::new();
    for image in &s.images {
        let ok = run(&s, &mut outputs, "verify", &image.name, &fetch_args);
        assert_eq!(ok.code, Some(0), "{ok}");
        let r = report(&ok);
        assert_eq!(r.outcome, Outcome::Healthy, "{ok}");
        assert_eq!(r.layers.len(), image.layers.len(), "{ok}");
        let mut layers = Vec::new();
        for (l, built_layer) in r.layers.iter().zip(&image.layers) {
            assert_eq!(l.blob, BlobState::Verified, "{ok}");
            assert_eq!(l.blob_source, Some(BlobSource::Registry), "{ok}");
            // containerd's own unpack, right after its pull: the reference for the repair.
            let fs = PathBuf::from(l.snapshot_path.clone().unwrap());
            layers.push(PristineLayer {
                tree: capture_tree(&fs).unwrap(),
                mtime_paths: tar_mtime_paths(&built_layer.built.tar).unwrap(),
                fs,
            });
        }
        pristine.push(PristineImage {
            name: image.name.clone(),
            layers,
        });
    }

    // Damage both, repair both from the registry.
    std::fs::remove_file(pristine[0].layers[0].fs.join("pause")).unwrap();
    delete_a_file(&pristine[1].layers[1].fs);
    for p in &pristine {
        assert!(!p.differences_now().unwrap().is_empty());
        let fixed = run(&s, &mut outputs, "repair", &p.name, &fetch_args);
        assert_eq!(fixed.code, Some(0), "{fixed}");
        let r = report(&fixed);
        assert_eq!(r.outcome, Outcome::Repaired, "{fixed}");
        assert!(
            r.layers
                .iter()
                .all(|l| l.blob_source == Some(BlobSource::Registry)),
            "{fixed}"
        );
        let diffs = p.differences_now().unwrap();
        assert!(
            diffs.is_empty(),
            "repaired tree differs from containerd's unpack:\n{}",
            diffs.join("\n")
        );
    }
    // Fetched blobs never went into containerd's content store.
    let content = s.fixture.ctr(&["content", "ls", "-q"]).unwrap();
    assert!(
        s.images
            .iter()
            .flat_map(|i| &i.layers)
            .all(|l| !content.contains(l.digest())),
        "{content}"
    );
    outputs.assert_no_credentials();
}
