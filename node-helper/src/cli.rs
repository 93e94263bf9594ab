//! The command line (contract: "The node helper"): argument parsing, turning arguments into
//! a job, and printing the Report as JSON or as a short human summary.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use snapmend_crds::{ContentCheck, LayerReport, Outcome, Report, ScanReport};

use crate::job::{self, DEFAULT_CONFIG, DEFAULT_NAMESPACE, JobOptions, Target};
use crate::scan::{self, Namespaces, ScanOptions};

#[derive(Debug, Parser)]
#[command(
    name = "snapmend-node-helper",
    version,
    about = "Verifies and repairs containerd overlayfs snapshots against their layer blobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare every layer of an image with its snapshot (exit 0 healthy, 1 damaged, 2 could not run).
    Verify(VerifyArgs),
    /// Restore damaged snapshots from their verified layer blobs, then verify again.
    Repair(RepairArgs),
    /// Verify every image of the namespace(s) and the snapshot store itself (each shared layer once).
    Scan(ScanArgs),
    /// Run as the per-node agent: answer this node's SnapshotRepair requests, keep the presence Lease.
    Agent(crate::agent::AgentArgs),
    /// Name the processes that change committed snapshots (fanotify), in the foreground until SIGINT/SIGTERM.
    Guard(crate::guard::GuardArgs),
}

/// Where containerd keeps its store; shared with the agent.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// containerd root directory [default: config.toml's `root`, else /var/lib/containerd]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// containerd namespace
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// containerd config file, read for `root`, the sandbox image and the overlayfs root_path
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// When to fetch a layer blob from its registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FetchArg {
    /// When the content store lacks the blob or it fails its digest
    Auto,
    /// Never: a missing blob stays Missing
    Never,
}

/// Blobs the node does not have (contract: "Layer blobs from the registry"); shared with the agent.
#[derive(Clone, Debug, Args)]
pub struct FetchArgs {
    /// Fetch layer blobs the content store lacks (or holds corrupt) from the image's registry
    #[arg(long, value_enum, default_value_t = FetchArg::Auto)]
    pub fetch: FetchArg,
    /// containerd's registry hosts directory (hosts.toml per host; `:`-separated list)
    /// [default: config.toml's registry config_path, else containerd's default]
    #[arg(long, value_name = "DIR")]
    pub registry_config: Option<PathBuf>,
    /// docker config.json with registry credentials (repeatable)
    /// [default: /var/lib/kubelet/config.json if present]
    #[arg(long = "auth", value_name = "FILE")]
    pub auth: Vec<PathBuf>,
    /// kubelet's credential provider config (`--image-credential-provider-config`)
    #[arg(long, value_name = "FILE", requires = "credential_provider_bin_dir")]
    pub credential_provider_config: Option<PathBuf>,
    /// kubelet's credential provider plugin directory (`--image-credential-provider-bin-dir`)
    #[arg(long, value_name = "DIR", requires = "credential_provider_config")]
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// Where verified fetched blobs are kept (`none`: temporary files only)
    #[arg(long, value_name = "DIR|none", default_value = crate::registry::DEFAULT_CACHE_DIR)]
    pub cache_dir: String,
    /// Size cap of the blob cache in bytes; least recently used blobs are evicted first
    #[arg(long, value_name = "BYTES", default_value_t = crate::registry::DEFAULT_CACHE_MAX_BYTES)]
    pub cache_max_bytes: u64,
}

impl FetchArgs {
    pub fn options(&self) -> crate::registry::FetchOptions {
        crate::registry::FetchOptions {
            mode: match self.fetch {
                FetchArg::Auto => crate::registry::FetchMode::Auto,
                FetchArg::Never => crate::registry::FetchMode::Never,
            },
            registry_config: self.registry_config.clone(),
            auth_files: self.auth.clone(),
            pull_secret_files: Vec::new(),
            credential_provider: self
                .credential_provider_config
                .clone()
                .zip(self.credential_provider_bin_dir.clone()),
            cache_dir: (self.cache_dir != "none").then(|| PathBuf::from(&self.cache_dir)),
            cache_max_bytes: self.cache_max_bytes,
        }
    }
}

/// The TOC cache (contract: "The whole node"); shared by verify, repair, scan and the agent.
#[derive(Clone, Debug, Args)]
pub struct TocArgs {
    /// Where tables of contents of verified layers are kept, so that later verifications need
    /// no blob (`none`: always read the blob, keep nothing)
    #[arg(long, value_name = "DIR|none", default_value = crate::layer::toc::TocCache::DEFAULT_DIR)]
    pub toc_cache: String,
    /// Size cap of the TOC cache in bytes; least recently used TOCs are evicted first
    #[arg(long, value_name = "BYTES", default_value_t = crate::layer::toc::TocCache::DEFAULT_MAX_BYTES)]
    pub toc_cache_max_bytes: u64,
}

