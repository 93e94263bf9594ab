//! `snapmend-sim`: an in-process Kubernetes API server test double that unmodified kube-rs
//! clients and kubectl accept. See `docs/architecture/snapmend-sim.md` for what it does not do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), snapmend_tests::TestError> {
//! let sim = snapmend_tests::sim::SimServer::start().await?;
//! let client = sim.client()?;
//! sim.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! # drop(client);
//! sim.stop().await;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod convert;
pub mod crd;
pub mod discovery;
pub mod http;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod registry;
pub mod secret;
pub mod selectors;
pub mod ssa;
pub mod status;
pub mod table;
pub mod tls;
pub mod validation;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestError;

pub use audit::{RequestRecord, count_by_key};
pub use cluster::{Cluster, ClusterConfig};

/// Tunables of a simulated API server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// 0 picks an ephemeral port.
    pub port: u16,
    /// Changes kept for watches to resume from; smaller windows expire watches sooner.
    pub history_window: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// `--auth`: bearer tokens, RBAC and ValidatingAdmissionPolicies, as on a real cluster.
    /// The kubeconfig and [`SimServer::client`] then carry an admin (`system:masters`) token.
    pub auth: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            history_window: ClusterConfig::default().history_window,
            bookmark_interval: Duration::from_secs(5),
            auth: false,
        }
    }
}

/// A running simulated API server on 127.0.0.1.
pub struct SimServer {
    addr: SocketAddr,
    app: Arc<http::App>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Deletes the contents of Terminating namespaces, then the namespaces, as
/// kube-controller-manager's namespace controller does (after a 1 s grace, so that clients
/// deleting a namespace and its objects one by one find them still there).
fn spawn_namespace_controller(cluster: Arc<Cluster>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => cluster.finalize_terminating_namespaces(Duration::from_secs(1)),
            }
        }
    });
}

/// kube-apiserver's bootstrap ClusterRoles and ClusterRoleBindings.
fn create_default_rbac(cluster: &Cluster) {
    let (roles, bindings) = auth::bootstrap::default_policy();
    for (plural, objects) in [("clusterroles", roles), ("clusterrolebindings", bindings)] {
        let Some(def) = cluster
            .registry()
            .find("rbac.authorization.k8s.io", "v1", plural)
            .cloned()
        else {
            continue;
        };
        for obj in objects {
            if let Err(e) = cluster.create(&def, None, obj, &cluster::WriteOptions::default()) {
                tracing::error!(error = %e, "creating a default RBAC object failed");
            }
        }
    }
}

/// Serves `app` on `listener` (TLS under `--auth`) until the app's current shutdown token is
/// cancelled.
fn serve(app: Arc<http::App>, listener: tokio::net::TcpListener) -> JoinHandle<()> {
    let shutdown = app.current_shutdown();
    let acceptor = app.tls.as_ref().map(|c| c.acceptor.clone());
    let router = axum::Router::new().fallback(http::handle).with_state(app);
    if let Some(acceptor) = acceptor {
        let listener = tls::TlsListener::new(listener, acceptor, shutdown.clone());
        return tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                shutdown.cancelled().await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "snapmend-sim stopped serving");
            }
        });
    }
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.cancelled().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "snapmend-sim stopped serving");
        }
    })
}

impl SimServer {
    /// Starts a server on an ephemeral loopback port with default settings.
    pub async fn start() -> Result<Self, TestError> {
        Self::start_with(SimConfig::default()).await
    }

