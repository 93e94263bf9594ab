//! `snapmend-node-helper guard`: the guard in the foreground, one line per aggregated change.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::{Guard, Output};
use crate::job::{self, DEFAULT_CONFIG};
use crate::store::StoreLayout;
use crate::store::config::ContainerdConfig;

#[derive(Clone, Debug, Args)]
pub struct GuardArgs {
    /// containerd root directory [default: config.toml's `root`, else /var/lib/containerd]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// containerd config file, read for `root` and the overlayfs root_path
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// One JSON object per line (the only output on stdout)
    #[arg(long)]
    pub json: bool,
}

/// How often the loop wakes to report quiet aggregates and notice a stop signal.
const TICK: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    // No SA_RESTART: poll returns at once on a signal.
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Exit status: 0 after SIGINT/SIGTERM, 2 when the guard cannot run here.
pub fn main(args: &GuardArgs) -> i32 {
    let layout = match layout(args) {
        Ok(layout) => layout,
        Err(e) => {
            eprintln!("snapmend guard: {e}");
            return 2;
        }
    };
    let mut guard = match Guard::start(&layout.overlay_root) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!(
                "snapmend guard: cannot watch {}: {e}",
                layout.snapshots_dir().display()
            );
            return 2;
        }
    };
    if let Err(e) = install_stop_handlers() {
        eprintln!("snapmend guard: cannot handle SIGINT/SIGTERM: {e}");
        return 2;
    }
    eprintln!(
        "snapmend guard: watching committed snapshots under {}",
        layout.snapshots_dir().display()
    );
    let mut stdout = std::io::stdout().lock();
    while !STOP.load(Ordering::SeqCst) {
        match guard.poll(TICK) {
            Ok(outputs) => {
                if print(&mut stdout, &outputs, args.json).is_err() {
                    // Nobody reads our output any more.
                    return 2;
                }
            }
            Err(e) => {
                eprintln!("snapmend guard: reading fanotify events: {e}");
                return 2;
            }
        }
    }
    let _ = print(&mut stdout, &guard.finish(), args.json);
    eprintln!(
        "snapmend guard: stopped; {}",
        serde_json::to_string(&guard.stats).unwrap_or_default()
    );
    0
}

fn layout(args: &GuardArgs) -> crate::Result<StoreLayout> {
    layout_for(args.root.as_deref(), &args.config)
}

/// The store layout from `--root` (else config.toml's `root`) and config.toml's `root_path`.
pub fn layout_for(
    root: Option<&std::path::Path>,
    config: &std::path::Path,
) -> crate::Result<StoreLayout> {
    let config = ContainerdConfig::load(config)?;
    let root = match root {
        Some(root) => root.to_path_buf(),
        None => job::effective_root(None, &config),
    };
    Ok(StoreLayout::new(&root, config.overlay_root.as_deref()))
}

fn print(out: &mut impl std::io::Write, outputs: &[Output], json: bool) -> std::io::Result<()> {
    for o in outputs {
        let line = match (o, json) {
            (Output::Change(c), true) => serde_json::to_string(c).map_err(std::io::Error::other)?,
            (Output::Overflow(v), true) => {
                serde_json::to_string(v).map_err(std::io::Error::other)?
            }
            (Output::Change(c), false) => c.describe(),
            (Output::Overflow(v), false) => {
                format!("{} {} ({} overflow events)", v.time, v.message, v.overflow)
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()
}
