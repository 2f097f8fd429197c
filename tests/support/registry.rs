//! Test fixtures for registry tests: Debian's `docker-registry` on 127.0.0.1 (anonymous, htpasswd Basic,
//! or token auth over TLS with a GCR-shaped token server of ours), a fault-injecting proxy, and hand-built
//! OCI/Docker test images. Everything is torn down on Drop.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rkube::image::Digest;
use rkube::image::config::{Endpoint, RegistriesConfig, Scheme};
use rkube::image::credentials::Credential;
use rkube::image::registry::RegistryClient;
use rkube::image::registry::client::{BlobData, CredentialLookup, Repo, RetryPolicy};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const BASIC_USER: &str = "testuser";
pub const BASIC_PASSWORD: &str = "testpassword";
const BASIC_HTPASSWD: &str = "testuser:$2y$05$8/q2bfRcX74EuxGf0qOcSuhWDQJXrgWiy6Fi73/JM2tKC66qSrLve\n";
/// The service-account key the token server accepts as `_json_key`.
pub const JSON_KEY: &str = r#"{"type":"service_account","project_id":"rkube-test","client_email":"puller@rkube-test.iam.gserviceaccount.com"}"#;
/// The access token the token server accepts as `oauth2accesstoken`.
pub const ACCESS_TOKEN: &str = "ya29.rkube-test-access-token";
/// The refresh token (docker `identitytoken`) the token server's OAuth2 endpoint accepts.
pub const REFRESH_TOKEN: &str = "rkube-test-refresh-token";
const SERVICE: &str = "test-registry";
const ISSUER: &str = "test-issuer";

/// How the registry authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Anonymous,
    Basic,
    Token,
}

/// A running `docker-registry` owned by one test.
pub struct TestRegistry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mode: Mode,
    /// PEM file of the CA that signed the registry's TLS cert (token mode).
    pub ca_file: Option<PathBuf>,
    pub token_server: Option<Arc<TokenState>>,
    token_task: Option<tokio::task::JoinHandle<()>>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestRegistry {
    /// Starts a registry in `mode`; token mode must be called inside a tokio runtime.
    pub fn start(mode: Mode) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let mut http_tls = String::new();
        let mut auth = String::new();
        let mut ca_file = None;
        let mut token_server = None;
        let mut token_task = None;
        match mode {
            Mode::Anonymous => {}
            Mode::Basic => {
                std::fs::write(d.join("htpasswd"), BASIC_HTPASSWD).unwrap();
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            Mode::Token => {
                let pki = Pki::generate();
                std::fs::write(d.join("ca.pem"), &pki.ca_pem).unwrap();
                std::fs::write(d.join("tls.crt"), &pki.tls_cert_pem).unwrap();
                std::fs::write(d.join("tls.key"), &pki.tls_key_pem).unwrap();
                std::fs::write(d.join("signer.crt"), &pki.signer_cert_pem).unwrap();
                ca_file = Some(d.join("ca.pem"));
                http_tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("tls.crt").display(),
                    d.join("tls.key").display()
                );
                let state = Arc::new(TokenState::new(pki.signer_pkcs8, pki.signer_cert_der));
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                let tport = listener.local_addr().unwrap().port();
                let app = axum::Router::new()
                    .route("/v2/token", axum::routing::get(token_handler).post(oauth_handler))
                    .with_state(state.clone());
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                token_task = Some(tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }));
                token_server = Some(state);
                auth = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/v2/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    d.join("signer.crt").display()
                );
            }
        }
        let cfg = format!(
            "version: 0.1\nlog: {{level: warn, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_tls}{auth}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry must be installed");
        let mut reg = TestRegistry { child, dir, port, mode, ca_file, token_server, token_task };
        reg.wait_listening();
        reg
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "registry did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A registries config that trusts this registry's CA (token mode) and nothing else.
    pub fn config(&self) -> RegistriesConfig {
        let mut c = RegistriesConfig::default();
        if let Some(ca) = &self.ca_file {
            c.ca.insert(self.host(), ca.clone());
        }
        c
    }

    /// The endpoint clients should use.
    pub fn endpoint(&self) -> Endpoint {
        let scheme = if self.mode == Mode::Token { Scheme::Https } else { Scheme::Http };
        Endpoint { scheme, host: self.host(), mirror: false, alias: None }
    }

    /// A repository handle at this registry.
    pub fn repo(&self, name: &str) -> Repo {
        Repo { endpoint: self.endpoint(), name: name.into() }
    }

    /// A client with the credentials this registry accepts (admin push rights) and fast retries.
    pub fn admin_client(&self) -> RegistryClient {
        let cred = match self.mode {
            Mode::Anonymous => None,
            Mode::Basic => {
                Some(Credential::Basic { username: BASIC_USER.into(), password: BASIC_PASSWORD.into() })
            }
            Mode::Token => {
                Some(Credential::Basic { username: "_json_key".into(), password: JSON_KEY.into() })
            }
        };
        client_with(self.config(), cred)
    }
}

