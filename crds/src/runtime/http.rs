//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`, for the operator and the agent.
//! Each process says how to encode its metrics and whether it is ready; serving is the same.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use super::shutdown::Shutdown;

/// The OpenMetrics text of the process's registry, or why it could not be encoded.
pub type MetricsText = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;
/// Ready (`Ok`, with detail) or not ready (`Err`, with the reason), answered with 200 or 503.
pub type Readiness = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    metrics: MetricsText,
    ready: Readiness,
}

/// The three endpoints. Liveness depends on nothing outside the process: restarting it because
/// the API server is away would only take it down when it is needed next.
pub fn router(metrics: MetricsText, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { metrics, ready })
}

async fn serve_metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    match (e.metrics)() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

async fn readyz(State(e): State<Endpoints>) -> (StatusCode, String) {
    match (e.ready)() {
        Ok(detail) => (StatusCode::OK, detail),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// Binds `addr` now, so a bad or busy address fails at start-up.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz, /readyz");
    Ok(listener)
}

/// Serves until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, app: Router, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let code = out[9..12].parse().expect("status code");
        (code, out)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_then_stops() {
        let ready = Arc::new(AtomicBool::new(false));
        let is_ready = ready.clone();
        let app = router(
            Arc::new(|| Ok("# TYPE up gauge\nup 1\n# EOF\n".to_string())),
            Arc::new(move || {
                if is_ready.load(Ordering::Relaxed) {
                    Ok("ok".into())
                } else {
                    Err("not watching yet".into())
                }
            }),
        );
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        let server = tokio::spawn(serve(listener, app, stop.clone()));
        assert_eq!(get_text(addr, "/healthz").await.0, 200);
        let (code, body) = get_text(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("not watching yet"), "{body}");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (code, body) = get_text(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("application/openmetrics-text"), "{body}");
        assert!(body.contains("up 1"), "{body}");
        stop.trigger();
        server.await.expect("join").expect("served");
    }

    #[tokio::test]
    async fn a_metrics_encoding_failure_is_a_500() {
        let app = router(
            Arc::new(|| Err("broken".into())),
            Arc::new(|| Ok("ok".into())),
        );
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        let server = tokio::spawn(serve(listener, app, stop.clone()));
        let (code, body) = get_text(addr, "/metrics").await;
        assert_eq!(code, 500);
        assert!(body.contains("broken"));
        stop.trigger();
        server.await.expect("join").expect("served");
    }
}
