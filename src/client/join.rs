//! Joining a node to `rkube-master`, k3s style.
//!
//! The join token `RK1<sha256-hex of the master's CA PEM>::<id>.<secret>` pins the master's CA:
//! the node fetches `/cacerts` without verifying (it cannot yet), compares the hash and refuses a
//! master whose CA does not match, then talks to it only over TLS verified against that CA. It
//! generates its keys locally and trades the token for a client certificate
//! (`CN=system:node:<name>`, `O=system:nodes`) and a serving certificate for its HTTPS endpoint.
//! A random node password, kept on the node, binds the name to this node: a second host that
//! tries the same name is refused by the master.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why joining failed; each names the server or file involved.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "invalid join token: {0} (expected RK1<sha256 of the CA>::<id>.<secret>, as rkube-master prints it)"
    )]
    Token(&'static str),
    #[error("invalid server URL {url:?}: expected https://HOST:PORT")]
    Url { url: String },
    #[error("{what} {server}")]
    Request {
        what: &'static str,
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the CA of {server} (sha256:{got}) does not match the join token (sha256:{want}); refusing to join an unverified server"
    )]
    CaMismatch { server: String, got: String, want: String },
    #[error("{server} refused the join of node {node:?}: {message}")]
    Rejected { server: String, node: String, message: String },
    #[error("generating the node's {what}")]
    Key {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Prefix of the join token format (version 1).
pub const JOIN_TOKEN_PREFIX: &str = "RK1";

/// A join token, `RK1<sha256 of the CA file>::<id>.<secret>`: the master prints and stores it,
/// a node parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA file's bytes.
    pub ca_hash: String,
    /// Bootstrap token id (6 chars of `[a-z0-9]`); a joining node is `system:bootstrap:<id>`.
    pub id: String,
    /// Bootstrap token secret (16 chars of `[a-z0-9]`).
    pub secret: String,
}

impl JoinToken {
    /// Parses a token (surrounding whitespace allowed); `None` unless it has the exact shape.
    pub fn parse(s: &str) -> Option<JoinToken> {
        s.parse().ok()
    }

    /// The whole token, as printed for nodes.
    pub fn full(&self) -> String {
        format!("{JOIN_TOKEN_PREFIX}{}::{}", self.ca_hash, self.credential())
    }

