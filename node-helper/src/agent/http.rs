//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`: the shared server
//! (`snapmend_crds::runtime::http`) with the agent's metrics and readiness (watch synced,
//! Lease renewed, and the guard's state as detail).

use std::net::SocketAddr;
use std::sync::Arc;

use snapmend_crds::runtime::http;
use snapmend_crds::runtime::shutdown::Shutdown;

use super::metrics::Metrics;
use super::status::AgentStatus;
use crate::error::{Error, Result};

/// Binds `addr` now (so a bad address fails at start-up) and returns the serving future.
pub async fn bind(
    addr: SocketAddr,
    metrics: Metrics,
    status: AgentStatus,
    shutdown: Shutdown,
) -> Result<impl Future<Output = Result<()>>> {
    let listener = http::bind(addr).await.map_err(|source| Error::Serve {
        what: format!("bind metrics address {addr}"),
        source,
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    let app = http::router(
        Arc::new(move || Ok(metrics.encode())),
        Arc::new(move || {
            let guard = status.guard_detail();
            match status.not_ready_reason() {
                None => Ok(format!("ok\n{guard}")),
                Some(reason) => Err(format!("{reason}\n{guard}")),
            }
        }),
    );
    Ok(async move {
        http::serve(listener, app, shutdown)
            .await
            .map_err(|source| Error::Serve {
                what: format!("serve on {local}"),
                source,
            })
    })
}
