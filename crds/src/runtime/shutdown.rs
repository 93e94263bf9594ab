//! One shutdown signal shared by every task of a process: SIGTERM or SIGINT (or a test, or
//! the end of a leadership term) triggers it once and every clone sees it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A cloneable stop signal (a `CancellationToken`, which kube-runtime's
/// `graceful_shutdown_on` and axum's `with_graceful_shutdown` also take).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Stops on the given token.
    pub fn from_token(token: CancellationToken) -> Self {
        Shutdown(token)
    }

    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// Sleeps for `d`; true if shutdown came first.
    pub async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_triggered(),
            _ = self.wait() => true,
        }
    }

    /// Triggers this shutdown on the first SIGTERM or SIGINT (in a task of its own, which
    /// ends when the shutdown is triggered for any other reason).
    pub fn trigger_on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                signal = wait_for_signal() => {
                    info!(signal, "shutting down");
                    shutdown.trigger();
                }
                _ = shutdown.wait() => {}
            }
        });
    }
}

/// The first SIGTERM or SIGINT, by name.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        (Err(error), _) | (_, Err(error)) => {
            // No signal handlers (should not happen on Linux): only Ctrl-C stops us.
            warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone_and_cuts_sleeps_short() {
        let shutdown = Shutdown::new();
        let a = shutdown.clone();
        let b = shutdown.clone();
        assert!(!a.sleep_or_stop(Duration::from_millis(1)).await);
        let sleeper = tokio::spawn(async move { b.sleep_or_stop(Duration::from_secs(60)).await });
        shutdown.trigger();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), sleeper)
                .await
                .expect("woke")
                .expect("join")
        );
        a.wait().await;
        assert!(a.is_triggered());
        assert!(a.token().is_cancelled());
    }

    #[tokio::test]
    async fn a_sigterm_triggers_it() {
        // Installing a handler here first makes sure the signal never takes its default action
        // (ending the test process), however late the task below gets to run.
        let _handler = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        tokio::time::sleep(Duration::from_millis(100)).await;
        send_sigterm_to_self();
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("SIGTERM triggered the shutdown");
    }

    /// Sends SIGTERM to this process through `kill(1)`: the crate has no libc or nix
    /// dependency, and the handler installed above keeps the default action from running.
    fn send_sigterm_to_self() {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}