/// A client with one credential for every host and short retry delays.
pub fn client_with(config: RegistriesConfig, cred: Option<Credential>) -> RegistryClient {
    let lookup: CredentialLookup = Arc::new(move |_host: &str| cred.clone());
    RegistryClient::new(config, lookup)
        .with_retry(RetryPolicy { attempts: 3, base_delay: Duration::from_millis(20) })
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.token_task.take() {
            t.abort();
        }
    }
}

/// Certificates for token mode: a CA + TLS leaf for 127.0.0.1, and a self-signed token signer.
struct Pki {
    ca_pem: String,
    tls_cert_pem: String,
    tls_key_pem: String,
    signer_cert_pem: String,
    signer_cert_der: Vec<u8>,
    signer_pkcs8: Vec<u8>,
}

impl Pki {
    fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "rkube test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let tls_key = KeyPair::generate().unwrap();
        let mut tls_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        tls_params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let tls_cert = tls_params.signed_by(&tls_key, &ca).unwrap();
        let signer_key = KeyPair::generate().unwrap();
        let mut signer_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        signer_params.distinguished_name.push(DnType::CommonName, "rkube token signer");
        let signer = signer_params.self_signed(&signer_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            tls_cert_pem: tls_cert.pem(),
            tls_key_pem: tls_key.serialize_pem(),
            signer_cert_pem: signer.pem(),
            signer_cert_der: signer.der().to_vec(),
            signer_pkcs8: signer_key.serialize_der(),
        }
    }
}

/// The GCR-shaped token server's state: signing key, counters, and knobs for expiry tests.
pub struct TokenState {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    rng: SystemRandom,
    /// Token requests answered with a token.
    pub issued: AtomicUsize,
    /// Token requests refused (bad or missing credentials).
    pub refused: AtomicUsize,
    /// This many next tokens are minted already expired (beyond the registry's 60 s leeway).
    pub expire_next: AtomicUsize,
}

impl TokenState {
    fn new(pkcs8: Vec<u8>, cert_der: Vec<u8>) -> TokenState {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        TokenState {
            key,
            cert_der,
            rng,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            expire_next: AtomicUsize::new(0),
        }
    }

    fn mint(&self, subject: &str, access: serde_json::Value, expired: bool) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let exp = if expired { now - 120 } else { now + 300 };
        let header = serde_json::json!({
            "typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": exp, "nbf": now - 180, "iat": now - 180,
            "jti": format!("{now}-{}", self.issued.load(Ordering::SeqCst)),
            "access": access,
        });
        let signing_input =
            format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", b64(sig.as_ref()))
    }
}

