//! Access: a CA and serving certificate generated on first start (kept under the data dir),
//! bearer tokens (admin and node join) and the admin kubeconfig.

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why setting up access failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("generating the {what} certificate: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
    #[error("loading {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("building the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Files under `<data-dir>/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    /// The CA's key, kept to issue the kubelet-client (and later node) certificates.
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_token: PathBuf,
    pub join_token: PathBuf,
    /// The client certificate the API server presents to nodes (logs, exec, port-forward).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
}

impl Pki {
    /// The file layout under `data_dir`.
    pub fn at(data_dir: &Path) -> Self {
        let d = data_dir.join("pki");
        Pki {
            ca_cert: d.join("ca.crt"),
            ca_key: d.join("ca.key"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            admin_token: d.join("admin.token"),
            join_token: d.join("join.token"),
            kubelet_client_cert: d.join("kubelet-client.crt"),
            kubelet_client_key: d.join("kubelet-client.key"),
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

fn read_or_create_token(path: &Path) -> Result<String, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = random_token();
            write_private(path, t.as_bytes())?;
            Ok(t)
        }
    }
}

/// Generates the CA and serving certificate (for `hosts`: names and IPs) unless they exist,
/// and the tokens. Returns (admin token, join token).
pub fn ensure(pki: &Pki, hosts: &[String]) -> Result<(String, String), TlsError> {
    if !(pki.ca_cert.exists() && pki.server_cert.exists() && pki.server_key.exists()) {
        let gen_err = |what| move |source| TlsError::Generate { what, source };
        let ca_key = KeyPair::generate().map_err(gen_err("CA"))?;
        let ca = ca_params().map_err(gen_err("CA"))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(gen_err("CA"))?;
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().map_err(gen_err("serving"))?;
        let mut sp = CertificateParams::new(hosts.to_vec()).map_err(gen_err("serving"))?;
        sp.distinguished_name.push(DnType::CommonName, "rkube-apiserver");
        let server_cert = sp.signed_by(&server_key, &issuer).map_err(gen_err("serving"))?;
        write_private(&pki.ca_key, issuer.key().serialize_pem().as_bytes())?;
        write_private(&pki.server_key, server_key.serialize_pem().as_bytes())?;
        write_private(&pki.server_cert, server_cert.pem().as_bytes())?;
        write_private(&pki.ca_cert, ca_cert.pem().as_bytes())?;
    }
    Ok((read_or_create_token(&pki.admin_token)?, read_or_create_token(&pki.join_token)?))
}

/// The CN of the API server's client certificate towards nodes.
pub const KUBELET_CLIENT_CN: &str = "rkube-apiserver-kubelet-client";

/// Issues the API server's client certificate for nodes (`kubelet-client.crt`/`.key`, CN
/// [`KUBELET_CLIENT_CN`], signed by the cluster CA) unless it exists. Needs the CA key, which
/// data dirs made before it was kept lack (then this fails and nodes cannot be reached).
pub fn ensure_kubelet_client(pki: &Pki) -> Result<(), TlsError> {
    if pki.kubelet_client_cert.exists() && pki.kubelet_client_key.exists() {
        return Ok(());
    }
    let gen_err = |source| TlsError::Generate { what: "kubelet client", source };
    let issuer = load_issuer(pki)?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, KUBELET_CLIENT_CN);
    params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    write_private(&pki.kubelet_client_key, key.serialize_pem().as_bytes())?;
    write_private(&pki.kubelet_client_cert, cert.pem().as_bytes())
}

/// The CA certificate's parameters (its subject is what issued certificates name).
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "rkube-ca");
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(ca)
}

/// The cluster CA as an rcgen issuer (its key from `ca.key`).
pub fn load_issuer(pki: &Pki) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let gen_err = |source| TlsError::Generate { what: "CA", source };
    let key_pem = read_pem(&pki.ca_key)?;
    let key = KeyPair::from_pem(&key_pem).map_err(gen_err)?;
    Ok(Issuer::new(ca_params().map_err(gen_err)?, key))
}

/// The TLS client configuration the API server dials nodes with: the kubelet-client
/// certificate, and node serving certificates verified against the cluster CA.
pub fn kubelet_client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let load_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls_pki_types::pem::Error| TlsError::Load { path, message: e.to_string() }
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&pki.ca_cert).map_err(load_err(&pki.ca_cert))? {
        roots.add(ca.map_err(load_err(&pki.ca_cert))?)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.kubelet_client_cert)
        .map_err(load_err(&pki.kubelet_client_cert))?
        .collect::<Result<_, _>>()
        .map_err(load_err(&pki.kubelet_client_cert))?;
    let key =
        PrivateKeyDer::from_pem_file(&pki.kubelet_client_key).map_err(load_err(&pki.kubelet_client_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The rustls server configuration from the stored serving certificate.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let load_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls_pki_types::pem::Error| TlsError::Load { path, message: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .map_err(load_err(&pki.server_cert))?
        .collect::<Result<_, _>>()
        .map_err(load_err(&pki.server_cert))?;
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).map_err(load_err(&pki.server_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A kubeconfig for `server` with the CA embedded and a bearer token (none for plain HTTP).
pub fn kubeconfig(server: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca_line = ca_pem.map(|c| format!("    certificate-authority-data: {}\n", b64(c))).unwrap_or_default();
    let user = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rkube\n  cluster:\n    server: {server}\n{ca_line}\
         users:\n- name: admin\n{user}contexts:\n- name: rkube\n  context:\n    cluster: rkube\n    user: admin\n\
         current-context: rkube\npreferences: {{}}\n"
    )
}

/// Writes a kubeconfig file (mode 0600).
pub fn write_kubeconfig(path: &Path, content: &str) -> Result<(), TlsError> {
    write_private(path, content.as_bytes())
}

/// Reads a PEM file to a string.
pub fn read_pem(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::at(dir.path());
        let (admin, join) = ensure(&pki, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(admin.len(), 48);
        assert_ne!(admin, join);
        let ca = read_pem(&pki.ca_cert).unwrap();
        let again = ensure(&pki, &["localhost".into()]).unwrap();
        assert_eq!(again, (admin.clone(), join));
        assert_eq!(read_pem(&pki.ca_cert).unwrap(), ca);
        server_config(&pki).unwrap();
        ensure_kubelet_client(&pki).unwrap();
        kubelet_client_config(&pki).unwrap();
        let der = CertificateDer::from_pem_file(&pki.kubelet_client_cert).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        assert_eq!(cn, KUBELET_CLIENT_CN);
        let kc = kubeconfig("https://127.0.0.1:6443", Some(&ca), Some(&admin));
        assert!(kc.contains("certificate-authority-data: "));
        assert!(kc.contains(&format!("token: {admin}")));
        let _: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kc).unwrap();
    }
}
