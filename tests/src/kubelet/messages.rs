//! Kubelet's event messages around containerd's error text, and kubelet-like retry backoff.
//! Pure, so the exact formats are unit-tested.

use std::time::Duration;

/// Event reason kubelet posts when RunPodSandbox fails.
pub const REASON_SANDBOX_FAILED: &str = "FailedCreatePodSandBox";
/// Event reason kubelet posts when a container fails to be created or started.
pub const REASON_CONTAINER_FAILED: &str = "Failed";
/// Container status waiting reasons kubelet reports.
pub const WAITING_CREATE_ERROR: &str = "CreateContainerError";
pub const WAITING_RUN_ERROR: &str = "RunContainerError";

/// The error containerd's CRI returns, from what `ctr run` printed: the `ctr: ` prefix is `ctr`'s
/// own; task creation errors are wrapped as CRI wraps them (`failed to create containerd task: …`).
pub fn cri_error_from_ctr(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    let error = line.strip_prefix("ctr: ").unwrap_or(line);
    if error.starts_with("failed to create shim task")
        || error.starts_with("OCI runtime create failed")
    {
        format!("failed to create containerd task: {error}")
    } else {
        error.to_string()
    }
}

/// containerd's CRI error when the CNI plugin fails while it sets up the sandbox's network.
pub fn network_setup_error(sandbox_id: &str, plugin_error: &str) -> String {
    format!("failed to setup network for sandbox \"{sandbox_id}\": {plugin_error}")
}

/// `FailedCreatePodSandBox` message exactly as kubelet writes it.
pub fn sandbox_failed_message(cri_error: &str) -> String {
    format!("Failed to create pod sandbox: rpc error: code = Unknown desc = {cri_error}")
}

/// `Failed` message of a container that could not be created or started, as kubelet writes it.
pub fn container_failed_message(cri_error: &str) -> String {
    format!("Error: {cri_error}")
}

/// Kubelet-like retry delays: doubling from `initial` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Short enough for tests and the demo; the shape (doubling, capped) is kubelet's.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Name of kubelet's event for an object: `<object>.<16 hex digits>`, from a nanosecond clock.
pub fn event_name(object: &str, unix_nanos: u128) -> String {
    format!("{object}.{:016x}", unix_nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTR_PAUSE: &str = r#"ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;

    #[test]
    fn sandbox_message_is_kubelets_around_containerds_error() {
        let m = sandbox_failed_message(&cri_error_from_ctr(CTR_PAUSE));
        assert_eq!(
            m,
            r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#
        );
    }

    #[test]
    fn container_message_is_prefixed_with_error() {
        let ctr = r#"ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/app": stat /app: no such file or directory: unknown"#;
        assert!(container_failed_message(&cri_error_from_ctr(ctr)).starts_with(
            "Error: failed to create containerd task: failed to create shim task: OCI runtime create failed"
        ));
    }

    #[test]
    fn other_ctr_errors_keep_their_text_and_the_last_line_wins() {
        assert_eq!(
            cri_error_from_ctr("ctr: image \"x\": not found\n"),
            "image \"x\": not found"
        );
        assert_eq!(cri_error_from_ctr("warning\nctr: boom"), "boom");
        assert_eq!(cri_error_from_ctr(""), "");
    }

    #[test]
    fn cni_failures_are_worded_as_containerd_does() {
        assert_eq!(
            sandbox_failed_message(&network_setup_error(
                "ab12",
                "plugin type=\"bridge\" failed (add): no IP addresses available"
            )),
            "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox \"ab12\": plugin type=\"bridge\" failed (add): no IP addresses available"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        let delays: Vec<u64> = (0..6).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(4));
    }

    #[test]
    fn event_names_are_object_dot_hex() {
        assert_eq!(event_name("web-0", 0x17a1), "web-0.00000000000017a1");
    }
}