/// `GET /v2/token?service=&scope=`: GCR's shape. Accepts `_json_key:<key>` and `oauth2accesstoken:<token>`;
/// anonymous callers get pull access to `public/*` only.
async fn token_handler(
    State(s): State<Arc<TokenState>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let user = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(h) => {
            let decoded = h
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some(("_json_key", k)) if k == JSON_KEY => Some("_json_key".to_string()),
                Some(("oauth2accesstoken", t)) if t == ACCESS_TOKEN => Some("oauth2accesstoken".to_string()),
                _ => {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::UNAUTHORIZED, "{\"details\":\"invalid credentials\"}")
                        .into_response();
                }
            }
        }
    };
    if query.iter().any(|(k, v)| k == "service" && v != SERVICE) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let mut access = Vec::new();
    for (_, scope) in query.iter().filter(|(k, _)| k == "scope") {
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        if parts.len() != 3 || parts[0] != "repository" {
            continue;
        }
        let mut actions: Vec<&str> = parts[2].split(',').collect();
        if user.is_none() {
            if !parts[1].starts_with("public/") {
                s.refused.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::UNAUTHORIZED, "{\"details\":\"authentication required\"}")
                    .into_response();
            }
            actions.retain(|a| *a == "pull");
        }
        access.push(serde_json::json!({"type": "repository", "name": parts[1], "actions": actions}));
    }
    let expired =
        s.expire_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let token = s.mint(user.as_deref().unwrap_or("anonymous"), serde_json::Value::Array(access), expired);
    s.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300})).into_response()
}

/// `POST /v2/token` (OAuth2 `grant_type=refresh_token`, docker's `identitytoken`): a valid refresh token
/// gets an access token for the requested scope.
async fn oauth_handler(
    State(s): State<Arc<TokenState>>,
    axum::extract::Form(form): axum::extract::Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("refresh_token") || get("refresh_token") != Some(REFRESH_TOKEN) {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_grant\"}").into_response();
    }
    let scope = get("scope").unwrap_or_default();
    let parts: Vec<&str> = scope.splitn(3, ':').collect();
    let access = match parts.as_slice() {
        ["repository", name, actions] => {
            serde_json::json!([{"type": "repository", "name": name, "actions": actions.split(',').collect::<Vec<_>>()}])
        }
        _ => serde_json::json!([]),
    };
    let token = s.mint("refresh-user", access, false);
    s.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"access_token": token, "expires_in": 300, "scope": scope})).into_response()
}

/// Faults the proxy injects, each counting down.
#[derive(Default)]
pub struct Faults {
    /// Answer this many next blob/manifest requests with 500.
    pub fail_next: AtomicUsize,
    /// Cut this many next blob bodies in half (connection aborted mid-body).
    pub truncate_next_blob: AtomicUsize,
    /// When set, only blobs whose path contains this string are truncated.
    pub truncate_only: std::sync::Mutex<Option<String>>,
    /// Flip one byte in every blob body (same length), so digests never match.
    pub corrupt_blobs: AtomicBool,
    /// Requests seen.
    pub requests: AtomicUsize,
}

/// A plain-HTTP proxy on 127.0.0.1 in front of a registry that injects [`Faults`].
pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:port`); call inside a tokio runtime.
    pub fn start(upstream: String) -> FaultProxy {
        let faults = Arc::new(Faults::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = (faults.clone(), upstream, reqwest::Client::new());
        let app = axum::Router::new().fallback(proxy_handler).with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { port, faults, task }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_handler(
    State(state): State<Arc<(Arc<Faults>, String, reqwest::Client)>>,
    req: Request<Body>,
) -> Response {
    let (faults, upstream, http) = (&state.0, &state.1, &state.2);
    faults.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let is_content = path.contains("/blobs/") || path.contains("/manifests/");
    let take =
        |c: &AtomicUsize| c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if is_content && take(&faults.fail_next) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let method = req.method().clone();
    let mut out = http.request(method.clone(), format!("{upstream}{path}"));
    for (k, v) in req.headers() {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut data = resp.bytes().await.unwrap_or_default().to_vec();
    let is_blob_get =
        method == reqwest::Method::GET && path.contains("/blobs/sha256:") && status.is_success();
    let mut builder = Response::builder().status(status);
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            builder = builder.header(k, v);
        }
    }
    let truncate_this = match faults.truncate_only.lock().unwrap().as_deref() {
        Some(only) => path.contains(only),
        None => true,
    };
    if is_blob_get && data.len() > 1 && truncate_this && take(&faults.truncate_next_blob) {
        let half = bytes::Bytes::from(data[..data.len() / 2].to_vec());
        // Send the headers and half the body, let them reach the client, then drop the connection.
        use futures_util::StreamExt as _;
        let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(half)]).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("injected truncation"))
            }),
        );
        return builder.header("content-length", data.len()).body(Body::from_stream(stream)).unwrap();
    }
    if is_blob_get && !data.is_empty() && faults.corrupt_blobs.load(Ordering::SeqCst) {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    builder.body(Body::from(data)).unwrap()
}

/// Layer compressions a test image may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Builds an uncompressed layer tar by hand.
pub struct LayerTar(tar::Builder<Vec<u8>>);

impl Default for LayerTar {
    fn default() -> Self {
        LayerTar::new()
    }
}

impl LayerTar {
    pub fn new() -> LayerTar {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        LayerTar(b)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// `dir/.wh.name`: deletes `dir/name` from lower layers.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        self.file(&p, b"")
    }

    /// `dir/.wh..wh..opq`: hides the lower contents of `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A blob with its digest and media type.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub data: Vec<u8>,
    pub media_type: String,
}