impl TocArgs {
    pub fn cache(&self) -> Option<crate::layer::toc::TocCache> {
        (self.toc_cache != "none").then(|| crate::layer::toc::TocCache {
            dir: PathBuf::from(&self.toc_cache),
            max_bytes: self.toc_cache_max_bytes,
        })
    }
}

#[derive(Clone, Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Image name as containerd records it (a tag or a digest reference)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The sandbox (pause) image configured in config.toml
    #[arg(long)]
    pub sandbox_image: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ContentArg {
    /// Hash every regular file
    Full,
    /// Compare metadata and sizes only
    Metadata,
}

impl From<ContentArg> for ContentCheck {
    fn from(c: ContentArg) -> Self {
        match c {
            ContentArg::Full => ContentCheck::Full,
            ContentArg::Metadata => ContentCheck::Metadata,
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How regular files are compared
    #[arg(long, value_enum, default_value_t = ContentArg::Full)]
    pub content: ContentArg,
    /// Print the Report as JSON (the only output on stdout)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub toc: TocArgs,
}

#[derive(Clone, Debug, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Plan the repair and report it, but write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Scan every containerd namespace instead of --namespace
    #[arg(long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// How regular files are compared
    #[arg(long, value_enum, default_value_t = ContentArg::Full)]
    pub content: ContentArg,
    /// Repair what the scan finds damaged (same rules as `repair`)
    #[arg(long)]
    pub repair: bool,
    /// With --repair: plan and report, write nothing
    #[arg(long, requires = "repair")]
    pub dry_run: bool,
    /// Print the ScanReport as JSON (the only output on stdout)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub toc: TocArgs,
}

impl TargetArgs {
    pub fn target(&self) -> Target {
        match &self.image {
            Some(image) => Target::Image(image.clone()),
            None => Target::SandboxImage,
        }
    }
}

/// Runs one command line; returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    init_logging();
    match &cli.command {
        Command::Verify(args) => run_job(args, false, false),
        Command::Repair(args) => run_job(&args.verify, true, args.dry_run),
        Command::Scan(args) => run_scan(args),
        Command::Agent(args) => crate::agent::main(args),
        Command::Guard(args) => crate::guard::main(args),
    }
}

/// Runs `scan`, shows progress on a terminal, prints the ScanReport; returns the exit status.
fn run_scan(args: &ScanArgs) -> i32 {
    use std::io::IsTerminal;
    let root = match job::root_from(args.store.root.as_deref(), &args.store.config) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let opts = ScanOptions {
        root,
        namespaces: if args.all_namespaces {
            Namespaces::All
        } else {
            Namespaces::One(args.store.namespace.clone())
        },
        config_path: args.store.config.clone(),
        content: args.content.into(),
        repair: args.repair,
        dry_run: args.dry_run,
        fetch: args.fetch.options(),
        toc: args.toc.cache(),
    };
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut progress = |done: usize, total: usize| {
        // Only once it takes longer than a moment, and only for a person.
        if show_progress && started.elapsed() > std::time::Duration::from_millis(500) {
            eprint!("\rscanning: {done}/{total} images");
            if done == total {
                eprintln!();
            }
        }
    };
    let report = scan::scan(&opts, &mut progress);
    print_result(
        &report,
        args.json,
        || scan_summary(&report),
        report.exit_code(),
    )
}

/// Prints `report` as JSON (and nothing else) or as the human summary; returns `code`, or 2
/// when the report cannot be encoded.
fn print_result(
    report: &impl serde::Serialize,
    json: bool,
    human: impl FnOnce() -> String,
    code: i32,
) -> i32 {
    if !json {
        print!("{}", human());
        return code;
    }
    match serde_json::to_string_pretty(report) {
        Ok(text) => {
            println!("{text}");
            code
        }
        Err(e) => {
            eprintln!("cannot encode the report: {e}");
            2
        }
    }
}

/// The human summary of a scan: the images that are not healthy, then the store.
pub fn scan_summary(r: &ScanReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "outcome  {:?}", r.outcome);
    if let Some(message) = &r.message {
        let _ = writeln!(s, "summary  {message}");
    }
    for image in r.images.iter().filter(|i| i.outcome != Outcome::Healthy) {
        let _ = writeln!(s, "---");
        s.push_str(&human_summary(image));
    }
    let store = [
        ("missing", &r.snapshots.missing),
        ("orphaned", &r.snapshots.orphaned),
        ("unreferenced", &r.snapshots.unreferenced),
    ];
    for (what, list) in store {
        for snap in list {
            let key = snap.key.as_deref().unwrap_or("no record");
            let _ = writeln!(s, "snapshot {what}: {} ({key})", snap.path);
        }
    }
    let _ = writeln!(s, "took     {} ms", r.duration_ms);
    s
}

