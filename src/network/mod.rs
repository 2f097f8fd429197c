//! Pod networking: netns pinning, links/addresses/routes over netlink, IPAM, NAT, DNS files,
//! and the [`PodNetwork`] API tying them together.

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
