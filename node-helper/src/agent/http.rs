//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use super::metrics::Metrics;
use super::shutdown::Shutdown;
use super::status::AgentStatus;
use crate::error::{Error, Result};

#[derive(Clone)]
struct Endpoints {
    metrics: Metrics,
    status: AgentStatus,
}

fn router(metrics: Metrics, status: AgentStatus) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { metrics, status })
}

async fn serve_metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics.encode(),
    )
}

/// Liveness does not depend on the API server: restarting agents because the control plane
/// is away would only take them down when they are needed next.
async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(e): State<Endpoints>) -> (StatusCode, String) {
    let guard = e.status.guard_detail();
    match e.status.not_ready_reason() {
        None => (StatusCode::OK, format!("ok\n{guard}")),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{reason}\n{guard}"),
        ),
    }
}

/// Binds `addr` now (so a bad address fails at start-up) and returns the serving future.
pub async fn bind(
    addr: SocketAddr,
    metrics: Metrics,
    status: AgentStatus,
    mut shutdown: Shutdown,
) -> Result<impl Future<Output = Result<()>>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve {
            what: format!("bind metrics address {addr}"),
            source,
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(%local, "serving /metrics, /healthz, /readyz");
    Ok(async move {
        axum::serve(listener, router(metrics, status))
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .map_err(|source| Error::Serve {
                what: format!("serve on {local}"),
                source,
            })
    })
}