/// Builds the job from arguments; the root follows `--root`, then config.toml, then the default.
fn job_options(args: &VerifyArgs, dry_run: bool) -> crate::Result<JobOptions> {
    Ok(JobOptions {
        root: job::root_from(args.store.root.as_deref(), &args.store.config)?,
        namespace: args.store.namespace.clone(),
        config_path: args.store.config.clone(),
        target: args.target.target(),
        content: args.content.into(),
        dry_run,
        fetch: args.fetch.options(),
        toc: args.toc.cache(),
    })
}

/// Runs a verify or repair command, prints its result, returns the exit status.
fn run_job(args: &VerifyArgs, repair: bool, dry_run: bool) -> i32 {
    let report = match job_options(args, dry_run) {
        Ok(opts) if repair => job::repair(&opts),
        Ok(opts) => job::verify(&opts),
        Err(e) => Report {
            image: args.target.image.clone().unwrap_or_default(),
            outcome: Outcome::Error,
            message: Some(e.to_string()),
            ..Default::default()
        },
    };
    print_result(
        &report,
        args.json,
        || human_summary(&report),
        report.exit_code(),
    )
}

/// Findings shown per layer in the human summary.
const SUMMARY_FINDINGS: usize = 10;

/// The short human summary printed without `--json`.
pub fn human_summary(r: &Report) -> String {
    let mut s = String::new();
    let image = if r.image.is_empty() {
        "(sandbox image)"
    } else {
        &r.image
    };
    let _ = writeln!(s, "image    {image}");
    if !r.manifest_digest.is_empty() {
        let _ = writeln!(s, "manifest {}", r.manifest_digest);
    }
    let findings = match r.outcome {
        Outcome::Error => String::new(),
        Outcome::Repaired => format!(" (restored: {})", r.findings_summary()),
        _ => format!(" ({})", r.findings_summary()),
    };
    let _ = writeln!(s, "outcome  {:?}{findings}", r.outcome);
    for l in &r.layers {
        layer_summary(&mut s, l);
    }
    if !matches!(r.outcome, Outcome::Error) {
        let _ = writeln!(
            s,
            "mounts   {} mounted overlay(s) use these snapshots",
            r.mounts
        );
    }
    if let Some(message) = &r.message {
        let _ = writeln!(s, "note     {message}");
    }
    let _ = writeln!(s, "took     {} ms", r.duration_ms);
    s
}

fn layer_summary(s: &mut String, l: &LayerReport) {
    let snapshot = match (&l.snapshot_id, &l.snapshot_path) {
        (Some(id), Some(path)) => format!("snapshot {id} {path}"),
        (Some(id), None) => format!("snapshot {id}"),
        _ => "no snapshot".to_string(),
    };
    let _ = writeln!(s, "layer {}  {}  {snapshot}", l.index, l.digest);
    let restored = l
        .entries_restored
        .map(|n| format!(", {n} entries restored"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "         blob {:?}, state {:?}, {} finding(s){restored}",
        l.blob, l.state, l.findings_total
    );
    if let Some(source) = l.blob_source {
        let from = l
            .fetched_from
            .as_deref()
            .map(|f| format!(" {f}"))
            .unwrap_or_default();
        let _ = writeln!(s, "         blob source {source:?}{from}");
    }
    if let Some(detail) = &l.blob_detail {
        let _ = writeln!(s, "         blob detail {detail}");
    }
    for f in l.findings.iter().take(SUMMARY_FINDINGS) {
        let detail = if f.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.detail)
        };
        let _ = writeln!(s, "         {:?} {}{detail}", f.kind, f.path);
    }
    if let Some(culprit) = &l.culprit {
        let _ = writeln!(s, "         {}", culprit.summary());
    }
    if let Some(staging) = &l.leftover_staging {
        let _ = writeln!(
            s,
            "         leftover staging from an interrupted repair: {staging}"
        );
    }
    let shown = l.findings.len().min(SUMMARY_FINDINGS) as u64;
    if l.findings_total > shown {
        let _ = writeln!(
            s,
            "         … and {} more (--json lists up to 100)",
            l.findings_total - shown
        );
    }
}

