//! Registry credentials: docker's `config.json` (`auths`, `credHelpers`, `credsStore`, `DOCKER_CONFIG`) and
//! Kubernetes pull secrets (`kubernetes.io/dockerconfigjson`, legacy `kubernetes.io/dockercfg`) matched with
//! kubelet's keyring rules: globs only within host labels, port must match, key path is a prefix of the image
//! path, most specific key first.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A credential to present to a registry or its token service.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or an access token as password, e.g. GCR's `oauth2accesstoken`).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading docker config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing docker config {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("credential entry for {key:?}: `auth` is not base64 of user:password")]
    BadAuth { key: String },
    #[error("running docker-credential-{helper} for {registry}: {detail}")]
    Helper { helper: String, registry: String, detail: String },
    #[error("pull secret: {0}")]
    Secret(String),
}

/// One `auths` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
}

impl AuthEntry {
    /// The credential this entry holds: explicit username/password win over `auth`, then `identitytoken`.
    pub fn credential(&self, key: &str) -> Result<Option<Credential>, CredentialsError> {
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.into())));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password)
            && !u.is_empty()
        {
            return Ok(Some(Credential::Basic { username: u.clone(), password: p.clone() }));
        }
        let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) else { return Ok(None) };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| CredentialsError::BadAuth { key: key.into() })?;
        let text = String::from_utf8(raw).map_err(|_| CredentialsError::BadAuth { key: key.into() })?;
        let (u, p) = text.split_once(':').ok_or_else(|| CredentialsError::BadAuth { key: key.into() })?;
        Ok(Some(Credential::Basic { username: u.into(), password: p.into() }))
    }
}

/// docker's `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    pub cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    pub creds_store: Option<String>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Loads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialsError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| CredentialsError::Parse { path: path.into(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(source) => Err(CredentialsError::Read { path: path.into(), source }),
        }
    }

    /// Loads the default config (see [`DockerConfig::default_path`]).
    pub fn load_default() -> Result<DockerConfig, CredentialsError> {
        match Self::default_path() {
            Some(p) => Self::load(&p),
            None => Ok(DockerConfig::default()),
        }
    }

    /// The credential for registry `host` (`docker.io`, `gcr.io`, `127.0.0.1:5000`): a per-host
    /// `credHelpers` entry first, then `auths`, then the `credsStore`.
    pub fn lookup(&self, host: &str) -> Result<Option<Credential>, CredentialsError> {
        let host = normalise_host(host);
        if let Some(helper) =
            self.cred_helpers.iter().find(|(k, _)| normalise_host(k) == host).map(|(_, v)| v)
        {
            return run_helper(helper, &host);
        }
        for (key, entry) in &self.auths {
            if normalise_host(key) == host
                && let Some(c) = entry.credential(key)?
            {
                return Ok(Some(c));
            }
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => run_helper(store, &host),
            _ => Ok(None),
        }
    }
}

/// `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io` → `docker.io`; URLs → host.
fn normalise_host(key: &str) -> String {
    let no_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or("");
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn run_helper(helper: &str, host: &str) -> Result<Option<Credential>, CredentialsError> {
    run_helper_program(&format!("docker-credential-{helper}"), helper, host)
}

/// Runs a credential helper `program get`; `helper` names it in errors.
fn run_helper_program(
    program: &str,
    helper: &str,
    host: &str,
) -> Result<Option<Credential>, CredentialsError> {
    let err =
        |detail: String| CredentialsError::Helper { helper: helper.into(), registry: host.into(), detail };
    let server = if host == "docker.io" { DOCKER_HUB_KEY.to_string() } else { host.to_string() };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!("{}: {}", out.status, text.trim())));
    }
    let o: HelperOutput = serde_json::from_slice(&out.stdout).map_err(|e| err(format!("bad output: {e}")))?;
    Ok(Some(if o.username == "<token>" {
        Credential::IdentityToken(o.secret)
    } else {
        Credential::Basic { username: o.username, password: o.secret }
    }))
}

/// Credentials from Kubernetes pull secrets, matched to images with kubelet's rules.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(KeyPattern, Credential)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    host: String,
    port: Option<String>,
    path: String,
}

impl Keyring {
    /// Adds the entries of one secret: `kind` is the secret `type`, `data` the decoded `.dockerconfigjson`
    /// (or legacy `.dockercfg`) bytes.
    pub fn add_secret(&mut self, kind: &str, data: &[u8]) -> Result<(), CredentialsError> {
        let auths: BTreeMap<String, AuthEntry> = match kind {
            "kubernetes.io/dockerconfigjson" => {
                let cfg: DockerConfig = serde_json::from_slice(data)
                    .map_err(|e| CredentialsError::Secret(format!(".dockerconfigjson: {e}")))?;
                cfg.auths
            }
            "kubernetes.io/dockercfg" => serde_json::from_slice(data)
                .map_err(|e| CredentialsError::Secret(format!(".dockercfg: {e}")))?,
            other => return Err(CredentialsError::Secret(format!("unsupported secret type {other:?}"))),
        };
        for (key, entry) in auths {
            if let Some(cred) = entry.credential(&key)? {
                self.entries.push((KeyPattern::parse(&key), cred));
            }
        }
        Ok(())
    }

