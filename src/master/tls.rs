//! Access: the cluster CA (certificate and key, kept under the data dir so the master can sign node
//! certificates), the API server's serving certificate, the master's kubelet-client certificate,
//! bearer tokens (admin, node join) and the admin kubeconfig.
//!
//! The join token pins the CA the way k3s's does: `RK1<sha256-hex of ca.crt's bytes>::<id>.<secret>`,
//! where `<id>.<secret>` is a kubeadm-shaped bootstrap credential (`[a-z0-9]{6}.[a-z0-9]{16}`).

pub use crate::client::join::{JOIN_TOKEN_PREFIX, JoinToken, ca_hash, parse_credential};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why setting up access (or signing a node certificate) failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the {what} certificate: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("loading {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A node's request names a bad CSR or address; `field` is the request field.
    #[error("{field}: {reason}")]
    BadRequest { field: &'static str, reason: String },
}

/// Files under `<data-dir>/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    pub admin_token: PathBuf,
    pub join_token: PathBuf,
    /// The ServiceAccount token signing key (ECDSA P-256, PKCS#8 PEM).
    pub sa_key: PathBuf,
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
            kubelet_client_cert: d.join("kubelet-client.crt"),
            kubelet_client_key: d.join("kubelet-client.key"),
            admin_token: d.join("admin.token"),
            join_token: d.join("join.token"),
            sa_key: d.join("sa.key"),
        }
    }
}

/// Common name of the master's client certificate for dialing nodes.
pub const KUBELET_CLIENT_CN: &str = "rkube-apiserver-kubelet-client";
/// Validity of issued node certificates.
const NODE_CERT_DAYS: i64 = 365;

pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
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

/// `n` random characters from `[a-z0-9]` (rejection sampling keeps them uniform).
fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let b: u8 = rand::random();
        if b < 252 {
            out.push(ALPHABET[usize::from(b) % 36] as char);
        }
    }
    out
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

/// The tokens `ensure` leaves in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub admin_token: String,
    pub join: JoinToken,
}

