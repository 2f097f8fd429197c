//! Node IPAM: every Node without `spec.podCIDR` gets the first free `/<mask>` of the cluster CIDR
//! (`spec.podCIDR` and `spec.podCIDRs`, as kube-controller-manager's range allocator writes them).
//! The allocation is level-triggered: each pass rebuilds the used set from the Nodes that exist,
//! so a restart loses nothing and a deleted Node's subnet is free again. When the range is
//! exhausted the Node gets a Warning Event `CIDRNotAvailable`.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

use super::events::{EventRecorder, EventType};
use super::runner::Trigger;
use crate::master::client::{ApiError, ClusterApi};

/// Why node IPAM failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeIpamError {
    #[error("node CIDR mask /{mask} does not fit the cluster CIDR {cluster} (needs a mask from /{} to /30)", cluster.prefix_len())]
    Mask { cluster: Ipv4Net, mask: u8 },
    #[error("node ipam: listing nodes: {0}")]
    List(#[source] ApiError),
    #[error("node ipam: setting the pod CIDR of {node}: {source}")]
    Assign {
        node: String,
        #[source]
        source: ApiError,
    },
}

/// Where pod CIDRs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// `--cluster-cidr` (default `10.244.0.0/16`).
    pub cluster_cidr: Ipv4Net,
    /// `--node-cidr-mask-size` (default 24).
    pub mask: u8,
}

impl Default for NodeIpamConfig {
    fn default() -> Self {
        NodeIpamConfig { cluster_cidr: "10.244.0.0/16".parse().expect("literal CIDR"), mask: 24 }
    }
}

/// The subnets of a cluster CIDR, by index, and which are taken.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    cluster: Ipv4Net,
    mask: u8,
    used: BTreeSet<u32>,
}

impl CidrAllocator {
    /// An empty allocator; the mask must lie between the cluster prefix and /30.
    pub fn new(cluster: Ipv4Net, mask: u8) -> Result<Self, NodeIpamError> {
        if mask < cluster.prefix_len() || mask > 30 {
            return Err(NodeIpamError::Mask { cluster, mask });
        }
        Ok(CidrAllocator { cluster: cluster.trunc(), mask, used: BTreeSet::new() })
    }

    fn count(&self) -> u64 {
        1u64 << (self.mask - self.cluster.prefix_len())
    }

    fn subnet(&self, index: u32) -> Ipv4Net {
        let base = u32::from(self.cluster.network()) + (index << (32 - self.mask));
        Ipv4Net::new(Ipv4Addr::from(base), self.mask).expect("mask checked in new")
    }

    /// Marks `net` taken if it is one of our subnets; returns whether it was.
    pub fn occupy(&mut self, net: Ipv4Net) -> bool {
        if net.prefix_len() != self.mask || !self.cluster.contains(&net) {
            return false;
        }
        let index = (u32::from(net.network()) - u32::from(self.cluster.network())) >> (32 - self.mask);
        self.used.insert(index)
    }

    /// Frees `net`.
    pub fn release(&mut self, net: Ipv4Net) {
        if net.prefix_len() == self.mask && self.cluster.contains(&net) {
            let index = (u32::from(net.network()) - u32::from(self.cluster.network())) >> (32 - self.mask);
            self.used.remove(&index);
        }
    }

    /// The first free subnet, now taken; `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Net> {
        let index = (0..self.count()).map(|i| i as u32).find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        Some(self.subnet(index))
    }
}

/// What a pass wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamAction {
    Assign { node: String, cidr: Ipv4Net },
    Exhausted { node: String },
}

fn node_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).filter(|c| !c.is_empty())
}

/// Assigns subnets to the Nodes that have none, in name order, after occupying every subnet
/// already in use (pure).
pub fn plan<N: Borrow<Node>>(nodes: &[N], config: &NodeIpamConfig) -> Result<Vec<IpamAction>, NodeIpamError> {
    let nodes: Vec<&Node> = nodes.iter().map(Borrow::borrow).collect();
    let mut alloc = CidrAllocator::new(config.cluster_cidr, config.mask)?;
    for n in &nodes {
        let cidrs = n.spec.as_ref().and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        for c in node_cidr(n).into_iter().map(String::from).chain(cidrs) {
            if let Ok(net) = c.parse::<Ipv4Net>() {
                alloc.occupy(net);
            }
        }
    }
    let mut pending: Vec<&Node> = nodes
        .into_iter()
        .filter(|n| node_cidr(n).is_none() && n.metadata.deletion_timestamp.is_none())
        .collect();
    pending.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(pending
        .into_iter()
        .map(|n| {
            let node = n.metadata.name.clone().unwrap_or_default();
            match alloc.allocate() {
                Some(cidr) => IpamAction::Assign { node, cidr },
                None => IpamAction::Exhausted { node },
            }
        })
        .collect())
}

