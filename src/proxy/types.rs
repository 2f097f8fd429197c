//! Input of the Service rule renderer: small structs the control plane fills from k8s objects.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use crate::network::Protocol;

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (may be empty for a single-port Service).
    pub name: String,
    pub protocol: Protocol,
    /// The Service (cluster IP / LB IP) port.
    pub port: u16,
    /// Backend port used when an endpoint does not carry its own (port 0).
    pub target_port: u16,
    /// NodePort, if the Service is NodePort or LoadBalancer.
    pub node_port: Option<u16>,
}

/// A Service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `None` for headless Services (which get no rules).
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `status.loadBalancer.ingress` IPs.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` timeout in seconds (`None`: no affinity).
    pub session_affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`: NodePort/LB traffic only to endpoints on this node,
    /// client IP preserved.
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local`: cluster IP traffic only to endpoints on this node (dropped
    /// when there is none), as node-local services such as the cluster DNS use.
    pub internal_traffic_local: bool,
}

/// One backend address of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// Backend port; 0 means the Service port's `target_port`.
    pub port: u16,
    pub ready: bool,
    /// The endpoint runs on this node (used by `externalTrafficPolicy: Local`).
    pub local: bool,
}

/// The endpoints of one named port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub endpoints: Vec<Endpoint>,
}

/// Node-wide proxy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Chain-name prefix (`RKUBE`), at most 7 bytes so hashed names stay ≤ 28 characters.
    pub prefix: String,
    /// Pod CIDR of the cluster: ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Masquerade mark bit (14 → 0x4000).
    pub masquerade_bit: u8,
    /// Add `--random-fully` to the MASQUERADE rule.
    pub random_fully: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self { prefix: "RKUBE".into(), cluster_cidr: None, masquerade_bit: 14, random_fully: true }
    }
}

impl ProxyConfig {
    /// The mark value, e.g. `0x4000`.
    pub fn mark(&self) -> String {
        format!("{:#x}", 1u32 << self.masquerade_bit.min(31))
    }
}
