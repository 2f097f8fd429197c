//! The Node object a joined node registers and keeps current: capacity from the host, addresses,
//! nodeInfo and the kubelet's conditions (cluster.md §1). Reading the host is a thin shell
//! (`HostFacts::read`); building the object is pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// The container runtime version nodes report (`CONTAINER-RUNTIME` in `kubectl get nodes -o wide`).
pub const RUNTIME_VERSION: &str = concat!("rkube://", env!("CARGO_PKG_VERSION"));
/// The kubelet version nodes report: the API version rkube follows.
pub const KUBELET_VERSION: &str = "v1.32.0-rkube";
/// Pods per node, the kubelet's `maxPods` default.
pub const MAX_PODS: u32 = 110;

/// What the host offers and how it describes itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: u32,
    pub memory_ki: u64,
    pub ephemeral_storage_ki: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub architecture: String,
}

impl HostFacts {
    /// Reads the host: CPUs, memory, the filesystem of `root`, kernel and OS release.
    pub fn read(root: &Path) -> HostFacts {
        let text = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let memory_ki = text("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let ephemeral_storage_ki =
            nix::sys::statvfs::statvfs(root).map(|s| s.blocks() * s.fragment_size() / 1024).unwrap_or(0);
        let os_image = os_release_pretty_name(&text("/etc/os-release"));
        let machine_id = text("/etc/machine-id");
        let system_uuid = Some(text("/sys/class/dmi/id/product_uuid"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| machine_id.clone());
        HostFacts {
            cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            memory_ki,
            ephemeral_storage_ki,
            kernel_version: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image,
            machine_id,
            system_uuid,
            boot_id: text("/proc/sys/kernel/random/boot_id"),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
        }
    }
}

/// `PRETTY_NAME` of an os-release file.
pub fn os_release_pretty_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// Go's name for an architecture (`kubernetes.io/arch`).
pub fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Who the node is on the network.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub internal_ip: IpAddr,
    /// Port of the node's HTTPS endpoint (logs, exec, port-forward).
    pub kubelet_port: u16,
}

/// The Node as the kubelet registers it (labels, annotations, status; `spec` stays empty: the
/// master's IPAM fills `podCIDR`).
pub fn node_object(id: &NodeIdentity, facts: &HostFacts, now: &Time) -> Node {
    let arch = facts.architecture.clone();
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", id.name.clone()),
        ("kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", arch.clone()),
        ("beta.kubernetes.io/os", "linux".into()),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels),
            annotations: Some(
                [("volumes.kubernetes.io/controller-managed-attach-detach".to_string(), "true".to_string())]
                    .into(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(node_status(id, facts, now)),
    }
}

/// The node's status: capacity, allocatable, conditions (Ready last), addresses, nodeInfo.
pub fn node_status(id: &NodeIdentity, facts: &HostFacts, now: &Time) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", q(facts.cpus.to_string())),
        ("memory", q(format!("{}Ki", facts.memory_ki))),
        ("pods", q(MAX_PODS.to_string())),
        ("ephemeral-storage", q(format!("{}Ki", facts.ephemeral_storage_ki))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // The kubelet's default hard eviction thresholds: memory.available < 100Mi,
    // nodefs.available < 10%.
    let allocatable: BTreeMap<String, Quantity> = [
        ("cpu", q(facts.cpus.to_string())),
        ("memory", q(format!("{}Ki", facts.memory_ki.saturating_sub(100 * 1024)))),
        ("pods", q(MAX_PODS.to_string())),
        ("ephemeral-storage", q(format!("{}Ki", facts.ephemeral_storage_ki / 10 * 9))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(healthy_conditions(now)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: id.internal_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: id.name.clone() },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(id.kubelet_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: facts.machine_id.clone(),
            system_uuid: facts.system_uuid.clone(),
            boot_id: facts.boot_id.clone(),
            kernel_version: facts.kernel_version.clone(),
            os_image: facts.os_image.clone(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: KUBELET_VERSION.into(),
            operating_system: "linux".into(),
            architecture: facts.architecture.clone(),
        }),
        ..Default::default()
    }
}

/// The kubelet's four conditions for a healthy node, Ready last (kubernetes#16961).
pub fn healthy_conditions(now: &Time) -> Vec<NodeCondition> {
    [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    })
    .collect()
}

/// Conditions for a status update: new heartbeat times, and each condition keeps its
/// `lastTransitionTime` unless its status flipped.
pub fn merge_conditions(old: &[NodeCondition], new: Vec<NodeCondition>) -> Vec<NodeCondition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = o.last_transition_time.clone();
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::chrono::{TimeZone, Utc};

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_ki: 8_000_000,
            ephemeral_storage_ki: 1_000_000,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
            ..Default::default()
        }
    }

    #[test]
    fn registers_as_the_kubelet_does() {
        let id =
            NodeIdentity { name: "n1".into(), internal_ip: "10.0.0.2".parse().unwrap(), kubelet_port: 10250 };
        let now = Time(Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        let node = node_object(&id, &facts(), &now);
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "8000000Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(status.allocatable.unwrap()["memory"].0, format!("{}Ki", 8_000_000 - 102_400));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.last().unwrap().type_, "Ready");
        assert_eq!(conditions.last().unwrap().status, "True");
        let addresses = status.addresses.unwrap();
        assert_eq!((addresses[0].type_.as_str(), addresses[0].address.as_str()), ("InternalIP", "10.0.0.2"));
        let info = status.node_info.unwrap();
        assert!(info.container_runtime_version.starts_with("rkube://"));
        assert_eq!(status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
    }

    #[test]
    fn transition_times_move_only_on_a_flip() {
        let t0 = Time(Utc.timestamp_opt(1_000, 0).unwrap());
        let t1 = Time(Utc.timestamp_opt(2_000, 0).unwrap());
        let mut old = healthy_conditions(&t0);
        old[3].status = "False".into();
        let merged = merge_conditions(&old, healthy_conditions(&t1));
        assert_eq!(merged[0].last_transition_time, Some(t0.clone()), "unchanged keeps its time");
        assert_eq!(merged[0].last_heartbeat_time, Some(t1.clone()));
        assert_eq!(merged[3].last_transition_time, Some(t1), "Ready flipped");
    }

    #[test]
    fn reads_os_release() {
        assert_eq!(
            os_release_pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(go_arch("x86_64"), "amd64");
    }
}
