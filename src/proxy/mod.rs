//! Service rules with kube-proxy's iptables semantics (ClusterIP, NodePort, LoadBalancer IPs,
//! probability load balancing, masquerade mark, hairpin), rendered as `iptables-restore` input.

pub mod apply;
pub mod chains;
pub mod render;
pub mod types;

pub use apply::{ProxyError, apply, flush};
pub use render::{render, render_full};
pub use types::{Endpoint, ProxyConfig, Service, ServiceEndpoints, ServicePort};