    pub async fn start_with(config: SimConfig) -> Result<Self, TestError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TestError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TestError::Bind { addr, source })?;
        let tls = if config.auth {
            Some(Arc::new(tls::ServingCert::generate()?))
        } else {
            None
        };
        let cluster = Arc::new(Cluster::new(ClusterConfig {
            history_window: config.history_window,
        }));
        let app = Arc::new(http::App {
            cluster,
            shutdown: Mutex::new(CancellationToken::new()),
            watch_epoch: Mutex::new(CancellationToken::new()),
            controllers: CancellationToken::new(),
            bookmark_interval: config.bookmark_interval,
            server_address: addr.to_string(),
            requests: audit::RequestLog::default(),
            tokens: Arc::new(auth::Tokens::new()),
            auth: config.auth,
            tls,
        });
        if config.auth {
            create_default_rbac(&app.cluster);
        }
        let task = serve(app.clone(), listener);
        spawn_namespace_controller(app.cluster.clone(), app.controllers.clone());
        tracing::info!(%addr, "snapmend-sim listening");
        Ok(Self {
            addr,
            app,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://` under `--auth`.
    pub fn url(&self) -> String {
        let scheme = if self.app.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Under `--auth`: the PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.app.tls.as_ref().map(|c| c.ca_pem.as_slice())
    }

    /// The store behind the server, for tests that set up or inspect state directly.
    pub fn cluster(&self) -> &Cluster {
        &self.app.cluster
    }

    /// With `--auth`: the token of a `system:masters` user (the kubeconfig's).
    pub fn admin_token(&self) -> Option<&str> {
        self.app.auth.then(|| self.app.tokens.admin_token())
    }

    /// A kube client configuration for this server (namespace `default`), with the admin token
    /// under `--auth`.
    pub fn kube_config(&self) -> Result<kube::Config, TestError> {
        self.kube_config_with_token(self.admin_token())
    }

    /// A kube client configuration that authenticates with `token` (none: anonymous).
    pub fn kube_config_with_token(&self, token: Option<&str>) -> Result<kube::Config, TestError> {
        let url = self.url();
        let uri = url
            .parse()
            .map_err(|e: ::http::uri::InvalidUri| TestError::Url {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        if let Some(token) = token {
            config.auth_info.token = Some(token.to_string().into());
        }
        if let Some(tls) = &self.app.tls {
            config.root_cert = Some(vec![tls.ca_der.clone()]);
        }
        Ok(config)
    }

    /// A kube client that authenticates with `token`. Needs a Tokio runtime context.
    pub fn client_with_token(&self, token: &str) -> Result<kube::Client, TestError> {
        let config = self.kube_config_with_token(Some(token))?;
        kube::Client::try_from(config).map_err(|source| TestError::Client {
            url: self.url(),
            source,
        })
    }

    /// A kube client for this server. Needs a Tokio runtime context.
    pub fn client(&self) -> Result<kube::Client, TestError> {
        let config = self.kube_config()?;
        kube::Client::try_from(config).map_err(|source| TestError::Client {
            url: self.url(),
            source,
        })
    }

    /// A kubeconfig document pointing at this server: with the admin token under `--auth`,
    /// without credentials otherwise.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_with_token(self.admin_token())
    }

    /// A kubeconfig document that authenticates with `token` (none: no credentials).
    pub fn kubeconfig_yaml_with_token(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("\n    token: {t}\n"),
            None => " {}\n".to_string(),
        };
        let ca = self
            .ca_pem()
            .map(|pem| {
                use base64::Engine;
                format!(
                    "    certificate-authority-data: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(pem)
                )
            })
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: snapmend-sim\n  cluster:\n{ca}    server: {url}\ncontexts:\n- name: snapmend-sim\n  context:\n    cluster: snapmend-sim\n    user: snapmend-sim\n    namespace: default\ncurrent-context: snapmend-sim\nusers:\n- name: snapmend-sim\n  user:{user}",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), TestError> {
        self.write_kubeconfig_with_token(path, self.admin_token())
    }

    /// Writes a kubeconfig that authenticates with `token`, e.g. a ServiceAccount's.
    pub fn write_kubeconfig_with_token(
        &self,
        path: &Path,
        token: Option<&str>,
    ) -> Result<(), TestError> {
        std::fs::write(path, self.kubeconfig_yaml_with_token(token)).map_err(|source| {
            TestError::WriteKubeconfig {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Every request answered since start (or the last [`SimServer::clear_requests`]), with
    /// its verb (`list` and `watch` apart), resource, User-Agent, status and response size.
    pub fn requests(&self) -> Vec<audit::RequestRecord> {
        self.app.requests.snapshot()
    }

    /// The logged requests refused as unauthenticated (401) or unauthorized (403), as
    /// `verb resource path -> status` lines: empty when every identity had what it needed.
    pub fn refused_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 401 || r.status == 403)
            .map(|r| format!("{} {} -> {}", r.key(), r.path, r.status))
            .collect()
    }

    /// Forgets the logged requests, e.g. once clients have started and listed.
    pub fn clear_requests(&self) {
        self.app.requests.clear();
    }

    /// Shrinks the watch history, so resuming from older versions yields 410 Expired.
    pub fn set_history_window(&self, window: usize) {
        self.app.cluster.set_history_window(window);
    }

    /// Ends every open watch and forgets the history: clients that missed changes must
    /// re-list (their resume gets 410), as after an etcd compaction.
    pub fn expire_watches(&self) {
        self.app.cluster.compact();
        self.app.end_all_watches();
    }

    /// Ends every open watch; clients resume from their last resourceVersion.
    pub fn end_watches(&self) {
        self.app.end_all_watches();
    }

    /// Stops serving, as if the API server went down: open watches end, new connections are
    /// refused. The objects stay; [`SimServer::resume`] serves them again on the same port.
    pub async fn pause(&self) {
        self.app.current_shutdown().cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task {
            // Connections that linger past the grace period are cut.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Serves again on the same port after [`SimServer::pause`] (a no-op while serving).
    pub async fn resume(&self) -> Result<(), TestError> {
        if self
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| TestError::Bind {
                addr: self.addr,
                source,
            })?;
        *self.app.shutdown.lock().unwrap_or_else(|p| p.into_inner()) = CancellationToken::new();
        let task = serve(self.app.clone(), listener);
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(addr = %self.addr, "snapmend-sim serving again");
        Ok(())
    }

    /// A restart of the API server: pause, then resume on the same port with the same objects.
    pub async fn restart(&self) -> Result<(), TestError> {
        self.pause().await;
        self.resume().await
    }

    /// Stops serving and ends open watches.
    pub async fn stop(self) {
        self.pause().await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.app.controllers.cancel();
        self.app.current_shutdown().cancel();
    }
}

/// A server on its own runtime in its own thread, for synchronous tests and tools. It can be
/// started and dropped anywhere, including inside another Tokio runtime.
pub struct BackgroundSim {
    server: Arc<SimServer>,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Ready = Result<(Arc<SimServer>, tokio::runtime::Handle), TestError>;

impl BackgroundSim {
    pub fn start() -> Result<Self, TestError> {
        Self::start_with(SimConfig::default())
    }

    pub fn start_with(config: SimConfig) -> Result<Self, TestError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("snapmend-sim".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("snapmend-sim")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(TestError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match SimServer::start_with(config).await {
                        Ok(server) => {
                            let server = Arc::new(server);
                            let _ = ready_tx
                                .send(Ok((server.clone(), tokio::runtime::Handle::current())));
                            // A dropped sender also stops the server.
                            let _ = stop_rx.await;
                            server.pause().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(TestError::Runtime)?;
        let (server, handle) = ready_rx.recv().map_err(|_| {
            TestError::Runtime(std::io::Error::other(
                "the snapmend-sim thread ended before serving",
            ))
        })??;
        Ok(Self {
            server,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn server(&self) -> &SimServer {
        &self.server
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), TestError> {
        self.server.write_kubeconfig(path)
    }

    /// The runtime the server runs on (e.g. to build and use a kube client from sync code).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the snapmend-sim thread panicked");
        }
    }
}

impl Drop for BackgroundSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
