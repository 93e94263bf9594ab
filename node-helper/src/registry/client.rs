//! A thin OCI distribution client over reqwest's blocking client: one client per registry host
//! with that host's TLS (extra CAs on top of the system pool, client certificates,
//! `skip_verify`), a streaming blob download that hashes while it writes, retries that restart
//! from byte zero (no Range), and the anonymous / basic / bearer-token challenge dance.
//!
//! No error or log line carries a credential: headers are built here and never formatted.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::auth::{Credentials, basic_header, parse_www_authenticate, token_from_response};
use super::hosts::RegistryHost;
use crate::store::bounded::read_capped;

/// Attempts per host for transport failures (each restarts the blob from byte zero).
pub const MAX_ATTEMPTS: u32 = 3;
/// PEM files are small.
const MAX_PEM: u64 = 1 << 20;
/// Connect timeout of a host without `dial_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const USER_AGENT: &str = concat!("snapmend-node-helper/", env!("CARGO_PKG_VERSION"));

/// Why one host could not supply the blob; `Display` is the `blobDetail` text after the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostFailure {
    /// The TLS settings of the host could not be loaded.
    Setup(String),
    /// An HTTP status other than success (`404 Not Found`, `401 Unauthorized`).
    Status(String),
    /// The token endpoint refused or failed.
    Token(String),
    /// Connection refused, reset, closed mid-blob, TLS failure, … after every attempt.
    Transport(String),
    /// The bytes served are not the blob.
    Digest { actual: String, bytes: u64 },
    /// Writing the downloaded bytes locally failed.
    Local(String),
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFailure::Setup(s) => write!(f, "TLS setup: {s}"),
            HostFailure::Status(s) => f.write_str(s),
            HostFailure::Token(s) => write!(f, "token: {s}"),
            HostFailure::Transport(s) => f.write_str(s),
            HostFailure::Digest { actual, bytes } => {
                write!(
                    f,
                    "served {bytes} bytes hashing to {actual} (DigestMismatch)"
                )
            }
            HostFailure::Local(s) => f.write_str(s),
        }
    }
}

/// The download's destination, created only once a registry answers with the blob, so a
/// host that refuses or is unreachable leaves nothing on disk.
pub struct LazyFile<'a> {
    open: &'a dyn Fn() -> Result<(std::path::PathBuf, std::fs::File), HostFailure>,
    opened: Option<(std::path::PathBuf, std::fs::File)>,
}

impl<'a> LazyFile<'a> {
    pub fn new(
        open: &'a dyn Fn() -> Result<(std::path::PathBuf, std::fs::File), HostFailure>,
    ) -> Self {
        LazyFile { open, opened: None }
    }

    fn file(&mut self) -> Result<&mut std::fs::File, HostFailure> {
        let slot = match self.opened.take() {
            Some(slot) => slot,
            None => (self.open)()?,
        };
        Ok(&mut self.opened.insert(slot).1)
    }

    /// The path and file, if the download got as far as creating it.
    pub fn into_opened(self) -> Option<(std::path::PathBuf, std::fs::File)> {
        self.opened
    }
}

/// The blob to fetch.
#[derive(Clone, Debug)]
pub struct BlobRequest<'a> {
    /// The image's own registry host (for `?ns=` on mirrors).
    pub image_host: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
    pub size: u64,
}

fn system_roots() -> &'static Vec<CertificateDer<'static>> {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "system CA certificate not loaded");
        }
        found.certs
    })
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_capped(path, "PEM file", MAX_PEM).map_err(|e| e.to_string())?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_capped(path, "PEM file", MAX_PEM).map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no usable private key ({e})", path.display()))
}

