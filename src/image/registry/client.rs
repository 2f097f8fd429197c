//! The Distribution API client: per-endpoint HTTP clients (custom CA), auth learned from challenges
//! (anonymous, Basic, Bearer token with a cache per (registry, scope) and one re-auth on 401/403-expired),
//! and retries with backoff for 5xx and connection errors.

use crate::image::config::{Endpoint, RegistriesConfig};
use crate::image::credentials::Credential;
use crate::image::digest::Digest;
use crate::image::manifest::MANIFEST_ACCEPT;
use crate::image::registry::challenge::{self, Challenge};
pub use crate::image::registry::error::{RegistryError, error_chain};
use crate::image::registry::error::{error_from, registry_message};
use crate::image::registry::token::{TokenCache, TokenResponse};
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// Finds the credential for a registry host (`host[:port]` of the endpoint actually contacted).
pub type CredentialLookup = Arc<dyn Fn(&str) -> Option<Credential> + Send + Sync>;

/// What a request intends to do; decides the token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
}

/// A repository at one endpoint.
#[derive(Debug, Clone)]
pub struct Repo {
    pub endpoint: Endpoint,
    pub name: String,
}

impl Repo {
    fn scope(&self, action: Action) -> String {
        match action {
            Action::Pull => format!("repository:{}:pull", self.name),
            Action::Push => format!("repository:{}:pull,push", self.name),
        }
    }
    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{}", self.endpoint.base_url(), self.name, tail)
    }
}

/// How a host wants to be authenticated, learned from its challenge.
#[derive(Debug, Clone)]
enum HostAuth {
    Anonymous,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// Retry behaviour for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, base_delay: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// The pause before retry number `n` (0-based): exponential backoff.
    pub fn delay(&self, n: u32) -> Duration {
        self.base_delay * 2u32.saturating_pow(n.min(6))
    }
}

/// A manifest as fetched: raw bytes, content type and the registry's digest header.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub digest: Digest,
}

/// A blob to upload: in memory, or a file streamed from disk (re-opened on every attempt).
#[derive(Debug, Clone)]
pub enum BlobData {
    Memory(Bytes),
    File { path: PathBuf, size: u64 },
}

impl BlobData {
    /// The blob's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            BlobData::Memory(b) => b.len() as u64,
            BlobData::File { size, .. } => *size,
        }
    }

    /// True for an empty blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh request body; a file that cannot be opened yields a body that fails with that error.
    fn body(&self) -> reqwest::Body {
        match self {
            BlobData::Memory(b) => reqwest::Body::from(b.clone()),
            BlobData::File { path, .. } => {
                let opened = std::fs::File::open(path).map(tokio::fs::File::from_std);
                let stream = futures_util::stream::unfold(Some(opened), |state| async move {
                    match state? {
                        Err(e) => Some((Err(e), None)),
                        Ok(mut f) => {
                            let mut buf = vec![0u8; 1 << 20];
                            match f.read(&mut buf).await {
                                Ok(0) => None,
                                Ok(n) => {
                                    buf.truncate(n);
                                    Some((Ok(Bytes::from(buf)), Some(Ok(f))))
                                }
                                Err(e) => Some((Err(e), None)),
                            }
                        }
                    }
                });
                reqwest::Body::wrap_stream(stream)
            }
        }
    }
}