fn gen_err(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

/// Generates the CA, serving and kubelet-client certificates (serving for `hosts`: names and IPs)
/// unless they exist, and the tokens. A data dir without `ca.key` (written by an older rkube-master)
/// gets a new PKI; the admin token is kept, and so is a join credential of the current shape (its CA
/// hash is updated).
pub fn ensure(pki: &Pki, hosts: &[String]) -> Result<Access, TlsError> {
    let complete = [&pki.ca_cert, &pki.ca_key, &pki.server_cert, &pki.server_key].iter().all(|p| p.exists());
    if !complete {
        let ca_key = KeyPair::generate().map_err(gen_err("CA"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "rkube-ca");
        ca.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(gen_err("CA"))?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().map_err(gen_err("serving"))?;
        let mut sp = CertificateParams::new(hosts.to_vec()).map_err(gen_err("serving"))?;
        sp.distinguished_name.push(DnType::CommonName, "rkube-apiserver");
        sp.serial_number = Some(random_serial());
        let server_cert = sp.signed_by(&server_key, &issuer).map_err(gen_err("serving"))?;
        write_private(&pki.server_key, server_key.serialize_pem().as_bytes())?;
        write_private(&pki.server_cert, server_cert.pem().as_bytes())?;
        write_private(&pki.ca_key, ca_key_pem.as_bytes())?;
        write_private(&pki.ca_cert, ca_cert.pem().as_bytes())?;
        // Anything signed by an older CA is stale now.
        let _ = std::fs::remove_file(&pki.kubelet_client_cert);
    }
    if !(pki.kubelet_client_cert.exists() && pki.kubelet_client_key.exists()) {
        let ca = ClusterCa::load(pki)?;
        let key = KeyPair::generate().map_err(gen_err("kubelet-client"))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("kubelet-client"))?;
        p.distinguished_name.push(DnType::CommonName, KUBELET_CLIENT_CN);
        p.distinguished_name.push(DnType::OrganizationName, "system:masters");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.serial_number = Some(random_serial());
        let cert = p.signed_by(&key, &ca.issuer).map_err(gen_err("kubelet-client"))?;
        write_private(&pki.kubelet_client_key, key.serialize_pem().as_bytes())?;
        write_private(&pki.kubelet_client_cert, cert.pem().as_bytes())?;
    }
    let admin_token = read_or_create_token(&pki.admin_token)?;
    let hash = ca_hash(read_pem(&pki.ca_cert)?.as_bytes());
    let stored = std::fs::read_to_string(&pki.join_token).ok().and_then(|t| JoinToken::parse(&t));
    let join = match stored {
        Some(t) if t.ca_hash == hash => t,
        Some(t) => JoinToken { ca_hash: hash, ..t },
        None => JoinToken { ca_hash: hash, id: random_alnum(6), secret: random_alnum(16) },
    };
    if stored_token_differs(&pki.join_token, &join) {
        write_private(&pki.join_token, join.full().as_bytes())?;
    }
    Ok(Access { admin_token, join })
}

fn stored_token_differs(path: &Path, join: &JoinToken) -> bool {
    std::fs::read_to_string(path).map(|t| t.trim() != join.full()).unwrap_or(true)
}

/// Reads the stored join token (full form and credential).
pub fn join_token(pki: &Pki) -> Result<JoinToken, TlsError> {
    let text = std::fs::read_to_string(&pki.join_token)
        .map_err(|source| TlsError::Read { path: pki.join_token.clone(), source })?;
    JoinToken::parse(&text).ok_or_else(|| TlsError::Load {
        path: pki.join_token.clone(),
        message: "not a join token of the form RK1<sha256>::<id>.<secret>".into(),
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load_err =
        |e: rustls_pki_types::pem::Error| TlsError::Load { path: path.into(), message: e.to_string() };
    CertificateDer::pem_file_iter(path).map_err(load_err)?.collect::<Result<_, _>>().map_err(load_err)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Load { path: path.into(), message: e.to_string() })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_roots(pki: &Pki) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&pki.ca_cert)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The rustls server configuration: the stored serving certificate, and client certificates signed
/// by the cluster CA accepted but not required (bearer tokens remain valid).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(&pki.server_cert)?;
    let key = load_key(&pki.server_key)?;
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca_roots(pki)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What the master presents when it dials a node's HTTPS endpoint, and the CA that node serving
/// certificates chain to.
#[derive(Debug)]
pub struct KubeletClientIdentity {
    /// `kubelet-client.crt` (CN `rkube-apiserver-kubelet-client`, O `system:masters`).
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificates.
    pub ca: Vec<CertificateDer<'static>>,
}

/// Loads the master's kubelet-client identity.
pub fn kubelet_client_identity(pki: &Pki) -> Result<KubeletClientIdentity, TlsError> {
    Ok(KubeletClientIdentity {
        cert_chain: load_certs(&pki.kubelet_client_cert)?,
        key: load_key(&pki.kubelet_client_key)?,
        ca: load_certs(&pki.ca_cert)?,
    })
}

/// A rustls client configuration for dialing nodes: the kubelet-client certificate, servers
/// verified against the cluster CA (the caller checks the dialled name/IP via the server name).
pub fn kubelet_client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let id = kubelet_client_identity(pki)?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(ca_roots(pki)?)
        .with_client_auth_cert(id.cert_chain, id.key)?;
    Ok(Arc::new(cfg))
}

/// The cluster CA loaded for signing node certificates.
pub struct ClusterCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Loads `ca.crt` and `ca.key`.
    pub fn load(pki: &Pki) -> Result<ClusterCa, TlsError> {
        let pem = read_pem(&pki.ca_cert)?;
        let key_pem = read_pem(&pki.ca_key)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Load { path: pki.ca_key.clone(), message: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|e| TlsError::Load { path: pki.ca_cert.clone(), message: e.to_string() })?;
        Ok(ClusterCa { pem, issuer })
    }

    /// The CA certificate, exactly the bytes of `ca.crt`.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA as an rcgen issuer (tests issue certificates with it).
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn node_params(&self, cn: &str, sans: Vec<String>) -> Result<CertificateParams, TlsError> {
        let mut p = CertificateParams::new(sans).map_err(|e| TlsError::BadRequest {
            field: "addresses",
            reason: format!("not valid subject alternative names: {e}"),
        })?;
        p.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(NODE_CERT_DAYS);
        p.serial_number = Some(random_serial());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }

    /// Signs a node's client certificate (`CN=system:node:<node>`, `O=system:nodes`, clientAuth,
    /// one year) for the key of `csr_pem` (the CSR's subject is ignored).
    pub fn sign_node_client(&self, csr_pem: &str, node: &str) -> Result<String, TlsError> {
        let csr = parse_csr(csr_pem, "clientCSR")?;
        let mut p = self.node_params(&format!("system:node:{node}"), Vec::new())?;
        p.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&csr.public_key, &self.issuer).map_err(gen_err("node client"))?;
        Ok(cert.pem())
    }

    /// Signs a node's serving certificate (`CN=<node>`; SANs the node name, `localhost`, `127.0.0.1`
    /// and `addresses`; serverAuth, one year) for the key of `csr_pem`.
    pub fn sign_node_serving(
        &self,
        csr_pem: &str,
        node: &str,
        addresses: &[String],
    ) -> Result<String, TlsError> {
        let csr = parse_csr(csr_pem, "servingCSR")?;
        let mut sans = vec![node.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
        for a in addresses {
            if a.parse::<IpAddr>().is_err() && crate::api::names::check_dns1123_subdomain(a).is_some() {
                return Err(TlsError::BadRequest {
                    field: "addresses",
                    reason: format!("{a:?} is neither an IP address nor a DNS name"),
                });
            }
            if !sans.contains(a) {
                sans.push(a.clone());
            }
        }
        let mut p = self.node_params(node, sans)?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&csr.public_key, &self.issuer).map_err(gen_err("node serving"))?;
        Ok(cert.pem())
    }
}

