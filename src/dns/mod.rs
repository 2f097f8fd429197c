//! Cluster DNS (the Kubernetes DNS specification 1.1.0), served by every joined node for the pods
//! on it, in place of a CoreDNS deployment.
//!
//! - [`zone`]: the pure core. The Services and EndpointSlices a node watches become a [`zone::Zone`]
//!   whose [`zone::Zone::lookup`] answers `<svc>.<ns>.svc.<zone>` (ClusterIP, or the ready endpoints
//!   of a headless Service), `<hostname>.<svc>.<ns>.svc.<zone>`, SRV for named ports, PTR, CNAME for
//!   ExternalName Services, `<a-b-c-d>.<ns>.pod.<zone>` and `dns-version`, with NXDOMAIN/NODATA and
//!   the zone's SOA as CoreDNS gives them.
//! - [`server`]: the shell. hickory-server answers UDP and TCP from the current zone and forwards
//!   every other name to the node's own nameservers.
//!
//! The master publishes the `kube-system/kube-dns` Service (the Service CIDR's tenth address) with
//! `internalTrafficPolicy: Local` and one endpoint per Ready node, its InternalIP: each node's
//! Service rules send a pod's queries to the server of the pod's own node.

pub mod server;
pub mod zone;

pub use server::{ClusterDns, DnsServerError};
pub use zone::{Lookup, Zone, ZoneConfig};
