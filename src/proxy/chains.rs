//! Chain names: fixed ones, and per-service/per-endpoint ones hashed like kube-proxy's.

use sha2::{Digest, Sha256};

use super::types::Protocol;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 16 characters of the RFC 4648 base32 encoding of sha256(`input`).
pub fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    // 10 bytes = 80 bits = exactly 16 base32 characters.
    let mut bits: u128 = 0;
    for byte in &digest[..10] {
        bits = (bits << 8) | u128::from(*byte);
    }
    (0..16).rev().map(|i| BASE32[((bits >> (i * 5)) & 31) as usize] as char).collect()
}

/// Fixed chain names for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedChains {
    pub services: String,
    pub external_services: String,
    pub forward: String,
    pub nodeports: String,
    pub postrouting: String,
    pub mark_masq: String,
}

impl FixedChains {
    /// Names for `prefix` (e.g. `RKUBE-SERVICES`).
    pub fn new(prefix: &str) -> Self {
        Self {
            services: format!("{prefix}-SERVICES"),
            external_services: format!("{prefix}-EXTERNAL-SERVICES"),
            forward: format!("{prefix}-FORWARD"),
            nodeports: format!("{prefix}-NODEPORTS"),
            postrouting: format!("{prefix}-POSTROUTING"),
            mark_masq: format!("{prefix}-MARK-MASQ"),
        }
    }
}

/// `ns/name:port` as kube-proxy names a service port.
pub fn service_port_name(namespace: &str, service: &str, port: &str) -> String {
    format!("{namespace}/{service}:{port}")
}

/// `<prefix>-SVC-<hash>` for a service port.
pub fn svc_chain(prefix: &str, svc_port: &str, protocol: Protocol) -> String {
    format!("{prefix}-SVC-{}", hash16(&format!("{svc_port}{}", protocol.as_str())))
}

/// `<prefix>-EXT-<hash>` for a service port's external (NodePort / LB) traffic.
pub fn ext_chain(prefix: &str, svc_port: &str, protocol: Protocol) -> String {
    format!("{prefix}-EXT-{}", hash16(&format!("{svc_port}{}", protocol.as_str())))
}

/// `<prefix>-SEP-<hash>` for one endpoint of a service port.
pub fn sep_chain(prefix: &str, svc_port: &str, protocol: Protocol, endpoint: &str) -> String {
    format!("{prefix}-SEP-{}", hash16(&format!("{svc_port}{}{endpoint}", protocol.as_str())))
}

/// True for chains the proxy owns (fixed names or hashed per-service chains) under `prefix`.
pub fn is_proxy_chain(prefix: &str, name: &str) -> bool {
    let fixed = FixedChains::new(prefix);
    let hashed = ["-SVC-", "-EXT-", "-SEP-"].iter().any(|kind| name.starts_with(&format!("{prefix}{kind}")));
    hashed
        || [
            &fixed.services,
            &fixed.external_services,
            &fixed.forward,
            &fixed.nodeports,
            &fixed.postrouting,
            &fixed.mark_masq,
        ]
        .iter()
        .any(|f| f.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_16_base32_chars() {
        let h = hash16("default/web:httptcp");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_ne!(h, hash16("default/web:httpudp"));
        // sha256("") starts e3 b0 c4 42 98 fc 1c 14 9a fb → base32 "4OYMIQUY7QOBJGX3".
        assert_eq!(hash16(""), "4OYMIQUY7QOBJGX3");
    }

    #[test]
    fn names_fit_iptables_limit() {
        let name = sep_chain("RKUBE", "ns/svc:p", Protocol::Tcp, "10.0.0.1:80");
        assert!(name.starts_with("RKUBE-SEP-") && name.len() == 26);
    }

    #[test]
    fn ownership_by_prefix() {
        assert!(is_proxy_chain("RKUBE", "RKUBE-SERVICES"));
        assert!(is_proxy_chain("RKUBE", "RKUBE-SVC-ABC"));
        assert!(!is_proxy_chain("RKUBE", "RKUBE-POD-MASQ"));
        assert!(!is_proxy_chain("RKUBE", "KUBE-SERVICES"));
    }
}