fn parse_csr(pem: &str, field: &'static str) -> Result<CertificateSigningRequestParams, TlsError> {
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| TlsError::BadRequest {
        field,
        reason: format!("not a valid PEM certificate request: {e}"),
    })
}

/// Subject of a (verified) client certificate: the common name and the organisation values, i.e.
/// Kubernetes' user name and groups.
pub fn certificate_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Some((cn, orgs))
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::at(dir.path());
        let access = ensure(&pki, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(access.admin_token.len(), 48);
        let ca = read_pem(&pki.ca_cert).unwrap();
        assert_eq!(access.join.ca_hash, ca_hash(ca.as_bytes()));
        let full = access.join.full();
        assert!(full.starts_with("RK1") && full.len() == 3 + 64 + 2 + 23, "{full}");
        assert_eq!(JoinToken::parse(&full), Some(access.join.clone()));
        assert_eq!(join_token(&pki).unwrap(), access.join);
        let mode = std::fs::metadata(&pki.ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure(&pki, &["localhost".into()]).unwrap();
        assert_eq!(again, access);
        assert_eq!(read_pem(&pki.ca_cert).unwrap(), ca);
        server_config(&pki).unwrap();
        kubelet_client_config(&pki).unwrap();
        let id = kubelet_client_identity(&pki).unwrap();
        let (cn, orgs) = certificate_subject(&id.cert_chain[0]).unwrap();
        assert_eq!((cn.as_str(), orgs), (KUBELET_CLIENT_CN, vec!["system:masters".to_string()]));
        let kc = kubeconfig("https://127.0.0.1:6443", Some(&ca), Some(&access.admin_token));
        assert!(kc.contains("certificate-authority-data: "));
        assert!(kc.contains(&format!("token: {}", access.admin_token)));
        let _: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kc).unwrap();
    }

    #[test]
    fn old_data_dir_without_ca_key_gets_a_new_pki_and_keeps_the_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::at(dir.path());
        let first = ensure(&pki, &["localhost".into()]).unwrap();
        let old_ca = read_pem(&pki.ca_cert).unwrap();
        std::fs::remove_file(&pki.ca_key).unwrap();
        std::fs::write(&pki.join_token, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
        let second = ensure(&pki, &["localhost".into()]).unwrap();
        assert_eq!(second.admin_token, first.admin_token);
        assert_ne!(read_pem(&pki.ca_cert).unwrap(), old_ca);
        assert_ne!(second.join.ca_hash, first.join.ca_hash);
        assert_eq!(join_token(&pki).unwrap(), second.join);
        ClusterCa::load(&pki).unwrap();
    }

    #[test]
    fn credentials_have_the_bootstrap_token_shape() {
        assert_eq!(parse_credential("abc123.0123456789abcdef"), Some(("abc123", "0123456789abcdef")));
        for bad in
            ["abc12.0123456789abcdef", "ABC123.0123456789abcdef", "abc123.0123456789abcde", "abc1230123"]
        {
            assert_eq!(parse_credential(bad), None, "{bad}");
        }
        assert!(JoinToken::parse("K10abc::abc123.0123456789abcdef").is_none());
    }

    #[test]
    fn signs_node_certificates_from_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::at(dir.path());
        ensure(&pki, &["localhost".into()]).unwrap();
        let ca = ClusterCa::load(&pki).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
        let csr = csr.pem().unwrap();
        let client = ca.sign_node_client(&csr, "n1").unwrap();
        let der = CertificateDer::from_pem_slice(client.as_bytes()).unwrap();
        let (cn, orgs) = certificate_subject(&der).unwrap();
        assert_eq!((cn.as_str(), orgs), ("system:node:n1", vec!["system:nodes".to_string()]));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(parsed.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);

        let serving = ca.sign_node_serving(&csr, "n1", &["10.0.0.2".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(serving.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        use x509_parser::extensions::GeneralName;
        let sans: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, ["n1", "localhost", "127.0.0.1", "10.0.0.2"]);
        assert!(parsed.extended_key_usage().unwrap().unwrap().value.server_auth);

        let bad = ca.sign_node_client("garbage", "n1").unwrap_err();
        assert!(matches!(bad, TlsError::BadRequest { field: "clientCSR", .. }), "{bad}");
        let bad = ca.sign_node_serving(&csr, "n1", &["bad name!".into()]).unwrap_err();
        assert!(matches!(bad, TlsError::BadRequest { field: "addresses", .. }), "{bad}");
    }
}
