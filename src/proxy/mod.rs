//! Service rules with kube-proxy's semantics (ClusterIP, NodePort, LoadBalancer IPs, load
//! balancing, masquerade mark, hairpin), rendered from one pure model by two backends: the
//! iptables layout as `iptables-restore` input, and the nftables layout as `nft -f` transactions.

pub mod apply;
pub mod backend;
pub mod chains;
pub mod checks;
pub mod conntrack;
#[cfg(test)]
mod fixtures;
pub mod nft;
pub mod nft_apply;
pub mod render;
pub mod types;

pub use apply::{Proxier, ProxyError, SyncStats, apply, flush};
pub use backend::{Backend, ProxyMode};
pub use nft_apply::NftProxier;
pub use render::{render, render_full};
pub use types::{Endpoint, ProxyConfig, Service, ServiceEndpoints, ServicePort};
