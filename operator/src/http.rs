//! `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`: the shared server
//! (`snapmend_crds::runtime::http`) with the operator's metrics and readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::net::SocketAddr;

use axum::Router;
use snapmend_crds::runtime::http;
use snapmend_crds::runtime::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::metrics::Metrics;

/// Readiness: set once the operator reached the API server and joined leader election.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The shared server's endpoints, answered from the operator's registry and readiness.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    http::router(
        Arc::new(move || metrics.encode().map_err(|e| e.to_string())),
        Arc::new(move || {
            if health.is_ready() {
                Ok("ok".to_string())
            } else {
                Err("not ready".to_string())
            }
        }),
    )
}

/// Serves until `shutdown` is triggered.
pub async fn serve(listener: TcpListener, app: Router, shutdown: Shutdown) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    http::serve(listener, app, shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_then_stops() {
        let metrics = Arc::new(Metrics::new());
        metrics.set_nodes_cordoned(2);
        let health = Arc::new(Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let server = tokio::spawn(serve(
            listener,
            router(metrics, health.clone()),
            stop.clone(),
        ));
        assert_eq!(get_text(addr, "/healthz").await.0, 200);
        assert_eq!(get_text(addr, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (code, body) = get_text(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("snapmend_nodes_cordoned 2"), "{body}");
        stop.trigger();
        server.await.unwrap().unwrap();
    }
}