/// skip_verify: accept any server certificate (hosts.toml asked for it), still checking the
/// handshake signatures so the session itself is sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls settings for one host, as containerd builds its `tls.Config` from hosts.toml.
fn tls_config(host: &RegistryHost) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if host.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let (_, _ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
        for ca in &host.ca {
            for cert in read_pem_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match host.client.first() {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_pem_certs(cert)?;
            let key = read_pem_key(key.as_deref().unwrap_or(cert))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client for one registry host.
pub struct HostClient {
    http: reqwest::blocking::Client,
    pub host: RegistryHost,
}

impl HostClient {
    pub fn new(host: &RegistryHost) -> Result<HostClient, HostFailure> {
        // TLS even for a plain-http host: a registry may redirect blob downloads to https storage.
        let http = reqwest::blocking::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(host.dial_timeout.unwrap_or(CONNECT_TIMEOUT))
            .timeout(None)
            .tcp_keepalive(Duration::from_secs(15))
            .no_proxy()
            .use_preconfigured_tls(tls_config(host).map_err(HostFailure::Setup)?)
            .build()
            .map_err(|e| HostFailure::Setup(error_chain(&e)))?;
        Ok(HostClient {
            http,
            host: host.clone(),
        })
    }

    fn get(
        &self,
        url: &str,
        auth: Option<&str>,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::blocking::Response> {
        let mut req = self.http.get(url).timeout(timeout);
        for (k, v) in &self.host.headers {
            req = req.header(k, v);
        }
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send()
    }

    /// Answers a 401 challenge: the `Authorization` value to retry with.
    fn answer_challenge(
        &self,
        resp: &reqwest::blocking::Response,
        repository: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, HostFailure> {
        let unauthorized = || HostFailure::Status(status_text(resp.status()));
        let challenges: Vec<_> = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer.param("realm").ok_or_else(unauthorized)?;
            let scope = format!("repository:{repository}:pull");
            let mut form: Vec<(&str, &str)> = vec![("scope", &scope)];
            if let Some(service) = bearer.param("service") {
                form.push(("service", service));
            }
            let req = match creds {
                Some(Credentials::IdentityToken(token)) => {
                    // OAuth2 refresh-token grant, as containerd does with an identity token.
                    form.push(("grant_type", "refresh_token"));
                    form.push(("refresh_token", token.expose()));
                    form.push(("client_id", "snapmend"));
                    self.http.post(realm).body(form_encode(&form)).header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                }
                Some(Credentials::Basic { username, password }) => {
                    self.http.get(realm).query(&form).header(
                        reqwest::header::AUTHORIZATION,
                        basic_header(username, password),
                    )
                }
                None => self.http.get(realm).query(&form),
            };
            let resp = req
                .timeout(Duration::from_secs(60))
                .send()
                .map_err(|e| HostFailure::Token(error_chain(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(HostFailure::Token(status_text(status)));
            }
            let mut body = Vec::new();
            resp.take(1 << 20)
                .read_to_end(&mut body)
                .map_err(|e| HostFailure::Token(e.to_string()))?;
            let token = token_from_response(&body)
                .ok_or_else(|| HostFailure::Token("the token endpoint sent no token".into()))?;
            return Ok(format!("Bearer {}", token.expose()));
        }
        if challenges.iter().any(|c| c.scheme == "basic")
            && let Some(Credentials::Basic { username, password }) = creds
        {
            return Ok(basic_header(username, password));
        }
        Err(unauthorized())
    }

    /// Streams the blob into `out` (truncated first), hashing as it writes. `Ok` only when the
    /// bytes are exactly the blob. Transport failures are retried from byte zero.
    pub fn download(
        &self,
        blob: &BlobRequest<'_>,
        creds: Option<&Credentials>,
        out: &mut LazyFile<'_>,
    ) -> Result<u64, HostFailure> {
        // Set once the server answered the TLS handshake in plain http (containerd's
        // NewHTTPFallback: every later request to the host goes over http).
        let mut plain_http = false;
        // Generous: a minute plus 2 s per MiB (0.5 MiB/s) for the whole body.
        let timeout = Duration::from_secs(60 + 2 * (blob.size >> 20));
        let mut auth: Option<String> = None;
        let mut challenged = false;
        let mut last = HostFailure::Transport("no attempt".into());
        let mut attempt = 0;
        while attempt < MAX_ATTEMPTS {
            attempt += 1;
            let url = self
                .host
                .blob_url(blob.image_host, blob.repository, blob.digest, plain_http);
            let resp = match self.get(&url, auth.as_deref(), timeout) {
                Ok(r) => r,
                Err(e) => {
                    if self.host.http_fallback && !plain_http && answered_tls_with_http(&e) {
                        plain_http = true;
                        attempt -= 1;
                        tracing::info!(host = %self.host.host, "the registry answered https in plain http; retrying over http (hosts.toml: http host with TLS settings)");
                        continue;
                    }
                    if e.is_connect() {
                        // No connection at all (refused, unreachable, dial timeout): like
                        // containerd, go on to the next host at once instead of retrying.
                        let failure = if e.is_timeout() {
                            format!(
                                "no connection within {:?} (dial_timeout): {}",
                                self.host.dial_timeout.unwrap_or(CONNECT_TIMEOUT),
                                error_chain(&e)
                            )
                        } else {
                            error_chain(&e)
                        };
                        tracing::debug!(host = %self.host.host, error = %failure, "registry host unreachable");
                        return Err(HostFailure::Transport(failure));
                    }
                    last = HostFailure::Transport(error_chain(&e));
                    tracing::debug!(host = %self.host.host, attempt, error = %last, "blob request failed");
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                auth = Some(self.answer_challenge(&resp, blob.repository, creds)?);
                attempt -= 1;
                continue;
            }
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                last = HostFailure::Status(status_text(status));
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                continue;
            }
            if !status.is_success() {
                return Err(HostFailure::Status(status_text(status)));
            }
            match copy_hashing(resp, out.file()?, blob.size) {
                Ok((bytes, actual)) if actual == blob.digest && bytes == blob.size => {
                    return Ok(bytes);
                }
                Ok((bytes, actual)) => return Err(HostFailure::Digest { actual, bytes }),
                Err(CopyError::Local(e)) => return Err(HostFailure::Local(e)),
                Err(CopyError::TooLong(bytes)) => {
                    return Err(HostFailure::Digest {
                        actual: format!("more than the {} bytes of the descriptor", blob.size),
                        bytes,
                    });
                }
                Err(CopyError::Remote { bytes, error }) => {
                    last = HostFailure::Transport(format!(
                        "connection failed after {bytes} of {} bytes: {error}",
                        blob.size
                    ));
                    tracing::debug!(host = %self.host.host, attempt, error = %last, "blob download interrupted; restarting from byte 0");
                }
            }
        }
        Err(last)
    }
}

/// Whether a failed https request failed because the server answered the TLS handshake in
/// plain http (Go's `tls.RecordHeaderError` starting with `HTTP/`, which containerd's
/// `NewHTTPFallback` looks for): rustls sees a record of no TLS content type. The rustls
/// error sits in `io::Error`s (nested: hyper-rustls wraps tokio-rustls's) somewhere in
/// reqwest's chain of causes; `io::Error::source` skips the error it wraps, so those are
/// unwrapped with `get_ref`.
pub fn answered_tls_with_http(err: &(dyn std::error::Error + 'static)) -> bool {
    fn is_http_answer(e: &(dyn std::error::Error + 'static)) -> bool {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            );
        }
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => is_http_answer(inner),
            None => false,
        }
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if is_http_answer(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

enum CopyError {
    Remote { bytes: u64, error: String },
    Local(String),
    TooLong(u64),
}

/// Copies at most `size + 1` bytes, so an endless or oversized body stops early.
fn copy_hashing(
    mut body: impl Read,
    out: &mut std::fs::File,
    size: u64,
) -> Result<(u64, String), CopyError> {
    use std::io::Seek;
    out.set_len(0)
        .map_err(|e| CopyError::Local(e.to_string()))?;
    out.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| CopyError::Local(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(CopyError::Remote {
                    bytes: total,
                    error: io_error_chain(&e),
                });
            }
        };
        total += n as u64;
        if total > size {
            return Err(CopyError::TooLong(total));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| CopyError::Local(e.to_string()))?;
    }
    // A body that ended cleanly (its Content-Length or chunked end reached; an interrupted
    // one is a read error above) but is shorter than the blob is other bytes: the caller's
    // digest check says so.
    Ok((total, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

fn status_text(s: reqwest::StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An error and its causes on one line (reqwest's own Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

fn io_error_chain(e: &std::io::Error) -> String {
    error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            ))
        }
    }

    #[test]
    fn copy_checks_size_and_hashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = std::fs::File::create(dir.path().join("b")).expect("create");
        let (n, d) = copy_hashing(&b"hello"[..], &mut f, 5).ok().expect("copies");
        assert_eq!(n, 5);
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(matches!(
            copy_hashing(&b"hello!"[..], &mut f, 5),
            Err(CopyError::TooLong(6))
        ));
        let (n, _) = copy_hashing(&b"hell"[..], &mut f, 5)
            .ok()
            .expect("complete body");
        assert_eq!(
            n, 4,
            "a short complete body is returned for the digest check"
        );
        let broken = std::io::Read::chain(&b"he"[..], FailingReader);
        assert!(matches!(
            copy_hashing(broken, &mut f, 5),
            Err(CopyError::Remote { bytes: 2, .. })
        ));
        // A retry truncates what an earlier attempt wrote.
        let _ = copy_hashing(&b"hi"[..], &mut f, 2).ok().expect("copies");
        assert_eq!(std::fs::read(dir.path().join("b")).expect("read"), b"hi");
    }

    #[test]
    fn form_and_status_text() {
        assert_eq!(
            form_encode(&[("scope", "repository:a/b:pull"), ("x", "a b")]),
            "scope=repository%3Aa%2Fb%3Apull&x=a%20b"
        );
        assert_eq!(
            status_text(reqwest::StatusCode::UNAUTHORIZED),
            "401 Unauthorized"
        );
        assert_eq!(status_text(reqwest::StatusCode::NOT_FOUND), "404 Not Found");
    }

    fn loopback_host(addr: std::net::SocketAddr) -> RegistryHost {
        RegistryHost {
            scheme: "https".into(),
            host: addr.to_string(),
            path: "/v2".into(),
            capabilities: super::super::hosts::Capabilities::ALL,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: true,
            headers: Vec::new(),
            dial_timeout: None,
            http_fallback: false,
        }
    }

    fn fetch(host: &RegistryHost, body: &[u8]) -> Result<u64, HostFailure> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let open = || -> Result<(std::path::PathBuf, std::fs::File), HostFailure> {
            let f = std::fs::File::create(&path).map_err(|e| HostFailure::Local(e.to_string()))?;
            Ok((path.clone(), f))
        };
        let mut out = LazyFile::new(&open);
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        let request = BlobRequest {
            image_host: &host.host,
            repository: "app",
            digest: &digest,
            size: body.len() as u64,
        };
        HostClient::new(host)
            .expect("client")
            .download(&request, None, &mut out)
    }

    /// A plain-http server that answers a TLS ClientHello like Go's net/http does (a 400 in
    /// plain http) and serves `body` to http GETs; records what each connection spoke.
    fn plain_http_server(
        body: &'static [u8],
    ) -> (
        std::net::SocketAddr,
        Arc<std::sync::Mutex<Vec<&'static str>>>,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let Ok(n) = stream.read(&mut buf) else {
                    continue;
                };
                if n > 0 && buf[0] == 0x16 {
                    log.lock().expect("lock").push("tls");
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request");
                    continue;
                }
                log.lock().expect("lock").push("http");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            }
        });
        (addr, seen)
    }

    #[test]
    fn an_http_answer_to_tls_falls_back_to_http_only_when_allowed() {
        let (addr, seen) = plain_http_server(b"layer bytes");
        // No fallback configured: a clear transport error, which is the http answer.
        let host = loopback_host(addr);
        let err = fetch(&host, b"layer bytes").expect_err("https only");
        assert!(matches!(err, HostFailure::Transport(_)), "{err}");
        assert_eq!(
            *seen.lock().expect("lock"),
            ["tls"],
            "no retry of a refused handshake"
        );
        // https first, then http, as containerd does for http hosts with TLS settings.
        seen.lock().expect("lock").clear();
        let host = RegistryHost {
            http_fallback: true,
            ..host
        };
        assert_eq!(fetch(&host, b"layer bytes").ok(), Some(11));
        assert_eq!(*seen.lock().expect("lock"), ["tls", "http"]);
    }

    #[test]
    fn the_http_answer_is_recognised_in_the_chain_of_causes() {
        let rustls_err = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        assert!(answered_tls_with_http(&io));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let nested = std::io::Error::other(io);
        assert!(answered_tls_with_http(&Outer(nested)));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(
            !answered_tls_with_http(&Outer(other)),
            "a bad certificate is no reason for http"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!answered_tls_with_http(&refused));
    }

    #[test]
    fn unreachable_hosts_fail_at_once_and_dial_timeout_bounds_the_wait() {
        use socket2::{Domain, Socket, Type};
        // Refused: one attempt, no retries.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let started = std::time::Instant::now();
        let err = fetch(&loopback_host(addr), b"x").expect_err("refused");
        assert!(matches!(err, HostFailure::Transport(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // A listener whose accept queue is full drops new SYNs: connects hang, as to a
        // blackholed address, until the dial timeout.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let bind: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&bind.into()).expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let mut fillers = Vec::new();
        while fillers.len() < 16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        assert!(fillers.len() < 16, "the accept queue never filled");
        let host = RegistryHost {
            dial_timeout: Some(Duration::from_millis(300)),
            ..loopback_host(addr)
        };
        let started = std::time::Instant::now();
        let err = fetch(&host, b"x").expect_err("blackholed");
        let took = started.elapsed();
        assert!(
            err.to_string()
                .contains("no connection within 300ms (dial_timeout)"),
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn tls_setup_errors_name_the_file() {
        let host = RegistryHost {
            scheme: "https".into(),
            host: "r.example".into(),
            path: "/v2".into(),
            capabilities: super::super::hosts::Capabilities::ALL,
            ca: vec!["/nonexistent/ca.pem".into()],
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
            dial_timeout: None,
            http_fallback: false,
        };
        let err = HostClient::new(&host).err().expect("fails");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let skip = RegistryHost {
            skip_verify: true,
            ca: Vec::new(),
            ..host
        };
        assert!(HostClient::new(&skip).is_ok());
    }
}
