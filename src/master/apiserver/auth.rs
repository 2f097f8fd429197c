//! Authentication: who is calling. In order: a client certificate verified by the TLS layer
//! against the cluster CA (user = CN, groups = O), a bearer token (admin → `admin` in
//! `system:masters`; the join credential → `system:bootstrap:<id>` in `system:bootstrappers`), and
//! a ServiceAccount JWT signed by the master (checked here for signature, audience and expiry;
//! the caller then checks that the ServiceAccount and a bound Pod still exist), and in
//! plain-HTTP anonymous mode (loopback only) everyone is an administrator. Every authenticated
//! user is also in `system:authenticated`.

use super::authz::{BOOTSTRAPPERS, MASTERS, UserInfo};
use super::rbac::AUTHENTICATED;
use super::satoken::{self, Claims, TokenIssuer};
use axum::http::{HeaderMap, header};
use std::sync::Arc;

/// The identity of a TLS connection's verified client certificate, inserted into every request
/// of that connection by [`super::serve::serve_tls`].
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

impl PeerIdentity {
    /// From the DER of the first certificate the client presented (already verified by rustls).
    pub fn from_certificate(der: Option<&[u8]>) -> Self {
        PeerIdentity(
            der.and_then(crate::master::tls::certificate_subject)
                .map(|(name, groups)| UserInfo { name, groups }),
        )
    }
}

/// Who may call the API.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Bearer tokens of administrators (`system:masters`).
    pub admin_tokens: Vec<String>,
    /// The join credential `<id>.<secret>` (bootstrap token), if nodes may join.
    pub join_credential: Option<String>,
    /// Accept requests without credentials as administrators (plain HTTP on loopback only).
    pub allow_anonymous: bool,
    /// Validates ServiceAccount tokens (`None`: they are refused).
    pub tokens: Option<Arc<TokenIssuer>>,
}

/// The outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    User(UserInfo),
    /// A valid ServiceAccount token; the ServiceAccount (and bound Pod) must still exist.
    ServiceAccount(Box<Claims>),
    /// Credentials were presented but are not valid (401).
    Invalid,
    /// No credentials (401 unless anonymous access is on).
    Missing,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl Auth {
    /// Authenticates a request from its headers and its connection's client certificate.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&PeerIdentity>) -> Authenticated {
        if let Some(mut user) = peer.and_then(|p| p.0.clone()) {
            if !user.in_group(AUTHENTICATED) {
                user.groups.push(AUTHENTICATED.into());
            }
            return Authenticated::User(user);
        }
        if self.allow_anonymous {
            return Authenticated::User(UserInfo::new("system:anonymous", &[MASTERS, AUTHENTICATED]));
        }
        let Some(token) = bearer_token(headers) else { return Authenticated::Missing };
        if self.admin_tokens.iter().any(|k| constant_time_eq(k.as_bytes(), token.as_bytes())) {
            return Authenticated::User(UserInfo::new("admin", &[MASTERS, AUTHENTICATED]));
        }
        if let Some(cred) = &self.join_credential
            && constant_time_eq(cred.as_bytes(), token.as_bytes())
        {
            let id = cred.split_once('.').map_or("", |(id, _)| id);
            return Authenticated::User(UserInfo::new(
                &format!("system:bootstrap:{id}"),
                &[BOOTSTRAPPERS, AUTHENTICATED],
            ));
        }
        if let Some(issuer) = self.tokens.as_ref().filter(|_| satoken::looks_like_jwt(token)) {
            return match issuer.validate(token) {
                Ok(claims) => Authenticated::ServiceAccount(Box::new(claims)),
                Err(e) => {
                    tracing::debug!(error = %e, "refused a service account token");
                    Authenticated::Invalid
                }
            };
        }
        Authenticated::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_certificates_and_anonymous() {
        let auth = Auth {
            admin_tokens: vec!["admintoken".into()],
            join_credential: Some("abc123.0123456789abcdef".into()),
            allow_anonymous: false,
            tokens: None,
        };
        let Authenticated::User(admin) = auth.authenticate(&headers(Some("admintoken")), None) else {
            panic!()
        };
        assert!(admin.in_group(MASTERS));
        let Authenticated::User(boot) = auth.authenticate(&headers(Some("abc123.0123456789abcdef")), None)
        else {
            panic!()
        };
        assert_eq!(boot, UserInfo::new("system:bootstrap:abc123", &[BOOTSTRAPPERS, AUTHENTICATED]));
        assert_eq!(
            auth.authenticate(&headers(Some("abc123.0123456789abcdeX")), None),
            Authenticated::Invalid
        );
        assert_eq!(auth.authenticate(&headers(None), None), Authenticated::Missing);
        let node = PeerIdentity(Some(UserInfo::new("system:node:n1", &["system:nodes"])));
        let Authenticated::User(u) = auth.authenticate(&headers(None), Some(&node)) else { panic!() };
        assert_eq!(u.node_name(), Some("n1"));
        let anon = Auth { allow_anonymous: true, ..Default::default() };
        let Authenticated::User(u) = anon.authenticate(&headers(None), None) else { panic!() };
        assert!(u.in_group(MASTERS));
    }
}