    /// Every credential whose key matches `registry/repository`, most specific key first; each should be
    /// tried in turn until a pull succeeds.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<Credential> {
        let image = KeyPattern::parse(&format!("{}/{}", normalise_host(registry), repository));
        let mut hits: Vec<&(KeyPattern, Credential)> =
            self.entries.iter().filter(|(k, _)| k.matches(&image)).collect();
        hits.sort_by_key(|(k, _)| {
            (
                std::cmp::Reverse(k.path.len()),
                k.host.contains('*'),
                std::cmp::Reverse(k.host.len()),
                k.port.is_none(),
            )
        });
        let mut out: Vec<Credential> = Vec::new();
        for (_, c) in hits {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }
}

impl KeyPattern {
    fn parse(key: &str) -> KeyPattern {
        let no_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        let (hostport, path) = no_scheme.split_once('/').unwrap_or((no_scheme, ""));
        let (host, port) = if hostport.starts_with('[') {
            match hostport.split_once("]:") {
                Some((h, p)) => (format!("{h}]"), Some(p.to_string())),
                None => (hostport.to_string(), None),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (hostport.to_string(), None),
            }
        };
        let mut host = normalise_host(&host);
        let mut path = path.trim_end_matches('/').to_string();
        if host == "docker.io" && path == "v1" {
            path.clear();
        }
        host.make_ascii_lowercase();
        KeyPattern { host, port, path }
    }

    /// Does this key match `image` (a parsed `host[:port]/path`)?
    fn matches(&self, image: &KeyPattern) -> bool {
        let key_labels: Vec<&str> = self.host.split('.').collect();
        let img_labels: Vec<&str> = image.host.split('.').collect();
        if key_labels.len() != img_labels.len()
            || !key_labels.iter().zip(&img_labels).all(|(k, i)| glob(k, i))
        {
            return false;
        }
        if self.port.is_some() && self.port != image.port {
            return false;
        }
        self.path.is_empty()
            || image.path == self.path
            || image.path.strip_prefix(&self.path).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Shell-style glob (`*`, `?`) over one host label.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_auths_and_fields() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"gcr.io":{{"username":"_json_key","password":"{{}}","auth":"{}"}},"r.io":{{"identitytoken":"rt"}}}}}}"#,
            b64("hub:pw"),
            b64("ignored:x")
        );
        let cfg: DockerConfig = serde_json::from_str(&json).unwrap();
        let basic = |u: &str, p: &str| Some(Credential::Basic { username: u.into(), password: p.into() });
        assert_eq!(cfg.lookup("docker.io").unwrap(), basic("hub", "pw"));
        assert_eq!(cfg.lookup("gcr.io").unwrap(), basic("_json_key", "{}"));
        assert_eq!(cfg.lookup("r.io").unwrap(), Some(Credential::IdentityToken("rt".into())));
        assert_eq!(cfg.lookup("quay.io").unwrap(), None);
        let bad: DockerConfig = serde_json::from_str(r#"{"auths":{"x.io":{"auth":"!!"}}}"#).unwrap();
        assert!(matches!(bad.lookup("x.io"), Err(CredentialsError::BadAuth { .. })));
    }

    #[test]
    fn cred_helper_is_run() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-rkubetest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$1\" = get ] || exit 3\necho \"{\\\"Username\\\":\\\"oauth2accesstoken\\\",\\\"Secret\\\":\\\"tok-$host\\\"}\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let got = run_helper_program(helper.to_str().unwrap(), "rkubetest", "gcr.io").unwrap();
        assert_eq!(
            got,
            Some(Credential::Basic { username: "oauth2accesstoken".into(), password: "tok-gcr.io".into() })
        );
        let cfg = DockerConfig {
            cred_helpers: [("gcr.io".into(), "rkubetest-missing".into())].into(),
            ..Default::default()
        };
        assert!(matches!(cfg.lookup("gcr.io"), Err(CredentialsError::Helper { .. })));
    }

    #[test]
    fn keyring_matches_like_kubelet() {
        let secret = format!(
            r#"{{"auths":{{"*.gcr.io":{{"auth":"{}"}},"asia.gcr.io/proj":{{"auth":"{}"}},"registry.io:5000":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("glob:1"),
            b64("proj:2"),
            b64("port:3"),
            b64("hub:4")
        );
        let mut k = Keyring::default();
        k.add_secret("kubernetes.io/dockerconfigjson", secret.as_bytes()).unwrap();
        let users = |reg: &str, repo: &str| -> Vec<String> {
            k.lookup(reg, repo)
                .into_iter()
                .map(|c| match c {
                    Credential::Basic { username, .. } => username,
                    Credential::IdentityToken(_) => "token".into(),
                })
                .collect()
        };
        assert_eq!(users("asia.gcr.io", "proj/app"), vec!["proj", "glob"]);
        assert_eq!(users("asia.gcr.io", "projx/app"), vec!["glob"]);
        assert_eq!(users("gcr.io", "proj/app"), Vec::<String>::new());
        assert_eq!(users("registry.io:5000", "a"), vec!["port"]);
        assert_eq!(users("registry.io:5001", "a"), Vec::<String>::new());
        assert_eq!(users("docker.io", "library/nginx"), vec!["hub"]);
        let mut legacy = Keyring::default();
        legacy
            .add_secret(
                "kubernetes.io/dockercfg",
                format!(r#"{{"q.io":{{"auth":"{}"}}}}"#, b64("l:5")).as_bytes(),
            )
            .unwrap();
        assert_eq!(legacy.lookup("q.io", "x").len(), 1);
        assert!(legacy.add_secret("Opaque", b"{}").is_err());
    }

    #[test]
    fn glob_labels() {
        assert!(glob("*", "asia"));
        assert!(glob("a*a", "asia"));
        assert!(!glob("a*b", "asia"));
        assert!(glob("?sia", "asia"));
    }
}