/// One pass: assign pod CIDRs, record exhaustion once per Node (until the controller restarts).
pub async fn sync<C: ClusterApi>(
    client: &C,
    config: &NodeIpamConfig,
    events: &EventRecorder<C>,
    warned: &mut BTreeSet<String>,
) -> Result<(), NodeIpamError> {
    let nodes = client.snapshot::<Node>().await.map_err(NodeIpamError::List)?;
    let by_name: HashMap<&str, &Node> =
        nodes.iter().map(|n| (n.metadata.name.as_deref().unwrap_or(""), &**n)).collect();
    warned.retain(|n| by_name.contains_key(n.as_str()));
    for action in plan(&nodes, config)? {
        match action {
            IpamAction::Assign { node, cidr } => {
                let Some(mut n) = by_name.get(node.as_str()).map(|n| (*n).clone()) else {
                    continue;
                };
                let spec = n.spec.get_or_insert_default();
                spec.pod_cidr = Some(cidr.to_string());
                spec.pod_cidrs = Some(vec![cidr.to_string()]);
                match client.update(&n).await {
                    Ok(_) => tracing::info!(node, %cidr, "assigned pod CIDR"),
                    // Changed or gone meanwhile: the change triggers another pass.
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(source) => return Err(NodeIpamError::Assign { node, source }),
                }
            }
            IpamAction::Exhausted { node } => {
                if warned.insert(node.clone())
                    && let Some(n) = by_name.get(node.as_str())
                {
                    let msg = format!(
                        "Node {node} status is now: CIDRNotAvailable (no free /{} left in {})",
                        config.mask, config.cluster_cidr
                    );
                    events.record(*n, EventType::Warning, "CIDRNotAvailable", &msg).await;
                }
            }
        }
    }
    Ok(())
}

/// Runs the node IPAM controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>, config: NodeIpamConfig) {
    // Every Node status update wakes this loop; a joining node waits at most this long for its CIDR.
    let mut trigger = Trigger::default().paced(Duration::from_millis(100)).watch::<Node, C>(&client).await;
    let events = EventRecorder::new(client.clone(), "node-ipam-controller");
    let mut warned = BTreeSet::new();
    trigger.named("nodeipam");
    loop {
        if let Err(e) = sync(&*client, &config, &events, &mut warned).await {
            tracing::warn!(controller = "node-ipam", error = %e, "sync failed");
        }
        trigger.wait(Duration::from_secs(30)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::client::memory::MemoryCluster;
    use k8s_openapi::api::core::v1::{Event, NodeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: cidr.map(String::from), ..Default::default() }),
            status: None,
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocator_hands_out_first_free_and_reuses_released() {
        let mut a = CidrAllocator::new(net("10.244.0.0/16"), 24).unwrap();
        assert!(a.occupy(net("10.244.1.0/24")));
        assert!(!a.occupy(net("10.128.0.0/24")), "outside the cluster CIDR");
        assert!(!a.occupy(net("10.244.2.0/25")), "another size");
        assert_eq!(a.allocate(), Some(net("10.244.0.0/24")));
        assert_eq!(a.allocate(), Some(net("10.244.2.0/24")));
        a.release(net("10.244.0.0/24"));
        assert_eq!(a.allocate(), Some(net("10.244.0.0/24")));
        let mut small = CidrAllocator::new(net("10.0.0.0/23"), 24).unwrap();
        assert_eq!(small.allocate(), Some(net("10.0.0.0/24")));
        assert_eq!(small.allocate(), Some(net("10.0.1.0/24")));
        assert_eq!(small.allocate(), None);
        assert!(CidrAllocator::new(net("10.0.0.0/16"), 8).is_err());
        assert!(CidrAllocator::new(net("10.0.0.0/16"), 31).is_err());
    }

    #[test]
    fn plan_keeps_existing_and_reports_exhaustion() {
        let cfg = NodeIpamConfig { cluster_cidr: net("10.0.0.0/23"), mask: 24 };
        let nodes = [
            node("b", None),
            node("a", Some("10.0.0.0/24")),
            node("c", None),
            node("fake", Some("10.128.0.0/24")),
        ];
        assert_eq!(
            plan(&nodes, &cfg).unwrap(),
            vec![
                IpamAction::Assign { node: "b".into(), cidr: net("10.0.1.0/24") },
                IpamAction::Exhausted { node: "c".into() }
            ]
        );
    }

    #[tokio::test]
    async fn sync_assigns_distinct_subnets_and_warns_once() {
        let client = Arc::new(MemoryCluster::new());
        let cfg = NodeIpamConfig { cluster_cidr: net("10.0.0.0/23"), mask: 24 };
        for n in ["n1", "n2", "n3"] {
            client.create(&node(n, None)).await.unwrap();
        }
        let events = EventRecorder::new(client.clone(), "node-ipam-controller");
        let mut warned = BTreeSet::new();
        sync(&*client, &cfg, &events, &mut warned).await.unwrap();
        sync(&*client, &cfg, &events, &mut warned).await.unwrap();
        let nodes = client.list::<Node>(None).await.unwrap().items;
        let cidrs: Vec<Option<String>> =
            nodes.iter().map(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone())).collect();
        assert_eq!(cidrs, [Some("10.0.0.0/24".into()), Some("10.0.1.0/24".into()), None]);
        assert_eq!(nodes[0].spec.as_ref().unwrap().pod_cidrs, Some(vec!["10.0.0.0/24".to_string()]));
        let evs = client.list::<Event>(None).await.unwrap().items;
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].reason.as_deref(), Some("CIDRNotAvailable"));
        assert_eq!(evs[0].involved_object.name.as_deref(), Some("n3"));
        // A deleted node frees its subnet for the waiting one.
        client.delete::<Node>(None, "n1", &Default::default()).await.unwrap();
        sync(&*client, &cfg, &events, &mut warned).await.unwrap();
        let n3: Node = client.get(None, "n3").await.unwrap();
        assert_eq!(n3.spec.unwrap().pod_cidr.as_deref(), Some("10.0.0.0/24"));
    }
}
