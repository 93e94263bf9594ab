//! `snapmend-demo` (`make demo`): the incident on one simulated node, healed with nobody
//! watching. Starts snapmend-sim, a private containerd, the operator (`--auto-remediate repair`),
//! an agent and the kubelet simulator; deletes `/pause` from the pause snapshot; prints the
//! timeline and the `kubectl get sr` table. Second act: the same on a node whose containerd's
//! CRI pulled the image from a loopback TLS registry and discarded the layer blob
//! (`discard_unpacked_layers = true`, as on EKS), so the repair fetches it from the registry.
//! Ends with `demo ok`.

use std::process::ExitCode;
use std::time::Duration;

use snapmend_crds::{BlobSource, Outcome, Phase};
use snapmend_tests::kubelet::incident::{Incident, IncidentConfig, IncidentReport, NodeImages};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNAPMEND_DEMO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            eprintln!("snapmend-demo: cannot start a runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(demo()) {
        Ok(()) => {
            println!("demo ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("snapmend-demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    if !nix_is_root() {
        return Err(
            "the demo starts a private containerd and needs root (run it with sudo)".into(),
        );
    }
    println!("snapmend demo: the FailedCreatePodSandBox incident, healed automatically\n");
    act(IncidentConfig {
        live: false,
        timeout: Duration::from_secs(45),
        ..IncidentConfig::default()
    })
    .await?;
    println!(
        "\nsecond act: a node that discards unpacked layers (containerd's CRI, discard_unpacked_layers = true, as on EKS)\n\
         the pause layer blob is gone from the node; the repair fetches it from the image's registry\n"
    );
    let (report, registry) = act(IncidentConfig {
        node: "node-b".into(),
        live: false,
        timeout: Duration::from_secs(45),
        node_images: NodeImages::PulledDiscardingLayers,
        ..IncidentConfig::default()
    })
    .await?;
    blob_from_registry(&report, registry.as_deref())?;
    Ok(())
}

/// One incident: run it, print its timeline, the `kubectl get sr` table and the summary.
/// Returns the report and the registry's `host:port`, if the node pulled from one.
async fn act(config: IncidentConfig) -> Result<(IncidentReport, Option<String>), String> {
    let mut incident = Incident::start(config).await.map_err(|e| e.to_string())?;
    let report = incident
        .run_until_sandbox_running()
        .await
        .map_err(|e| e.to_string())?;
    println!("timeline (wall clock, time since start):");
    for line in incident.timeline.lines() {
        println!("  {}", line.replace('\n', "\n  "));
    }
    println!();
    println!("{}", incident.sr_table().await);
    summary(&report)?;
    let registry = incident.registry.as_ref().map(|r| r.host());
    Ok((report, registry))
}

/// The second act's repair must have used the registry's copy of the layer blob: fetched by
/// the verification (`blobSource: Registry`) and kept in the agent's blob cache, which the
/// repair then reads (`blobSource: Cache`), or fetched by the repair itself.
fn blob_from_registry(report: &IncidentReport, registry: Option<&str>) -> Result<(), String> {
    let sources: Vec<BlobSource> = report
        .repairs
        .iter()
        .filter_map(|sr| sr.status.clone()?.report)
        .flat_map(|r| r.report.layers)
        .filter_map(|l| l.blob_source)
        .collect();
    let registry = registry.unwrap_or("the registry");
    if sources.contains(&BlobSource::Registry) {
        println!(
            "the repair fetched the pause layer blob from {registry} and checked it against its digest before writing anything"
        );
        Ok(())
    } else if sources.contains(&BlobSource::Cache) {
        println!(
            "the verification fetched the pause layer blob from {registry}, checked it against its digest and kept it in the agent's blob cache; the repair used that copy"
        );
        Ok(())
    } else {
        Err(format!(
            "the second act's repair did not use the registry's copy of the layer blob (sources {sources:?})"
        ))
    }
}
fn summary(report: &IncidentReport) -> Result<(), String> {
    println!(
        "first FailedCreatePodSandBox -> SnapshotRepair created: {}",
        report
            .first_event_to_repair_created
            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "first FailedCreatePodSandBox -> sandbox running:        {:.0} ms ({} failed starts; the incident took 13 minutes and 44 events)",
        report.first_event_to_sandbox_running.as_secs_f64() * 1e3,
        report.failed_starts
    );
    let repaired = report.repairs.iter().any(|sr| {
        let status = sr.status.clone().unwrap_or_default();
        status.phase == Some(Phase::Succeeded)
            && status
                .report
                .is_some_and(|r| r.report.outcome == Outcome::Repaired)
    });
    if !repaired {
        return Err("no SnapshotRepair succeeded with outcome Repaired".into());
    }
    if !report.pause_restored {
        return Err("/pause is still missing from its snapshot".into());
    }
    if report.node_unschedulable_at_end {
        return Err("the node is still cordoned".into());
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
