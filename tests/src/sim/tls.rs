//! HTTPS for `snapmend-sim --auth`: clients send credentials only over TLS (kubectl's
//! clientcmd drops a kubeconfig's token for `http://` servers), so a server that
//! authenticates serves TLS, as kube-apiserver always does. A fresh CA and a certificate for
//! 127.0.0.1 are made with the openssl CLI (as for the test registries); the kubeconfig
//! carries the CA.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::TestError;
use crate::registry::TestCa;

/// The server's certificate: the CA clients trust, and the acceptor that serves with it.
pub struct ServingCert {
    /// PEM of the CA, for kubeconfigs (`certificate-authority-data`).
    pub ca_pem: Vec<u8>,
    /// DER of the CA, for kube clients (`root_cert`).
    pub ca_der: Vec<u8>,
    pub acceptor: TlsAcceptor,
}

fn der(dir: &Path, args: &[&str]) -> Result<Vec<u8>, TestError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| TestError::io("openssl", e))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(TestError::Tls {
            dir: dir.to_path_buf(),
            reason: format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

impl ServingCert {
    /// A new CA and server certificate for 127.0.0.1, valid two days.
    pub fn generate() -> Result<Self, TestError> {
        let dir = tempfile::tempdir().map_err(|e| TestError::io("a temporary directory", e))?;
        let ca = TestCa::generate(dir.path())?;
        let ca_pem = std::fs::read(ca.ca_cert()).map_err(|e| TestError::io(ca.ca_cert(), e))?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let ca_der = der(
            dir.path(),
            &["x509", "-in", &path(&ca.ca_cert()), "-outform", "DER"],
        )?;
        let cert_der = der(
            dir.path(),
            &["x509", "-in", &path(&ca.server_cert()), "-outform", "DER"],
        )?;
        let key_der = der(
            dir.path(),
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &path(&ca.server_key()),
                "-outform",
                "DER",
            ],
        )?;
        let tls_error = |e: tokio_rustls::rustls::Error| TestError::Tls {
            dir: dir.path().to_path_buf(),
            reason: e.to_string(),
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem,
            ca_der,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// A listener that hands axum connections whose TLS handshake is done. Handshakes run in
/// their own tasks, so a client that stalls in one holds up nobody else.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor stopped (shutdown): wait for axum's graceful shutdown to end us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
