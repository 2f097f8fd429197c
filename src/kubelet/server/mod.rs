//! The node's HTTPS API (the kubelet's port 10250 paths): `/healthz`, `/containerLogs`, `/exec`
//! (WebSocket channel protocol v5/v4) and `/portForward` (SPDY/3.1 inside a WebSocket). Only
//! mutual TLS: a client certificate signed by the given CA whose CN is the master's
//! kubelet-client name; no certificate is 401, another name 403. Pods are found by namespace and
//! name in the node's pod state files, matched on the stored Pod's metadata.

pub mod exec;
pub mod logs;
pub mod portforward;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Path as UrlPath, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;

use super::node::NodeConfig;
use super::state::{self, ContainerRecord, PodState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubelet API: loading {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("kubelet API: TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("kubelet API: client CA {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("kubelet API: listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the node's API server needs.
#[derive(Debug, Clone)]
pub struct KubeletServerConfig {
    pub listen: SocketAddr,
    /// PEM serving certificate (chain) and key of this node.
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// PEM CA whose signatures client certificates must carry.
    pub client_ca: PathBuf,
    /// The only client certificate CN allowed (the master's, `rkube-apiserver-kubelet-client`).
    pub allowed_client_cn: String,
    pub node: NodeConfig,
}

/// The CN the master's kubelet client certificate has.
pub const APISERVER_CLIENT_CN: &str = "rkube-apiserver-kubelet-client";

fn load_err(path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> ServerError + '_ {
    move |e| ServerError::Load { path: path.to_path_buf(), message: e.to_string() }
}

/// rustls server configuration: our certificate, client certificates verified against
/// `client_ca` when presented (their absence is answered with 401 by the router).
pub fn tls_config(config: &KubeletServerConfig) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.serving_cert)
        .map_err(load_err(&config.serving_cert))?
        .collect::<Result<_, _>>()
        .map_err(load_err(&config.serving_cert))?;
    let key = PrivateKeyDer::from_pem_file(&config.serving_key).map_err(load_err(&config.serving_key))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&config.client_ca).map_err(load_err(&config.client_ca))? {
        let ca = ca.map_err(load_err(&config.client_ca))?;
        roots
            .add(ca)
            .map_err(|e| ServerError::ClientCa { path: config.client_ca.clone(), message: e.to_string() })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServerError::ClientCa { path: config.client_ca.clone(), message: e.to_string() })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(ServerError::Tls)?;
    // Upgrades (exec, port-forward) need HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The CN of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// Binds `config.listen` and serves until `shutdown` completes.
pub async fn serve(
    config: KubeletServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    serve_listener(listener, config, shutdown).await
}

/// Serves on an already bound listener until `shutdown` completes.
pub async fn serve_listener(
    listener: TcpListener,
    config: KubeletServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let tls = tls_config(&config)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(Arc::new(NodeApi {
        node: config.node,
        allowed_client_cn: config.allowed_client_cn,
        sampler: Default::default(),
    }));
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("kubelet API: accept failed: {e}");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let peer = Peer(
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c)),
            );
            let svc = TowerToHyperService::new(app.layer(Extension(peer)));
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// The verified client certificate's CN of a connection (`None`: no certificate).
#[derive(Debug, Clone)]
struct Peer(Option<String>);

/// Shared state of the handlers.
pub struct NodeApi {
    pub node: NodeConfig,
    pub allowed_client_cn: String,
    /// The last usage reading, the base of the next CPU rate.
    pub sampler: super::stats::Sampler,
}

/// The router (authentication is a layer reading the connection's [`Peer`]).
fn router(api: Arc<NodeApi>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .route("/metrics/resource", get(resource_metrics_handler))
        .route("/stats/summary", get(summary_handler))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", get(exec_handler).post(exec_handler))
        .route("/portForward/{ns}/{pod}", get(port_forward_handler).post(port_forward_handler))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

async fn authenticate(
    State(api): State<Arc<NodeApi>>,
    peer: Option<Extension<Peer>>,
    req: Request,
    next: Next,
) -> Response {
    match peer.and_then(|Extension(Peer(cn))| cn) {
        None => status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        Some(cn) if cn != api.allowed_client_cn => status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Forbidden (user={cn}, verb={}, resource=nodes, subresource=proxy)", req.method()),
        ),
        Some(_) => next.run(req).await,
    }
}

/// `/metrics`: the node's own metrics (pod starts, runtime operations, image pulls).
async fn metrics_handler(State(api): State<Arc<NodeApi>>) -> Response {
    let m = super::metrics::global();
    m.running_pods.set(state::list(&api.node.pods_dir()).len() as i64);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], m.encode()).into_response()
}

/// `/metrics/resource`: cumulative CPU and working sets of the node and its containers.
async fn resource_metrics_handler(State(api): State<Arc<NodeApi>>) -> Response {
    let node = api.node.clone();
    match tokio::task::spawn_blocking(move || super::stats::snapshot(&node)).await {
        Ok(s) => ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], super::stats::resource_metrics(&s))
            .into_response(),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &format!("reading stats: {e}")),
    }
}

