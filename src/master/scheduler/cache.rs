//! The scheduler's incremental node-info cache: per node, what it offers and what its pods (bound or
//! assumed) already use. Updated by watch events and by "assume" before the async bind.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use super::resources::{DEFAULT_MAX_PODS, Resources, pod_nonzero_requests, pod_requests};

/// A host port a pod uses: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// What the scheduler needs to know about one pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    pub requests: Resources,
    /// (cpu millicores, memory bytes) with scoring defaults for missing requests.
    pub nonzero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    /// UID of the controller owner (ReplicaSet), for spreading.
    pub owner_uid: Option<String>,
}

impl PodInfo {
    /// Extract the scheduling-relevant facts of a pod.
    pub fn new(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let key =
            format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""));
        let host_ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| {
                (
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                    p.host_port.unwrap_or(0),
                )
            })
            .collect();
        let owner_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            key,
            requests: pod_requests(pod),
            nonzero: pod_nonzero_requests(pod),
            host_ports,
            owner_uid,
        }
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    /// Σ requests of the pods on the node.
    pub requested: Resources,
    /// Σ non-zero (cpu, memory) requests, for scoring.
    pub nonzero_requested: (i64, i64),
    pub pod_count: i64,
    pub used_ports: HashSet<HostPort>,
    /// Pods per controller owner UID.
    pub owner_counts: HashMap<String, u32>,
    /// Pods accounted on the node, by key.
    pub pods: HashMap<String, PodInfo>,
}

impl NodeInfo {
    /// Node facts from a Node object (no pods yet).
    pub fn from_node(node: &Node) -> NodeInfo {
        let mut info =
            NodeInfo { name: node.metadata.name.clone().unwrap_or_default(), ..Default::default() };
        info.set_node(node);
        info
    }

    /// Refresh the node facts, keeping its pods.
    pub fn set_node(&mut self, node: &Node) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        let alloc =
            status.and_then(|s| s.allocatable.clone().or_else(|| s.capacity.clone())).unwrap_or_default();
        self.allocatable = Resources::from_list(&alloc);
        self.allowed_pods = alloc
            .get("pods")
            .and_then(|q| crate::api::quantity::units(&q.0).ok())
            .unwrap_or(DEFAULT_MAX_PODS);
    }

    /// Account a pod on this node (idempotent per pod key).
    pub fn add_pod(&mut self, pod: PodInfo) {
        if self.pods.contains_key(&pod.key) {
            self.remove_pod(&pod.key.clone());
        }
        self.requested.add(&pod.requests);
        self.nonzero_requested.0 += pod.nonzero.0;
        self.nonzero_requested.1 += pod.nonzero.1;
        self.pod_count += 1;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if let Some(uid) = &pod.owner_uid {
            *self.owner_counts.entry(uid.clone()).or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    /// Remove a pod's usage from this node.
    pub fn remove_pod(&mut self, key: &str) -> Option<PodInfo> {
        let pod = self.pods.remove(key)?;
        self.requested.sub(&pod.requests);
        self.nonzero_requested.0 -= pod.nonzero.0;
        self.nonzero_requested.1 -= pod.nonzero.1;
        self.pod_count -= 1;
        for p in &pod.host_ports {
            if !self.pods.values().any(|other| other.host_ports.contains(p)) {
                self.used_ports.remove(p);
            }
        }
        if let Some(uid) = &pod.owner_uid
            && let Some(c) = self.owner_counts.get_mut(uid)
        {
            *c -= 1;
            if *c == 0 {
                self.owner_counts.remove(uid);
            }
        }
        Some(pod)
    }
}

/// All nodes, indexable by name, plus which node each known pod is on.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pod_node: HashMap<String, String>,
}

impl Cache {
    /// Add or refresh a node.
    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name) {
            Some(&i) => self.nodes[i].set_node(node),
            None => {
                self.index.insert(name, self.nodes.len());
                self.nodes.push(NodeInfo::from_node(node));
            }
        }
    }

    /// Remove a node (its pods are forgotten too).
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let removed = self.nodes.swap_remove(i);
        for key in removed.pods.keys() {
            self.pod_node.remove(key);
        }
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Account a pod on a node (bound or assumed); moves it if it was elsewhere.
    pub fn add_pod(&mut self, node: &str, pod: PodInfo) {
        self.remove_pod(&pod.key);
        if let Some(&i) = self.index.get(node) {
            self.pod_node.insert(pod.key.clone(), node.to_string());
            self.nodes[i].add_pod(pod);
        }
    }

    /// Forget a pod wherever it is.
    pub fn remove_pod(&mut self, key: &str) {
        if let Some(node) = self.pod_node.remove(key)
            && let Some(&i) = self.index.get(&node)
        {
            self.nodes[i].remove_pod(key);
        }
    }

    /// The node a known pod is accounted on.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pod_node.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(NodeStatus {
                allocatable: Some(
                    [("cpu", "4"), ("memory", "8Gi"), ("pods", "10")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.into())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tracks_pods_across_nodes_and_removal() {
        let mut c = Cache::default();
        c.upsert_node(&node("a"));
        c.upsert_node(&node("b"));
        assert_eq!(c.node("a").unwrap().allocatable.milli_cpu, 4000);
        assert_eq!(c.node("a").unwrap().allowed_pods, 10);
        let p = PodInfo {
            key: "ns/p".into(),
            requests: Resources { milli_cpu: 500, ..Default::default() },
            host_ports: vec![("TCP".into(), "0.0.0.0".into(), 80)],
            owner_uid: Some("rs1".into()),
            ..Default::default()
        };
        c.add_pod("a", p.clone());
        c.add_pod("a", p.clone());
        assert_eq!(c.node("a").unwrap().pod_count, 1);
        c.add_pod("b", p);
        assert_eq!(c.node("a").unwrap().pod_count, 0);
        assert!(c.node("a").unwrap().used_ports.is_empty());
        assert_eq!(c.node("b").unwrap().requested.milli_cpu, 500);
        assert_eq!(c.node("b").unwrap().owner_counts["rs1"], 1);
        c.remove_node("a");
        assert_eq!(c.node("b").unwrap().name, "b");
        c.remove_pod("ns/p");
        assert_eq!(c.node("b").unwrap().pod_count, 0);
        assert!(c.pod_node("ns/p").is_none());
    }
}
