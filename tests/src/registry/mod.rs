//! Real registries for the blob-fetching tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port with a generated CA and TLS certificate,
//! htpasswd (bcrypt) basic auth or anonymous; images pushed with Debian's `skopeo`; and
//! [`BlobServer`], a tiny plain-http registry double that misbehaves on purpose.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::TestError;

fn run(cmd: &mut Command) -> Result<String, TestError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestError::io(shown.clone(), e))?;
    if !out.status.success() {
        return Err(TestError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, TestError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| TestError::io("127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| TestError::io("127.0.0.1:0", e))?
        .port();
    Ok(port)
}

/// A test CA and a server certificate for `127.0.0.1` / `localhost` signed by it (openssl CLI).
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn generate(dir: &Path) -> Result<TestCa, TestError> {
        std::fs::create_dir_all(dir).map_err(|e| TestError::io(dir, e))?;
        let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=snapmend test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
        run(Command::new("openssl").args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ]))?;
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| TestError::io(dir.join("ext.cnf"), e))?;
        run(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("server.pem"),
        ]))?;
        Ok(TestCa {
            dir: dir.to_path_buf(),
        })
    }

    /// A directory with only `ca.crt`, as skopeo's `--dest-cert-dir` wants it.
    pub fn cert_dir(&self) -> Result<PathBuf, TestError> {
        let d = self.dir.join("certs.d");
        std::fs::create_dir_all(&d).map_err(|e| TestError::io(&d, e))?;
        std::fs::copy(self.ca_cert(), d.join("ca.crt")).map_err(|e| TestError::io(&d, e))?;
        Ok(d)
    }
}

/// One running `docker-registry` serving https (or, from [`Registry::start_plain_http`], plain
/// http) on `127.0.0.1:<port>`.
pub struct Registry {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub auth: Option<(String, String)>,
    child: Child,
}

impl Registry {
    /// `host:port`, as in image references and hosts.toml.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Starts a registry in `dir` with the CA's server certificate; `auth` = htpasswd user.
    pub fn start(
        dir: &Path,
        ca: &TestCa,
        auth: Option<(&str, &str)>,
    ) -> Result<Registry, TestError> {
        Self::start_serving(dir, Some(ca), auth)
    }

    /// A registry speaking plain http (no TLS section in its config).
    pub fn start_plain_http(dir: &Path, auth: Option<(&str, &str)>) -> Result<Registry, TestError> {
        Self::start_serving(dir, None, auth)
    }