/// Logs go to stderr so that `--json` output stays the only thing on stdout.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in pod logs or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapmend_crds::{BlobState, Finding, FindingKind, LayerState};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("snapmend-node-helper").chain(args.iter().copied()))
    }

    #[test]
    fn verify_defaults_follow_the_contract() {
        let Command::Verify(v) = parse(&["verify", "--image", "registry.k8s.io/pause:3.10"])
            .unwrap()
            .command
        else {
            panic!("not verify")
        };
        assert_eq!(v.store.root, None);
        assert_eq!(v.store.namespace, "k8s.io");
        assert_eq!(v.store.config, PathBuf::from("/etc/containerd/config.toml"));
        assert_eq!(v.content, ContentArg::Full);
        assert!(!v.json);
        assert_eq!(
            v.target.target(),
            Target::Image("registry.k8s.io/pause:3.10".into())
        );
    }

    #[test]
    fn repair_takes_the_same_options_plus_dry_run() {
        let cli = parse(&[
            "repair",
            "--root",
            "/r",
            "--namespace",
            "default",
            "--config",
            "/c.toml",
            "--sandbox-image",
            "--content",
            "metadata",
            "--json",
            "--dry-run",
        ])
        .unwrap();
        let Command::Repair(r) = cli.command else {
            panic!("not repair")
        };
        assert!(r.dry_run && r.verify.json);
        assert_eq!(r.verify.target.target(), Target::SandboxImage);
        assert_eq!(r.verify.content, ContentArg::Metadata);
        let opts = job_options(&r.verify, r.dry_run).unwrap();
        assert_eq!(opts.root, PathBuf::from("/r"));
        assert_eq!(opts.namespace, "default");
        assert_eq!(opts.content, ContentCheck::Metadata);
        assert!(opts.dry_run);
    }

    #[test]
    fn bad_arguments_exit_with_2() {
        for args in [
            &["verify"][..],
            &["verify", "--image", "a", "--sandbox-image"],
            &["verify", "--image", "a", "--content", "some"],
            &["verify", "--image", "a", "--dry-run"],
            &["frobnicate"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn root_falls_back_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "version = 2\nroot = \"/from/config\"\n").unwrap();
        let cli = parse(&[
            "verify",
            "--image",
            "x",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Verify(v) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(
            job_options(&v, false).unwrap().root,
            PathBuf::from("/from/config")
        );
    }

    #[test]
    fn the_summary_names_layers_findings_and_mounts() {
        let r = Report {
            image: "registry.k8s.io/pause:3.10".into(),
            manifest_digest: "sha256:m".into(),
            outcome: Outcome::Corrupted,
            layers: vec![LayerReport {
                index: 0,
                digest: "sha256:l".into(),
                snapshot_id: Some("1".into()),
                snapshot_path: Some(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs"
                        .into(),
                ),
                blob: BlobState::Verified,
                state: LayerState::Corrupted,
                findings_total: 12,
                findings: (0..12)
                    .map(|i| Finding {
                        path: if i == 0 {
                            "/pause".into()
                        } else {
                            format!("/f{i}")
                        },
                        kind: FindingKind::Missing,
                        detail: if i == 0 {
                            "regular file, 732 KiB".into()
                        } else {
                            String::new()
                        },
                    })
                    .collect(),
                ..Default::default()
            }],
            mounts: 3,
            duration_ms: 41,
            message: None,
            scan: None,
        };
        let s = human_summary(&r);
        assert!(s.contains("outcome  Corrupted (12 missing)"), "{s}");
        assert!(s.contains("layer 0  sha256:l  snapshot 1 /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs"), "{s}");
        assert!(
            s.contains("blob Verified, state Corrupted, 12 finding(s)"),
            "{s}"
        );
        assert!(s.contains("Missing /pause (regular file, 732 KiB)"), "{s}");
        assert!(s.contains("… and 2 more"), "{s}");
        assert!(s.contains("mounts   3"), "{s}");
    }

    #[test]
    fn an_error_summary_shows_the_message() {
        let r = Report {
            image: "x".into(),
            outcome: Outcome::Error,
            message: Some("image \"x\" is not known".into()),
            ..Default::default()
        };
        let s = human_summary(&r);
        assert!(
            s.contains("outcome  Error\n") && s.contains("note     image \"x\" is not known"),
            "{s}"
        );
        assert!(!s.contains("mounts"), "{s}");
    }

    #[test]
    fn a_layer_with_a_culprit_names_it() {
        let culprit = snapmend_crds::culprit::Culprit {
            time: "2026-12-07T03:12:09.123Z".into(),
            path: "/pause".into(),
            op: "delete".into(),
            count: 1,
            process: snapmend_crds::culprit::CulpritProcess {
                pid: 4711,
                cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
                systemd_unit: Some("cron.service".into()),
                ..Default::default()
            },
        };
        let r = Report {
            image: "x".into(),
            outcome: Outcome::Corrupted,
            layers: vec![LayerReport {
                digest: "sha256:l".into(),
                state: LayerState::Corrupted,
                culprit: Some(culprit.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = human_summary(&r);
        assert!(
            s.contains(&format!("         {}\n", culprit.summary())),
            "{s}"
        );
        assert!(s.contains("damaged by pid 4711"), "{s}");
        assert!(s.contains("(delete /pause)"), "{s}");
    }
}