/// The registry client. Cheap to share behind an `Arc`; safe to use from many tasks.
pub struct RegistryClient {
    config: RegistriesConfig,
    credentials: CredentialLookup,
    http: Mutex<HashMap<String, reqwest::Client>>,
    auth: Mutex<HashMap<String, HostAuth>>,
    tokens: TokenCache,
    retry: RetryPolicy,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client using `config` for endpoints/CAs and `credentials` for secrets.
    pub fn new(config: RegistriesConfig, credentials: CredentialLookup) -> RegistryClient {
        RegistryClient {
            config,
            credentials,
            http: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> RegistryClient {
        self.retry = retry;
        self
    }

    /// The registries config in use.
    pub fn config(&self) -> &RegistriesConfig {
        &self.config
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The credential for an endpoint: by its host, then (for a location) by the registry name it serves.
    fn credential(&self, ep: &Endpoint) -> Option<Credential> {
        (self.credentials)(&ep.host).or_else(|| ep.alias.as_deref().and_then(|a| (self.credentials)(a)))
    }

    fn http_for(&self, ep: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self.http.lock().unwrap_or_else(|e| e.into_inner());
        // A location's CA may come from its registry name, so that name is part of the key.
        let key = format!("{} {}", ep.host, ep.alias.as_deref().unwrap_or(""));
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(16)
            .user_agent(concat!("rkube/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = self.config.endpoint_ca_file(ep) {
            let ca_err = |detail: String| RegistryError::Ca {
                registry: ep.host.clone(),
                path: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificates in file".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client =
            b.build().map_err(|e| RegistryError::Connect { url: ep.base_url(), detail: e.to_string() })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// `GET /v2/`: checks the endpoint answers and learns how it wants to be authenticated.
    pub async fn ping(&self, ep: &Endpoint) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", ep.base_url());
        let http = self.http_for(ep)?;
        let resp = self.send_retrying(&url, || http.get(&url)).await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => {
                self.learn(ep, resp.headers());
                Ok(())
            }
            s if s.is_success() => {
                self.set_auth(ep, HostAuth::Anonymous);
                Ok(())
            }
            StatusCode::NOT_FOUND => Err(RegistryError::Protocol {
                registry: ep.host.clone(),
                what: "/v2/".into(),
                detail: "not a Distribution (v2) registry".into(),
            }),
            _ => Err(error_from(resp, &ep.host, "/v2/").await),
        }
    }

    fn set_auth(&self, ep: &Endpoint, a: HostAuth) {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).insert(ep.host.clone(), a);
    }

    /// Records the auth scheme a 401's challenges ask for: Bearer (with realm and service) over Basic.
    fn learn(&self, ep: &Endpoint, headers: &HeaderMap) {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        if let Some(b) = challenges.iter().find(|c| c.is_bearer())
            && let Some(realm) = b.param("realm")
        {
            self.set_auth(
                ep,
                HostAuth::Bearer {
                    realm: realm.to_string(),
                    service: b.param("service").map(str::to_string),
                },
            );
        } else if challenges.iter().any(|c| c.is_basic()) {
            self.set_auth(ep, HostAuth::Basic);
        }
    }

    /// Sends with retries for connection errors and 5xx; no auth.
    async fn send_retrying(
        &self,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            match build().send().await {
                Ok(r) if r.status().is_server_error() && attempt + 1 < self.retry.attempts => {}
                Ok(r) => return Ok(r),
                Err(e)
                    if attempt + 1 < self.retry.attempts
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    tracing::debug!(url, error = %e, "retrying");
                }
                Err(e) => return Err(RegistryError::Connect { url: url.into(), detail: error_chain(&e) }),
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// The Authorization header for `scope` at `ep`, fetching a token if needed.
    async fn authorization(&self, ep: &Endpoint, scope: &str) -> Result<Option<String>, RegistryError> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).get(&ep.host).cloned();
        match auth {
            None | Some(HostAuth::Anonymous) => Ok(None),
            Some(HostAuth::Basic) => Ok(match self.credential(ep) {
                Some(Credential::Basic { username, password }) => Some(basic_header(&username, &password)),
                _ => None,
            }),
            Some(HostAuth::Bearer { realm, service }) => {
                if let Some(t) = self.tokens.get(&ep.host, scope, Instant::now()) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (token, lifetime) = self.fetch_token(ep, &realm, service.as_deref(), scope).await?;
                self.tokens.put(&ep.host, scope, token.clone(), lifetime, Instant::now());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Exchanges credentials (or none) for a bearer token at `realm`.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let err =
            |detail: String| RegistryError::Token { registry: ep.host.clone(), realm: realm.into(), detail };
        let http = self.http_for(ep)?;
        let cred = self.credential(ep);
        let resp = match &cred {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", "rkube".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("scope", scope.to_string()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                self.send_retrying(realm, || http.post(realm).form(&form)).await?
            }
            _ => {
                let mut q: Vec<(&str, &str)> = vec![("scope", scope)];
                if let Some(s) = service {
                    q.push(("service", s));
                }
                let header = match &cred {
                    Some(Credential::Basic { username, password }) => Some(basic_header(username, password)),
                    _ => None,
                };
                self.send_retrying(realm, || {
                    let r = http.get(realm).query(&q);
                    match &header {
                        Some(h) => r.header(AUTHORIZATION, h),
                        None => r,
                    }
                })
                .await?
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = if cred.is_some() {
                "credentials rejected"
            } else {
                "anonymous access refused (no credentials)"
            };
            return Err(RegistryError::Unauthorized {
                registry: ep.host.clone(),
                what: scope.into(),
                detail: why.into(),
            });
        }
        if !status.is_success() {
            return Err(err(format!("answered {status}")));
        }
        let body = resp.bytes().await.map_err(|e| err(error_chain(&e)))?;
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| err(format!("bad token response: {e}")))?;
        let token = t.bearer().ok_or_else(|| err("token response has no token".into()))?.to_string();
        Ok((token, t.lifetime()))
    }

    /// Sends an authenticated request built by `build`, retrying transient failures and re-authenticating
    /// once when the registry rejects the token (401, or 403 saying it expired).
    async fn send(
        &self,
        repo: &Repo,
        action: Action,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let ep = &repo.endpoint;
        let scope = repo.scope(action);
        let http = self.http_for(ep)?;
        let mut reauthed = false;
        let mut learned = false;
        loop {
            let auth = self.authorization(ep, &scope).await?;
            let url = repo.url("");
            let resp = self
                .send_retrying(&url, || {
                    let r = build(&http);
                    match &auth {
                        Some(h) => r.header(AUTHORIZATION, h),
                        None => r,
                    }
                })
                .await?;
            let status = resp.status();
            let expired_403 = status == StatusCode::FORBIDDEN;
            if status == StatusCode::UNAUTHORIZED || expired_403 {
                let (headers, body) = (resp.headers().clone(), resp.text().await.unwrap_or_default());
                let expired = !expired_403 || body.to_ascii_lowercase().contains("expired");
                // A 401 to a request without credentials only teaches the scheme; it costs no re-auth.
                let learning = auth.is_none() && status == StatusCode::UNAUTHORIZED && !learned;
                if learning || (!reauthed && expired) {
                    if learning {
                        learned = true;
                    } else {
                        reauthed = true;
                    }
                    self.tokens.invalidate(&ep.host, &scope);
                    if status == StatusCode::UNAUTHORIZED {
                        self.learn(ep, &headers);
                    }
                    continue;
                }
                let said = registry_message(&body).unwrap_or_else(|| status.to_string());
                let detail = if self.credential(ep).is_some() {
                    format!("credentials rejected: {said}")
                } else {
                    format!("{said}; no credentials are configured for {}", ep.host)
                };
                return Err(RegistryError::Unauthorized {
                    registry: ep.host.clone(),
                    what: what.into(),
                    detail,
                });
            }
            return Ok(resp);
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`; verifies the body against a digest reference.
    pub async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let what = format!("manifest {}:{reference}", repo.name);
        let url = repo.url(&format!("manifests/{reference}"));
        let resp =
            self.send(repo, Action::Pull, &what, |h| h.get(&url).header(ACCEPT, MANIFEST_ACCEPT)).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp, &repo.endpoint.host, &what).await);
        }
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let header_digest =
            resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::Connect { url: url.clone(), detail: error_chain(&e) })?;
        let actual = Digest::sha256_of(&body);
        let expected = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => {
                header_digest.and_then(|h| h.parse::<Digest>().ok()).filter(|d| d.algorithm() == "sha256")
            }
        };
        if let Some(expected) = expected
            && expected != actual
        {
            let what = format!("{what} from {}", repo.endpoint.host);
            return Err(RegistryError::DigestMismatch { what, expected, actual });
        }
        Ok(FetchedManifest { body, content_type, digest: actual })
    }

    /// `HEAD /v2/<name>/manifests/<reference>`: the digest the registry reports, `None` when unknown.
    pub async fn head_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<Digest>, RegistryError> {
        let what = format!("manifest {}:{reference}", repo.name);
        let url = repo.url(&format!("manifests/{reference}"));
        let resp =
            self.send(repo, Action::Pull, &what, |h| h.head(&url).header(ACCEPT, MANIFEST_ACCEPT)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let header = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
                let digest =
                    header.and_then(|h| h.parse::<Digest>().ok()).ok_or_else(|| RegistryError::Protocol {
                        registry: repo.endpoint.host.clone(),
                        what: what.clone(),
                        detail: "HEAD answer has no valid Docker-Content-Digest".into(),
                    })?;
                Ok(Some(digest))
            }
            _ => Err(error_from(resp, &repo.endpoint.host, &what).await),
        }
    }

    /// `GET /v2/<name>/blobs/<digest>` as a streaming response (status already checked).
    pub async fn get_blob(&self, repo: &Repo, digest: &Digest) -> Result<Response, RegistryError> {
        let what = format!("blob {digest} of {}", repo.name);
        let url = repo.url(&format!("blobs/{digest}"));
        let resp = self.send(repo, Action::Pull, &what, |h| h.get(&url)).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp, &repo.endpoint.host, &what).await);
        }
        Ok(resp)
    }

    /// A whole small blob (e.g. a config), verified against `digest`; truncated bodies are retried.
    pub async fn get_blob_bytes(&self, repo: &Repo, digest: &Digest) -> Result<Bytes, RegistryError> {
        let what = format!("blob {digest} of {}", repo.name);
        let mut attempt = 0;
        loop {
            let resp = self.get_blob(repo, digest).await?;
            match resp.bytes().await {
                Ok(body) => {
                    let actual = Digest::sha256_of(&body);
                    if &actual == digest {
                        return Ok(body);
                    }
                    if attempt + 1 >= self.retry.attempts {
                        return Err(RegistryError::DigestMismatch {
                            what: format!("{what} from {}", repo.endpoint.host),
                            expected: digest.clone(),
                            actual,
                        });
                    }
                }
                Err(e) if attempt + 1 >= self.retry.attempts => {
                    return Err(RegistryError::Connect {
                        url: repo.url(&format!("blobs/{digest}")),
                        detail: error_chain(&e),
                    });
                }
                Err(_) => {}
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: does the registry already have it?
    pub async fn blob_exists(&self, repo: &Repo, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("blob {digest} of {}", repo.name);
        let url = repo.url(&format!("blobs/{digest}"));
        let resp = self.send(repo, Action::Push, &what, |h| h.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(error_from(resp, &repo.endpoint.host, &what).await),
        }
    }

    /// Uploads a blob: `POST` to start, then one monolithic `PUT ?digest=` streaming the whole body.
    pub async fn upload_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        data: BlobData,
    ) -> Result<(), RegistryError> {
        let what = format!("upload of blob {digest} to {}", repo.name);
        let start_url = repo.url("blobs/uploads/");
        let resp = self.send(repo, Action::Push, &what, |h| h.post(&start_url)).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(error_from(resp, &repo.endpoint.host, &what).await);
        }
        let location = self.location(repo, &resp, &what)?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={digest}");
        let resp = self
            .send(repo, Action::Push, &what, |h| {
                h.request(Method::PUT, &put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, data.len())
                    .body(data.body())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_from(resp, &repo.endpoint.host, &what).await);
        }
        Ok(())
    }

    /// Cross-repository mount (`POST ?mount=&from=`); `false` when the registry fell back to an upload session.
    pub async fn mount_blob(&self, repo: &Repo, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        let what = format!("mount of blob {digest} into {}", repo.name);
        let url = repo.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
        let resp = self.send(repo, Action::Push, &what, |h| h.post(&url)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            _ => Err(error_from(resp, &repo.endpoint.host, &what).await),
        }
    }

    /// `PUT /v2/<name>/manifests/<reference>`; returns the manifest digest.
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest, RegistryError> {
        let what = format!("manifest {}:{reference}", repo.name);
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self
            .send(repo, Action::Push, &what, |h| {
                h.put(&url).header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_from(resp, &repo.endpoint.host, &what).await);
        }
        Ok(Digest::sha256_of(&body))
    }

    fn location(&self, repo: &Repo, resp: &Response, what: &str) -> Result<String, RegistryError> {
        let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            RegistryError::Protocol {
                registry: repo.endpoint.host.clone(),
                what: what.into(),
                detail: "upload session has no Location".into(),
            }
        })?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else {
            format!("{}{}", repo.endpoint.base_url(), loc)
        })
    }
}

fn basic_header(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows() {
        let r = RetryPolicy { attempts: 3, base_delay: Duration::from_millis(10) };
        assert_eq!(r.delay(0), Duration::from_millis(10));
        assert_eq!(r.delay(2), Duration::from_millis(40));
    }

    #[test]
    fn scopes() {
        let repo = Repo {
            endpoint: Endpoint {
                scheme: crate::image::config::Scheme::Http,
                host: "h:1".into(),
                mirror: false,
                alias: None,
            },
            name: "a/b".into(),
        };
        assert_eq!(repo.scope(Action::Pull), "repository:a/b:pull");
        assert_eq!(repo.scope(Action::Push), "repository:a/b:pull,push");
        assert_eq!(repo.url("manifests/x"), "http://h:1/v2/a/b/manifests/x");
    }
}