/// `/stats/summary`: the Summary API subset (CPU rates over at least a second, working sets).
async fn summary_handler(State(api): State<Arc<NodeApi>>) -> Response {
    let (before, now) = api.sampler.pair(&api.node).await;
    let body = super::stats::summary("", &before, &now);
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A Kubernetes `Status` error response.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A pod found on this node: its directory and state.
pub struct FoundPod {
    pub dir: PathBuf,
    pub state: PodState,
}

impl FoundPod {
    /// The pod directory's name (the pod's key on this node).
    pub fn key(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The record of `container` (app or init).
    pub fn container(&self, container: &str) -> Option<&ContainerRecord> {
        self.state.containers.iter().chain(&self.state.init_containers).find(|c| c.name == container)
    }
}

/// The pod `ns/name` among the node's pod state files.
pub fn find_pod(node: &NodeConfig, ns: &str, name: &str) -> Option<FoundPod> {
    let dir = node.pods_dir();
    state::list(&dir).into_iter().find_map(|key| {
        let pod_dir = dir.join(&key);
        let st = state::load(&pod_dir).ok()?;
        let md = &st.pod.metadata;
        (md.name.as_deref() == Some(name) && md.namespace.as_deref().unwrap_or("default") == ns)
            .then_some(FoundPod { dir: pod_dir, state: st })
    })
}

/// The pinned network namespace of a pod (the node's for hostNetwork pods).
pub fn pod_netns(node: &NodeConfig, pod: &FoundPod) -> Option<PathBuf> {
    let host_network = pod.state.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    if host_network { node.node_netns.clone() } else { Some(node.run_dir.join("netns").join(pod.key())) }
}

fn pod_not_found(name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", &format!("pods \"{name}\" not found"))
}

fn container_not_found(pod: &str, container: &str) -> Response {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("container {container} is not valid for pod {pod}"),
    )
}

/// Query pairs with repeats kept (`command=a&command=b`).
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect()
}

struct Liveness {
    runtime: crate::runtime::Runtime,
    id: String,
    dir: PathBuf,
    container: String,
}

impl logs::Liveness for Liveness {
    fn alive(&self) -> bool {
        if super::pod::is_running(&self.runtime, &self.id) {
            return true;
        }
        // Exited: more output comes only if it will be restarted.
        state::load(&self.dir)
            .is_ok_and(|s| !s.stopping && s.containers.iter().any(|c| c.name == self.container && !c.done))
    }
}

async fn container_logs(
    State(api): State<Arc<NodeApi>>,
    UrlPath((ns, name, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: HashMap<String, String> = query_pairs(raw.as_deref()).into_iter().collect();
    let opts = match logs::LogOptions::parse(&q, std::time::SystemTime::now()) {
        Ok(o) => o,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some(pod) = find_pod(&api.node, &ns, &name) else { return pod_not_found(&name) };
    let Some(record) = pod.container(&container).cloned() else {
        return container_not_found(&name, &container);
    };
    // The log file holds every run; the previous runs are the records before this run's start
    // (a container that never restarted has none, as for the kubelet).
    let previous = if opts.previous {
        if record.restarts == 0 {
            let m = format!("previous terminated container \"{container}\" in pod \"{name}\" not found");
            return status(StatusCode::BAD_REQUEST, "BadRequest", &m);
        }
        Some(record.started_at)
    } else {
        None
    };
    let mut opts = opts;
    if previous.is_some() {
        opts.follow = false;
    }
    let filter = logs::LogFilter::new(&opts, previous);
    let path = super::pod::log_file(&pod.dir, &record.name);
    let live =
        Liveness { runtime: api.node.runtime(), id: record.id.clone(), dir: pod.dir.clone(), container };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    tokio::task::spawn_blocking(move || logs::stream(path, opts, filter, live, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| {
            status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "building the response")
        })
}

async fn exec_handler(
    State(api): State<Arc<NodeApi>>,
    UrlPath((ns, name, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let params = exec::ExecParams::from_query(&query_pairs(raw.as_deref()));
    if params.command.is_empty() {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "you must specify at least 1 command");
    }
    let Some(pod) = find_pod(&api.node, &ns, &name) else { return pod_not_found(&name) };
    let Some(record) = pod.container(&container) else { return container_not_found(&name, &container) };
    let Ok(ws) = ws else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "exec needs a WebSocket upgrade with protocol v5.channel.k8s.io or v4.channel.k8s.io",
        );
    };
    let runtime = api.node.runtime();
    let id = record.id.clone();
    ws.protocols(exec::PROTOCOLS).on_upgrade(move |socket| exec::run(socket, runtime, id, params))
}

async fn port_forward_handler(
    State(api): State<Arc<NodeApi>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ports = match portforward::parse_ports(&query_pairs(raw.as_deref())) {
        Ok(p) => p,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let Some(pod) = find_pod(&api.node, &ns, &name) else { return pod_not_found(&name) };
    let Ok(ws) = ws else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port-forward needs a WebSocket upgrade with protocol SPDY/3.1+portforward.k8s.io or v4.channel.k8s.io",
        );
    };
    let netns = pod_netns(&api.node, &pod);
    let label = format!("{name}_{ns}");
    ws.protocols([portforward::PROTOCOL, portforward::CHANNEL_PROTOCOL]).on_upgrade(
        move |socket| async move {
            if socket.protocol().and_then(|p| p.to_str().ok()) == Some(portforward::PROTOCOL) {
                portforward::run(socket, netns, label).await
            } else if ports.is_empty() {
                // As the kubelet: the channel protocol needs the ports up front.
                let mut socket = socket;
                let _ = socket
                    .send(axum::extract::ws::Message::Text("at least one port must be specified".into()))
                    .await;
            } else {
                portforward::run_channels(socket, netns, label, ports).await
            }
        },
    )
}