impl Blob {
    fn new(data: Vec<u8>, media_type: &str) -> Blob {
        Blob { digest: Digest::sha256_of(&data), data, media_type: media_type.into() }
    }
    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.data.len()})
    }
}

/// A single-platform test image.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub diff_ids: Vec<Digest>,
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// Builds an image from layer tars. `docker` selects Docker schema2 media types (gzip layers only).
pub fn build_image(layers: &[(Vec<u8>, Compression)], arch: &str, docker: bool) -> TestImage {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        let media = match (docker, c) {
            (true, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (true, _) => panic!("docker schema2 layers are gzip"),
            (false, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (false, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (false, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        diff_ids.push(Digest::sha256_of(tar));
        blobs.push(Blob::new(compress(tar, *c), media));
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": [],
    });
    let (config_media, manifest_media) = if docker {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    } else {
        ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.manifest.v1+json")
    };
    let config = Blob::new(serde_json::to_vec(&config).unwrap(), config_media);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest_media,
        "config": config.descriptor(),
        "layers": blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(serde_json::to_vec(&manifest).unwrap(), manifest_media);
    TestImage { manifest, config, layers: blobs, diff_ids }
}

/// An OCI index over `images` (each with os/arch/variant) plus an attestation-like `unknown` entry.
pub fn build_index(images: &[(&TestImage, &str, &str, Option<&str>)]) -> Blob {
    let mut manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(img, os, arch, variant)| {
            let mut d = img.manifest.descriptor();
            let mut p = serde_json::json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                p["variant"] = serde_json::json!(v);
            }
            d["platform"] = p;
            d
        })
        .collect();
    let mut att = images[0].0.manifest.descriptor();
    att["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
    manifests.insert(0, att);
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    });
    Blob::new(serde_json::to_vec(&index).unwrap(), "application/vnd.oci.image.index.v1+json")
}

/// Pushes blobs then the manifest under `tag` with our client.
pub async fn push_image(client: &RegistryClient, repo: &Repo, tag: &str, img: &TestImage) {
    for b in img.layers.iter().chain(std::iter::once(&img.config)) {
        if !client.blob_exists(repo, &b.digest).await.unwrap() {
            client.upload_blob(repo, &b.digest, BlobData::Memory(b.data.clone().into())).await.unwrap();
        }
    }
    client.put_manifest(repo, tag, &img.manifest.media_type, img.manifest.data.clone().into()).await.unwrap();
}

/// Pushes an index (its images must be pushed already, by digest).
pub async fn push_index(
    client: &RegistryClient,
    repo: &Repo,
    tag: &str,
    index: &Blob,
    images: &[&TestImage],
) {
    for img in images {
        push_image(client, repo, &img.manifest.digest.to_string(), img).await;
    }
    client.put_manifest(repo, tag, &index.media_type, index.data.clone().into()).await.unwrap();
}

/// Writes an OCI image layout for `img` tagged `tag` (for skopeo as an independent pusher).
pub fn write_oci_layout(dir: &Path, tag: &str, img: &TestImage) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in img.layers.iter().chain([&img.config, &img.manifest]) {
        std::fs::write(blobs.join(b.digest.hex()), &b.data).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut d = img.manifest.descriptor();
    d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [d]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}