    fn start_serving(
        dir: &Path,
        ca: Option<&TestCa>,
        auth: Option<(&str, &str)>,
    ) -> Result<Registry, TestError> {
        std::fs::create_dir_all(dir.join("storage")).map_err(|e| TestError::io(dir, e))?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let auth_section = match auth {
            Some((user, pass)) => {
                let htpasswd = dir.join("htpasswd");
                run(Command::new("htpasswd")
                    .args(["-B", "-b", "-c"])
                    .arg(&htpasswd)
                    .args([user, pass]))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: snapmend-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let tls_section = match ca {
            Some(ca) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.server_cert().display(),
                ca.server_key().display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{tls_section}{auth_section}",
            storage = dir.join("storage").display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| TestError::io(&config_path, e))?;
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| TestError::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| TestError::io(&log_path, e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| TestError::io("docker-registry", e))?;
        let mut registry = Registry {
            addr,
            dir: dir.to_path_buf(),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(TestError::Scenario(format!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(TestError::Timeout {
                    what: format!("docker-registry on {addr}"),
                    after: Duration::from_secs(20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Pushes the single image of an OCI layout tarball to `<this registry>/<repo_tag>` with
    /// skopeo, keeping every digest.
    pub fn push(&self, archive: &Path, repo_tag: &str, ca: &TestCa) -> Result<(), TestError> {
        self.push_with(archive, repo_tag, Some(ca))
    }

    /// [`Registry::push`] to a registry from [`Registry::start_plain_http`].
    pub fn push_plain_http(&self, archive: &Path, repo_tag: &str) -> Result<(), TestError> {
        self.push_with(archive, repo_tag, None)
    }

    fn push_with(
        &self,
        archive: &Path,
        repo_tag: &str,
        tls: Option<&TestCa>,
    ) -> Result<(), TestError> {
        // skopeo needs a signature policy; accept anything in this private test.
        let policy = self.dir.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .map_err(|e| TestError::io(&policy, e))?;
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(&policy)
            .args(["copy", "--quiet", "--preserve-digests"])
            .env("HOME", &self.dir);
        match tls {
            Some(ca) => {
                cmd.arg("--dest-cert-dir").arg(ca.cert_dir()?);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        if let Some((u, p)) = &self.auth {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd).map(|_| ())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address that never answers a connect, as a blackholed or unroutable registry
/// host would (only loopback may be a test's target): a listener whose accept queue (of
/// one) is kept full, so the kernel drops further SYNs and a client waits for its timeout.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Result<Blackhole, TestError> {
        use socket2::{Domain, Socket, Type};
        let io = |e| TestError::io("blackhole listener on 127.0.0.1", e);
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(io)?;
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        listener.bind(&any.into()).map_err(io)?;
        listener.listen(0).map_err(io)?;
        let addr = listener
            .local_addr()
            .map_err(io)?
            .as_socket()
            .ok_or_else(|| TestError::Scenario("blackhole: not an inet socket".into()))?;
        let mut queued = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
            if queued.len() > 16 {
                return Err(TestError::Scenario(
                    "blackhole: the accept queue never filled".into(),
                ));
            }
        }
        Ok(Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        })
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// How [`BlobServer`] answers blob requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobMode {
    /// The requested blob's bytes.
    Honest = 0,
    /// The bytes of another blob, with a 200.
    Tampered = 1,
    /// The headers and half the body, then the connection is closed.
    DropMidBlob = 2,
}

/// A minimal plain-http registry double: `GET /v2/<repo>/blobs/<digest>` answers from an
/// in-memory map according to its mode; everything else is 404.
pub struct BlobServer {
    pub addr: SocketAddr,
    /// With a token service: blobs need `Bearer <token>`, which `/token` hands out for
    /// these basic credentials (the challenge flow of Docker Hub and most registries).
    mode: Arc<AtomicU8>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl BlobServer {
    pub fn start(blobs: Vec<(String, Vec<u8>)>) -> Result<BlobServer, TestError> {
        Self::start_with_token(blobs, None)
    }

    /// `bearer`: (user, password, token) of the token service.
    pub fn start_with_token(
        blobs: Vec<(String, Vec<u8>)>,
        bearer: Option<(String, String, String)>,
    ) -> Result<BlobServer, TestError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| TestError::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestError::io("127.0.0.1:0", e))?;
        let mode = Arc::new(AtomicU8::new(BlobMode::Honest as u8));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), requests.clone());
        let blobs = Arc::new(blobs);
        let bearer = Arc::new(bearer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (m, r, blobs, bearer) = (m.clone(), r.clone(), blobs.clone(), bearer.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &m, &r, &blobs, bearer.as_ref().as_ref(), addr);
                });
            }
        });
        Ok(BlobServer {
            addr,
            mode,
            requests,
        })
    }

    pub fn set_mode(&self, mode: BlobMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

fn serve_one(
    stream: TcpStream,
    mode: &AtomicU8,
    requests: &Mutex<Vec<String>>,
    blobs: &[(String, Vec<u8>)],
    bearer: Option<&(String, String, String)>,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut authorization = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                authorization = v.trim().to_string();
            }
        }
        if let Ok(mut r) = requests.lock() {
            r.push(path.clone());
        }
        if let Some((user, pass, token)) = bearer {
            if path.starts_with("/token") {
                let expected = format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{pass}").as_bytes())
                );
                if authorization == expected && path.contains("scope=repository") {
                    let body = format!("{{\"token\":\"{token}\"}}");
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )?;
                } else {
                    out.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")?;
                }
                continue;
            }
            if authorization != format!("Bearer {token}") {
                write!(
                    out,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"snapmend-test\"\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
        }
        let digest = path
            .split('?')
            .next()
            .and_then(|p| p.rsplit_once("/blobs/"))
            .map(|(_, d)| d.to_string());
        let found = digest
            .as_ref()
            .and_then(|d| blobs.iter().position(|(bd, _)| bd == d));
        let Some(i) = found else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let body: &[u8] = match mode.load(Ordering::SeqCst) {
            1 => &blobs[(i + 1) % blobs.len()].1,
            _ => &blobs[i].1,
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        if mode.load(Ordering::SeqCst) == 2 {
            out.write_all(&body[..body.len() / 2])?;
            out.flush()?;
            let _ = out.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        out.write_all(body)?;
    }
}

/// A hosts directory (containerd's `config_path`) mapping `image_host` to the given
/// `hosts.toml` text.
pub fn write_hosts_toml(root: &Path, image_host: &str, text: &str) -> Result<PathBuf, TestError> {
    let dir = root.join(image_host);
    std::fs::create_dir_all(&dir).map_err(|e| TestError::io(&dir, e))?;
    let file = dir.join("hosts.toml");
    std::fs::write(&file, text).map_err(|e| TestError::io(&file, e))?;
    Ok(root.to_path_buf())
}

/// A docker config.json with one `auths` entry (base64 `auth`, as `docker login` writes it).
pub fn write_docker_config(
    path: &Path,
    host: &str,
    user: &str,
    pass: &str,
) -> Result<(), TestError> {
    let auth = base64_encode(format!("{user}:{pass}").as_bytes());
    let text = format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}");
    std::fs::write(path, text).map_err(|e| TestError::io(path, e))
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }
}
