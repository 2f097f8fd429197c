//! Pod networking: netns pinning, links/addresses/routes over netlink, IPAM, NAT, DNS files,
//! and the [`PodNetwork`] API tying them together.
//!
//! Host changes, all in the node's network namespace (`PodNetworkConfig::node_netns`):
//! `net.ipv4.ip_forward=1`; `net.bridge.bridge-nf-call-iptables=1` when br_netfilter is loaded
//! (needed for pod → Service → pod on one bridge); `net.ipv4.conf.all.route_localnet=1` only if
//! `localhost_hostports` is set. Objects: bridge, `rkv…` veths, pins, `RKUBE-…` chains.

pub mod dns;
pub mod ipam;
pub mod iptables;
pub mod link;
pub mod nat;
pub mod netns;
pub mod pod;
pub mod sysctl;

pub use nat::{HostPort, Protocol};
pub use pod::{PodNetwork, PodNetworkConfig, PodNetworkError, PodNetworkInfo};
