//! Where a node keeps things: every host path and name the kubelet uses, as one value built from
//! CLI flags, so tests run whole nodes in temp dirs with their own bridge and CIDR.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::image::store::{Store, StoreError};
use crate::network::dns::NodeDns;
use crate::network::{PodNetwork, PodNetworkConfig, PodNetworkError};
use crate::runtime::Runtime;

/// A node's paths and network settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Persistent state: image store, pods, network state (`/var/lib/rkube`).
    pub root: PathBuf,
    /// Runtime state: container state dirs, pinned namespaces, agent pid (`/run/rkube`).
    pub run_dir: PathBuf,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod range (every node's CIDR): traffic to it keeps the pod's source
    /// address. `None`: a single host, only `pod_cidr`.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Node bridge name.
    pub bridge: String,
    /// cgroup hierarchy root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// cgroup parent of pods (`rkube`).
    pub cgroup_parent: String,
    /// Network namespace the bridge and rules live in (`None`: the caller's).
    pub node_netns: Option<PathBuf>,
    /// Host veth prefix (`rkv`).
    pub veth_prefix: String,
    /// iptables chain prefix (`RKUBE`).
    pub chain_prefix: String,
    /// What pods' resolv.conf is made of: the cluster DNS (if any), the cluster domain and the
    /// node's own resolvers.
    pub dns: NodeDns,
    /// Containers whose Pod names no seccomp profile run under the runtime's default profile
    /// (the kubelet's `--seccomp-default`); `false`: unconfined. Profiles for `Localhost` live
    /// in `<root>/seccomp`.
    pub seccomp_default: bool,
}

impl NodeConfig {
    /// Directory holding one directory per pod.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// The directory of pod `name`.
    pub fn pod_dir(&self, name: &str) -> PathBuf {
        self.pods_dir().join(name)
    }

    /// Pid file of the running agent.
    pub fn agent_pid_file(&self) -> PathBuf {
        self.run_dir.join("agent.pid")
    }

    /// Log of the background agent.
    pub fn agent_log(&self) -> PathBuf {
        self.root.join("agent.log")
    }

    /// Directory of pinned IPC namespaces.
    pub fn ipc_dir(&self) -> PathBuf {
        self.run_dir.join("ipc")
    }

    /// The container runtime of this node.
    pub fn runtime(&self) -> Runtime {
        let mut rt = Runtime::new(self.run_dir.join("runtime"), &self.cgroup_root);
        rt.cgroup_parent = self.cgroup_parent.clone();
        rt.monitor_binary = crate::runtime::monitor::installed_binary();
        rt
    }

    /// The pod network manager of this node.
    #[allow(clippy::result_large_err)] // the network module's error type
    pub fn network(&self) -> Result<PodNetwork, PodNetworkError> {
        PodNetwork::new(self.network_config())
    }

    /// The settings of this node's pod network.
    pub fn network_config(&self) -> PodNetworkConfig {
        let mut config = PodNetworkConfig::new(self.pod_cidr);
        config.bridge = self.bridge.clone();
        config.netns_dir = self.run_dir.join("netns");
        config.state_dir = self.root.join("network");
        config.node_netns = self.node_netns.clone();
        config.veth_prefix = self.veth_prefix.clone();
        config.chain_prefix = self.chain_prefix.clone();
        config.cluster_cidr = self.cluster_cidr;
        config
    }

    /// The image store (shared with `rkubelet image --root`).
    pub fn image_store(&self) -> Result<Store, StoreError> {
        Store::open(&self.root)
    }

    /// The root path as given.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
