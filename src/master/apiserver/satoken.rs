//! ServiceAccount tokens: JWTs signed by the master (ES256 over a P-256 key kept in
//! `<data-dir>/pki/sa.key`, created on first start), issued by TokenRequest with an audience and an
//! expiry, optionally bound to a Pod, and validated on every request that carries one. The claims
//! follow kube-apiserver's (`iss`, `sub`, `aud`, `iat`, `nbf`, `exp`, `jti`, and the
//! `kubernetes.io` claim naming the namespace, ServiceAccount and bound Pod).

use super::authz::UserInfo;
use super::rbac::AUTHENTICATED;
use crate::master::tls::{self, Pki, TlsError};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The issuer (`iss`) of rkube's tokens and the audience the API server accepts by default,
/// kubeadm's values.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `expirationSeconds` when a TokenRequest gives none.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// The shortest allowed token lifetime.
pub const MIN_EXPIRATION: i64 = 600;
/// The lifetime kubelets ask for projected tokens; with API audiences and a pod binding it is
/// extended to a year on the wire (`kubernetes.io.warnafter` keeps the requested expiry).
pub const WARN_ONLY_EXPIRATION: i64 = 3607;
const EXTENDED_EXPIRATION: i64 = 365 * 24 * 3600;

/// Why loading the key or handling a token failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("service account signing key: {0}")]
    Key(#[from] TlsError),
    #[error("service account signing key {path}: {message}")]
    BadKey { path: String, message: String },
    #[error("signing the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token is not one of ours, is expired, or is for another audience (401).
    #[error("invalid bearer token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

impl Claims {
    /// The authenticated user: `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>` and `system:authenticated`.
    pub fn user(&self) -> UserInfo {
        let ns = &self.kubernetes.namespace;
        UserInfo::new(
            &service_account_user(ns, &self.kubernetes.serviceaccount.name),
            &["system:serviceaccounts", &format!("system:serviceaccounts:{ns}"), AUTHENTICATED],
        )
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// What a TokenRequest asks for, after defaulting and validation.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: ObjectRef,
    /// Empty: the API server's audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
}

/// Signs and validates ServiceAccount tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    api_audiences: Vec<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("kid", &self.kid).field("issuer", &self.issuer).finish()
    }
}

impl TokenIssuer {
    /// Loads the signing key from `pki.sa_key`, creating it (0600) on first start.
    pub fn load_or_create(pki: &Pki) -> Result<Self, TokenError> {
        let path = &pki.sa_key;
        let bad = |message: String| TokenError::BadKey { path: path.display().to_string(), message };
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
                let pem = key.serialize_pem();
                tls::write_private(path, pem.as_bytes())?;
                pem
            }
            Err(source) => return Err(TlsError::Read { path: path.clone(), source }.into()),
        };
        Self::from_pem(&pem).map_err(bad)
    }

    /// From a PKCS#8 PEM ECDSA P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err("not an ECDSA P-256 key".into());
        }
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let decoding =
            DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).map_err(|e| e.to_string())?;
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)));
        Ok(TokenIssuer {
            encoding,
            decoding,
            kid,
            issuer: DEFAULT_ISSUER.into(),
            api_audiences: vec![DEFAULT_ISSUER.into()],
        })
    }

    /// The audiences the API server accepts.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// Signs a token for `spec` at `now` (Unix seconds); returns it and the expiry to report
    /// (`status.expirationTimestamp`).
    pub fn issue(&self, spec: &TokenSpec, now: i64) -> Result<(String, i64), TokenError> {
        let audiences =
            if spec.audiences.is_empty() { self.api_audiences.clone() } else { spec.audiences.clone() };
        let reported = now + spec.expiration_seconds;
        let extend = spec.expiration_seconds == WARN_ONLY_EXPIRATION
            && spec.pod.is_some()
            && audiences == self.api_audiences;
        let (exp, warnafter) =
            if extend { (now + EXTENDED_EXPIRATION, Some(reported)) } else { (reported, None) };
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: service_account_user(&spec.namespace, &spec.service_account.name),
            aud: audiences,
            exp,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: spec.namespace.clone(),
                serviceaccount: spec.service_account.clone(),
                pod: spec.pod.clone(),
                secret: spec.secret.clone(),
                node: spec.node.clone(),
                warnafter,
            },
        };
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(TokenError::Sign)?;
        Ok((token, reported))
    }

    /// Checks the signature, issuer, audience (one of the API server's), `nbf` and `exp` (with
    /// jsonwebtoken's 60 s leeway, as kube-apiserver's validator allows a minute of skew).
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&self.api_audiences);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(TokenError::Invalid)?;
        if data.claims.sub
            != service_account_user(
                &data.claims.kubernetes.namespace,
                &data.claims.kubernetes.serviceaccount.name,
            )
        {
            return Err(TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidSubject.into()));
        }
        Ok(data.claims)
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(aud: &[&str], secs: i64, pod: bool) -> TokenSpec {
        TokenSpec {
            namespace: "team".into(),
            service_account: ObjectRef { name: "bot".into(), uid: "u1".into() },
            audiences: aud.iter().map(|s| s.to_string()).collect(),
            expiration_seconds: secs,
            pod: pod.then(|| ObjectRef { name: "p".into(), uid: "pu".into() }),
            ..Default::default()
        }
    }

    #[test]
    fn issue_validate_audience_expiry_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::at(dir.path());
        let issuer = TokenIssuer::load_or_create(&pki).unwrap();
        let now = unix_now();
        let (token, exp) = issuer.issue(&spec(&[], 3600, false), now).unwrap();
        assert_eq!(exp, now + 3600);
        assert!(looks_like_jwt(&token));
        let claims = issuer.validate(&token).unwrap();
        assert_eq!(claims.user().name, "system:serviceaccount:team:bot");
        assert!(claims.user().in_group("system:serviceaccounts:team"));
        // Another audience, an expired token, another key: refused.
        let (other, _) = issuer.issue(&spec(&["vault"], 3600, false), now).unwrap();
        assert!(matches!(issuer.validate(&other), Err(TokenError::Invalid(_))));
        let (old, _) = issuer.issue(&spec(&[], 600, false), now - 3600).unwrap();
        assert!(matches!(issuer.validate(&old), Err(TokenError::Invalid(_))));
        let again = TokenIssuer::load_or_create(&pki).unwrap();
        assert!(again.validate(&token).is_ok(), "the key is kept across restarts");
        let dir2 = tempfile::tempdir().unwrap();
        let stranger = TokenIssuer::load_or_create(&Pki::at(dir2.path())).unwrap();
        assert!(stranger.validate(&token).is_err());
        // A kubelet's 3607 s pod-bound token lives a year on the wire, warnafter at 3607 s.
        let (t, reported) = issuer.issue(&spec(&[], WARN_ONLY_EXPIRATION, true), now).unwrap();
        let c = issuer.validate(&t).unwrap();
        assert_eq!(reported, now + 3607);
        assert_eq!(c.exp, now + EXTENDED_EXPIRATION);
        assert_eq!(c.kubernetes.warnafter, Some(now + 3607));
        assert_eq!(c.kubernetes.pod.unwrap().name, "p");
    }
}
