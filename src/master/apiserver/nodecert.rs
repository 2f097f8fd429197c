//! `POST /v1-rkube/node-cert`: a joining (or renewing) node sends two CSRs and gets its client
//! certificate (`CN=system:node:<name>`, `O=system:nodes`) and serving certificate signed by the
//! cluster CA, the CA itself and the CN of the master's kubelet-client certificate.
//!
//! Node identity is k3s's node password: on first use a salted SHA-256 of `nodePassword` is stored
//! in Secret `kube-system/<name>.node-password.rkube`; a later request for the same name must bring
//! the same password (409 otherwise). Deleting the Node deletes the Secret (registry delete path).

use super::authz::UserInfo;
use super::registry::{Registry, WriteOptions};
use super::resources;
use super::status::ApiStatus;
use crate::master::tls::{ClusterCa, TlsError};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

/// Type of the node-password Secrets.
pub const PASSWORD_SECRET_TYPE: &str = "rkube.io/node-password";

/// Namespace and name of a node's password Secret.
pub fn password_secret(node: &str) -> (&'static str, String) {
    ("kube-system", format!("{node}.node-password.rkube"))
}

/// The request body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertRequest {
    pub node_name: String,
    pub node_password: String,
    #[serde(rename = "clientCSR")]
    pub client_csr: String,
    #[serde(rename = "servingCSR")]
    pub serving_csr: String,
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertResponse {
    pub client_cert: String,
    pub serving_cert: String,
    pub ca: String,
    #[serde(rename = "kubeletClientCN")]
    pub kubelet_client_cn: String,
}

/// What the endpoint needs: the CA to sign with and the kubelet-client CN to announce.
#[derive(Debug)]
pub struct NodeJoin {
    pub ca: ClusterCa,
    pub kubelet_client_cn: String,
}

/// `sha256$<salt-hex>$<hex>` of a password.
fn hash_password(password: &str, salt: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    format!("sha256${}${}", hex::encode(salt), hex::encode(h.finalize()))
}

/// Whether `password` matches a stored hash.
fn verify_password(stored: &str, password: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(salt), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(salt) = hex::decode(salt) else { return false };
    let want = hash_password(password, &salt);
    want.len() == stored.len() && want.bytes().zip(stored.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

fn stored_hash(secret: &Value) -> Option<String> {
    let b64 = secret.pointer("/data/hash")?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(raw).ok()
}

fn bad(field: &str, reason: &str) -> ApiStatus {
    ApiStatus::bad_request(format!("{field}: {reason}"))
}

fn already_joined(node: &str) -> ApiStatus {
    ApiStatus::conflict_raw(format!(
        "node {node:?} is already joined with other credentials; delete it first with: kubectl delete node {node}"
    ))
}

/// Checks the node password against the stored hash, storing it on first use.
async fn check_identity(reg: &Registry, node: &str, password: &str) -> Result<(), ApiStatus> {
    let secrets = resources::find("", "v1", "secrets").expect("secrets");
    let (ns, name) = password_secret(node);
    for _ in 0..3 {
        match reg.get(secrets, ns, &name).await {
            Ok(s) => {
                return match stored_hash(&s) {
                    Some(h) if verify_password(&h, password) => Ok(()),
                    _ => Err(already_joined(node)),
                };
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        let salt: [u8; 16] = rand::random();
        let hash = hash_password(password, &salt);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": PASSWORD_SECRET_TYPE,
            "metadata": {"name": name, "namespace": ns, "labels": {"rkube.io/node": node}},
            "immutable": true,
            "data": {"hash": base64::engine::general_purpose::STANDARD.encode(hash)}});
        match reg.create(secrets, ns, secret, WriteOptions::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == "AlreadyExists" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiStatus::internal(format!("storing the node password of {node:?}")))
}

/// Handles one request from an authenticated (and authorized) caller.
pub async fn handle(
    join: Option<&NodeJoin>,
    reg: &Registry,
    user: &UserInfo,
    body: &[u8],
) -> Result<NodeCertResponse, ApiStatus> {
    let join =
        join.ok_or_else(|| ApiStatus::bad_request("this master has no cluster CA (plain HTTP mode)"))?;
    let req: NodeCertRequest = serde_json::from_slice(body)
        .map_err(|e| ApiStatus::bad_request(format!("invalid request body: {e}")))?;
    let node = req.node_name.as_str();
    if node.is_empty() {
        return Err(bad("nodeName", "Required value"));
    }
    if let Some(e) = crate::api::names::check_dns1123_subdomain(node) {
        return Err(bad("nodeName", &format!("Invalid value: {node:?}: {e}")));
    }
    if let Some(own) = user.node_name()
        && own != node
    {
        return Err(ApiStatus::forbidden_raw(
            format!("forbidden: node {own:?} cannot request certificates for node {node:?}"),
            None,
        ));
    }
    if req.node_password.trim().is_empty() {
        return Err(bad("nodePassword", "Required value"));
    }
    let signed = |r: Result<String, TlsError>| {
        r.map_err(|e| match e {
            TlsError::BadRequest { field, reason } => bad(field, &reason),
            other => ApiStatus::internal(other.to_string()),
        })
    };
    // Both certificates are signed first, so a bad CSR stores nothing; they are only handed out
    // once the node's identity checks.
    let client_cert = signed(join.ca.sign_node_client(&req.client_csr, node))?;
    let serving_cert = signed(join.ca.sign_node_serving(&req.serving_csr, node, &req.addresses))?;
    check_identity(reg, node, &req.node_password).await?;
    tracing::info!(node, by = %user.name, "issued node certificates");
    Ok(NodeCertResponse {
        client_cert,
        serving_cert,
        ca: join.ca.pem().to_string(),
        kubelet_client_cn: join.kubelet_client_cn.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify() {
        let h = hash_password("s3cret", b"salt-bytes");
        assert!(h.starts_with("sha256$"));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "other"));
        assert!(!verify_password("garbage", "s3cret"));
        assert_ne!(hash_password("s3cret", b"salt-two"), h);
        assert_eq!(password_secret("n1"), ("kube-system", "n1.node-password.rkube".to_string()));
    }
}