    /// `<id>.<secret>`: the bearer credential a node joins with.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// Splits a bootstrap credential `<id>.<secret>` (`[a-z0-9]{6}` and `[a-z0-9]{16}`).
pub fn parse_credential(s: &str) -> Option<(&str, &str)> {
    let (id, secret) = s.split_once('.')?;
    let ok =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

impl std::str::FromStr for JoinToken {
    type Err = JoinError;

    fn from_str(s: &str) -> Result<Self, JoinError> {
        let rest =
            s.trim().strip_prefix(JOIN_TOKEN_PREFIX).ok_or(JoinError::Token("it does not start with RK1"))?;
        let (hash, credential) = rest.split_once("::").ok_or(JoinError::Token("no '::' separator"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JoinError::Token("the CA hash is not 64 hex digits"));
        }
        let (id, secret) = parse_credential(credential)
            .ok_or(JoinError::Token("the credential is not <6 chars>.<16 chars> of [a-z0-9]"))?;
        Ok(JoinToken { ca_hash: hash.to_ascii_lowercase(), id: id.into(), secret: secret.into() })
    }
}

/// Hex SHA-256 of a CA file's bytes, as the token pins it.
pub fn ca_hash(pem: &[u8]) -> String {
    hex::encode(Sha256::digest(pem))
}

/// The files a joined node keeps (all 0600 in a 0700 directory).
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    pub dir: PathBuf,
}

impl NodeCredentials {
    /// Credentials kept in `dir` (`<root>/node`).
    pub fn at(dir: &Path) -> Self {
        NodeCredentials { dir: dir.to_path_buf() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("serving.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("serving.key")
    }
    pub fn password(&self) -> PathBuf {
        self.dir.join("password")
    }
    /// A kubeconfig with the master's URL, its CA and the node's client certificate.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// The common name of the master's client certificate when it calls the node.
    pub fn master_client_cn(&self) -> PathBuf {
        self.dir.join("master-client-cn")
    }

    /// The pod CIDR the master assigned (read by every `rkubelet` command on this node).
    pub fn pod_cidr(&self) -> PathBuf {
        self.dir.join("pod-cidr")
    }

    /// The pod routes to other nodes this node installed (removed when their Node goes).
    pub fn routes(&self) -> PathBuf {
        self.dir.join("routes.json")
    }

    /// The load balancer addresses this node announces (removed by `rkubelet reset`).
    pub fn announced(&self) -> PathBuf {
        self.dir.join("lb-addresses")
    }

    /// Whether a join completed here before.
    pub fn exist(&self) -> bool {
        self.kubeconfig().exists() && self.serving_cert().exists()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertRequest<'a> {
    node_name: &'a str,
    node_password: &'a str,
    #[serde(rename = "clientCSR")]
    client_csr: String,
    #[serde(rename = "servingCSR")]
    serving_csr: String,
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertResponse {
    client_cert: String,
    serving_cert: String,
    #[serde(default)]
    kubelet_client_cn: Option<String>,
}

/// What a node asks for.
#[derive(Debug, Clone)]
pub struct JoinRequest<'a> {
    /// `https://host:port` of the master.
    pub server: &'a str,
    pub token: &'a JoinToken,
    pub node_name: &'a str,
    /// The node's addresses (serving certificate SANs).
    pub addresses: &'a [IpAddr],
}

/// Joins the master and writes the node's credentials; idempotent (a re-join with the same node
/// password gets fresh certificates). Nothing is written unless the master accepted the join.
pub async fn join(req: &JoinRequest<'_>, creds: &NodeCredentials) -> Result<(), JoinError> {
    let server = req.server.trim_end_matches('/');
    if !server.starts_with("https://") {
        return Err(JoinError::Url { url: server.into() });
    }
    let request = |what| move |source| JoinError::Request { what, server: server.into(), source };
    let fetch = request("fetching the CA from");
    // 1. The CA, unverified, then pinned by the token.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(fetch)?;
    let ca = insecure
        .get(format!("{server}/cacerts"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(fetch)?
        .bytes()
        .await
        .map_err(fetch)?;
    let got = ca_hash(&ca);
    if got != req.token.ca_hash {
        return Err(JoinError::CaMismatch { server: server.into(), got, want: req.token.ca_hash.clone() });
    }
    // 2. From here on, only TLS verified against that CA.
    let root = reqwest::Certificate::from_pem(&ca).map_err(request("reading the CA of"))?;
    let fetch = request("requesting certificates from");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(fetch)?;
    let password = match std::fs::read_to_string(creds.password()) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => hex::encode(rand::random::<[u8; 32]>()),
    };
    let key_err = |what| move |source| JoinError::Key { what, source };
    let client_key = KeyPair::generate().map_err(key_err("client key"))?;
    let serving_key = KeyPair::generate().map_err(key_err("serving key"))?;
    let client_csr = csr(&format!("system:node:{}", req.node_name), Some("system:nodes"), &client_key)
        .map_err(key_err("client certificate request"))?;
    let serving_csr =
        csr(req.node_name, None, &serving_key).map_err(key_err("serving certificate request"))?;
    let body = CertRequest {
        node_name: req.node_name,
        node_password: &password,
        client_csr,
        serving_csr,
        addresses: req.addresses.iter().map(ToString::to_string).collect(),
    };
    let resp = client
        .post(format!("{server}/v1-rkube/node-cert"))
        .bearer_auth(req.token.credential())
        .json(&body)
        .send()
        .await
        .map_err(fetch)?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{status}: {}", text.trim()));
        return Err(JoinError::Rejected { server: server.into(), node: req.node_name.into(), message });
    }
    let certs: CertResponse = resp.json().await.map_err(fetch)?;
    // 3. Everything on disk, private.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JoinError::Io { path, source }
    };
    std::fs::create_dir_all(&creds.dir).map_err(io(&creds.dir))?;
    std::fs::set_permissions(&creds.dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&creds.dir))?;
    let ca_text = String::from_utf8_lossy(&ca).into_owned();
    let kubeconfig = kubeconfig(server, &ca_text, &certs.client_cert, &client_key.serialize_pem());
    let cn = certs.kubelet_client_cn.unwrap_or_else(|| "rkube-apiserver-kubelet-client".into());
    for (path, data) in [
        (creds.ca(), ca_text.as_str()),
        (creds.client_cert(), certs.client_cert.as_str()),
        (creds.client_key(), client_key.serialize_pem().as_str()),
        (creds.serving_cert(), certs.serving_cert.as_str()),
        (creds.serving_key(), serving_key.serialize_pem().as_str()),
        (creds.password(), password.as_str()),
        (creds.master_client_cn(), cn.as_str()),
        (creds.kubeconfig(), kubeconfig.as_str()),
    ] {
        write_private(&path, data.as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}

fn csr(common_name: &str, org: Option<&str>, key: &KeyPair) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.serialize_request(key)?.pem()
}

/// A kubeconfig for a node: the master, its CA, the node's client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rkube\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: node\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: rkube\n  context:\n    cluster: rkube\n    user: node\n\
         current-context: rkube\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens() {
        let hash = "a".repeat(64);
        let t: JoinToken = format!("RK1{hash}::abcdef.0123456789abcdef").parse().unwrap();
        assert_eq!(t.ca_hash, hash);
        assert_eq!(t.credential(), "abcdef.0123456789abcdef");
        assert_eq!(t.full(), format!("RK1{hash}::abcdef.0123456789abcdef"));
        for bad in [
            "abcdef.0123456789abcdef".to_string(),
            format!("RK1{hash}abcdef.0123456789abcdef"),
            format!("RK1{}::abcdef.0123456789abcdef", "a".repeat(63)),
            format!("RK1{hash}::ABCDEF.0123456789abcdef"),
            format!("RK1{hash}::abcdef.0123"),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn kubeconfig_is_yaml_with_the_client_certificate() {
        let kc = kubeconfig("https://10.0.0.1:6443", "CA", "CERT", "KEY");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kc).unwrap();
        let user = &v["users"][0]["user"];
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(user["client-certificate-data"].as_str(), Some(b64("CERT").as_str()));
        assert_eq!(v["clusters"][0]["cluster"]["server"].as_str(), Some("https://10.0.0.1:6443"));
    }
}
