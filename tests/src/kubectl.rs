//! The real kubectl, for tests that apply deploy/ or act as a person would: `kubectl` runs it on
//! a kubeconfig (KUBECTL names another binary), `bound_token` makes a ServiceAccount token bound
//! to a Pod, as the kubelet's projected tokens are.

use std::path::Path;

use crate::TestError;

/// Runs kubectl on `kubeconfig` (its own cache directory beside it); its stdout, or the
/// command's stderr as the error.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, TestError> {
    let program = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let run = || {
        std::process::Command::new(&program)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(kubeconfig.with_extension("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output()
    };
    // Inside a multi-threaded runtime, tell it this thread blocks; elsewhere just run.
    let out = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
    .map_err(|e| TestError::io("kubectl (scripts/install-test-deps.sh installs it)", e))?;
    if !out.status.success() {
        return Err(TestError::Command {
            command: format!("kubectl {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A token of ServiceAccount `sa` in `namespace` bound to Pod `pod`
/// (`kubectl create token --bound-object-kind Pod`), trimmed.
pub fn bound_token(
    admin: &Path,
    namespace: &str,
    sa: &str,
    pod: &str,
) -> Result<String, TestError> {
    let token = kubectl(
        admin,
        &[
            "create",
            "token",
            sa,
            "-n",
            namespace,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
        ],
    )?;
    Ok(token.trim().to_string())
}
