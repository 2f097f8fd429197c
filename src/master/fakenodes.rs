//! KWOK-like fake nodes: register N Nodes with capacity, renew their Leases, and act as their kubelet
//! without containers: pods bound to them are reported Running and Ready with a pod IP, and pods being
//! deleted are removed at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use crate::master::client::{ApiError, ClusterApi, DeleteParams, WatchEvent, memory::now_time};
use crate::master::controllers::nodelifecycle::LEASE_NAMESPACE;

/// Why the fake nodes stopped.
#[derive(Debug, thiserror::Error)]
pub enum FakeNodeError {
    #[error("fake nodes: registering node {node}: {source}")]
    Register { node: String, source: ApiError },
    #[error("fake nodes: {step}: {source}")]
    Pods { step: &'static str, source: ApiError },
}

/// How many fake nodes, their shape and heartbeat.
#[derive(Debug, Clone)]
pub struct FakeNodeConfig {
    pub count: usize,
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub lease_duration_seconds: i32,
    pub renew_interval: Duration,
}

impl Default for FakeNodeConfig {
    fn default() -> Self {
        FakeNodeConfig {
            count: 3,
            name_prefix: "fake-node-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
        }
    }
}

/// Every how many lease renewals the node status heartbeat is posted too.
const NODE_STATUS_EVERY: u64 = 6;

/// Name of fake node `i`.
pub fn node_name(config: &FakeNodeConfig, i: usize) -> String {
    format!("{}{i}", config.name_prefix)
}

/// InternalIP of fake node `i` (in 172.16.0.0/12).
pub fn node_ip(i: usize) -> String {
    let n = i + 1;
    format!("172.{}.{}.{}", 16 + (n >> 16) % 16, (n >> 8) & 255, n & 255)
}

/// Pod IP number `k` on node `i` (in 10.128.0.0/9, a /24 per node).
pub fn pod_ip(i: usize, k: usize) -> String {
    format!("10.{}.{}.{}", 128 + (i >> 8) % 128, i & 255, 2 + k % 252)
}

/// The Node object of fake node `i`, Ready.
pub fn fake_node(config: &FakeNodeConfig, i: usize) -> Node {
    let name = node_name(config, i);
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.clone()),
        ("memory", config.memory.clone()),
        ("pods", config.pods.to_string()),
        ("ephemeral-storage", "100Gi".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let now = now_time();
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", name.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                    ("type", "fake"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            annotations: Some([("rkube.io/fake-node".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!(
                "{}/24",
                pod_ip(i, 0).rsplit_once('.').map(|(p, _)| format!("{p}.0")).unwrap_or_default()
            )),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: node_ip(i) },
                NodeAddress { type_: "Hostname".into(), address: name.clone() },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("fake kubelet is posting ready status".into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
            }]),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                container_runtime_version: "fake://0.1.0".into(),
                kernel_version: "fake".into(),
                kubelet_version: "v1.32.0-rkube-fake".into(),
                kube_proxy_version: "v1.32.0-rkube-fake".into(),
                operating_system: "linux".into(),
                os_image: "rkube fake node".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Running + Ready status for a pod on fake node `i` with pod IP number `k`.
pub fn running_status(pod: &Pod, node_index: usize, k: usize) -> PodStatus {
    let now = now_time();
    let ip = pod_ip(node_index, k);
    let condition = |t: &str| PodCondition {
        type_: t.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    PodStatus {
        phase: Some("Running".into()),
        host_ip: Some(node_ip(node_index)),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(now.clone()),
        qos_class: Some("BestEffort".into()),
        conditions: Some(
            ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
                .into_iter()
                .map(condition)
                .collect(),
        ),
        container_statuses: Some(
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: format!("fake://{}", c.image.as_deref().unwrap_or("")),
                    container_id: Some(format!("fake://{uid}/{}", c.name)),
                    ready: true,
                    started: Some(true),
                    restart_count: 0,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning { started_at: Some(now.clone()) }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn is_running_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.is_some()
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn register<C: ClusterApi>(client: &C, config: &FakeNodeConfig, i: usize) -> Result<(), ApiError> {
    let node = fake_node(config, i);
    let name = node_name(config, i);
    let stored = match client.create(&node).await {
        Ok(n) => n,
        Err(e) if e.is_already_exists() => client.get::<Node>(None, &name).await?,
        Err(e) => return Err(e),
    };
    let mut with_status = stored;
    with_status.status = node.status;
    client.update_status(&with_status).await?;
    renew_lease(client, config, &name).await
}

async fn renew_lease<C: ClusterApi>(client: &C, config: &FakeNodeConfig, name: &str) -> Result<(), ApiError> {
    let renew = Some(MicroTime(now_time().0));
    match client.get::<Lease>(Some(LEASE_NAMESPACE), name).await {
        Ok(mut lease) => {
            lease.spec.get_or_insert_default().renew_time = renew;
            client.update(&lease).await.map(drop)
        }
        Err(e) if e.is_not_found() => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(config.lease_duration_seconds),
                    renew_time: renew,
                    ..Default::default()
                }),
            };
            client.create(&lease).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Refresh the Ready condition's heartbeat (the fallback when Leases cannot be written).
async fn post_ready_heartbeat<C: ClusterApi>(client: &C, name: &str) -> Result<(), ApiError> {
    let mut node: Node = client.get(None, name).await?;
    let now = now_time();
    let conditions = node.status.get_or_insert_default().conditions.get_or_insert_default();
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => {
            if c.status != "True" {
                c.status = "True".into();
                c.last_transition_time = Some(now.clone());
            }
            c.last_heartbeat_time = Some(now);
        }
        None => conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
            ..Default::default()
        }),
    }
    client.update_status(&node).await.map(drop)
}

/// The fake kubelet's handling of one pod event.
async fn handle_pod<C: ClusterApi>(
    client: &C,
    nodes: &HashMap<String, usize>,
    counters: &mut HashMap<usize, usize>,
    pod: Pod,
) -> Result<(), ApiError> {
    let Some(index) =
        pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| nodes.get(n)).copied()
    else {
        return Ok(());
    };
    let ns = pod.metadata.namespace.clone();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        return match client.delete::<Pod>(ns.as_deref(), &name, &DeleteParams::now()).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        };
    }
    if is_running_ready(&pod) {
        return Ok(());
    }
    let k = counters.entry(index).or_default();
    *k += 1;
    let mut updated = pod.clone();
    updated.status = Some(running_status(&pod, index, *k));
    match client.update_status(&updated).await {
        Err(e) if !(e.is_conflict() || e.is_not_found()) => Err(e),
        _ => Ok(()),
    }
}

/// Register the fake nodes, then run their kubelet and heartbeats forever.
pub async fn run<C: ClusterApi>(client: Arc<C>, config: FakeNodeConfig) -> Result<(), FakeNodeError> {
    let mut nodes = HashMap::new();
    for i in 0..config.count {
        register(&*client, &config, i)
            .await
            .map_err(|source| FakeNodeError::Register { node: node_name(&config, i), source })?;
        nodes.insert(node_name(&config, i), i);
    }
    let heartbeat = {
        let client = client.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.renew_interval);
            for round in 0u64.. {
                tick.tick().await;
                for i in 0..config.count {
                    let name = node_name(&config, i);
                    // Like the kubelet: a Lease every interval, the full node status now and then (or when
                    // Leases cannot be written).
                    let lease = renew_lease(&*client, &config, &name).await;
                    if let Err(e) = &lease {
                        tracing::debug!(node = %name, error = %e, "lease renewal failed");
                    }
                    if (lease.is_err() || round % NODE_STATUS_EVERY == NODE_STATUS_EVERY - 1)
                        && let Err(e) = post_ready_heartbeat(&*client, &name).await
                    {
                        tracing::debug!(node = %name, error = %e, "node status heartbeat failed");
                    }
                }
            }
        })
    };
    let _abort_heartbeat = AbortOnDrop(heartbeat);
    let mut counters = HashMap::new();
    loop {
        let pods = client
            .list::<Pod>(None)
            .await
            .map_err(|source| FakeNodeError::Pods { step: "listing pods", source })?;
        let mut watch = client
            .watch::<Pod>(None, &pods.resource_version)
            .await
            .map_err(|source| FakeNodeError::Pods { step: "watching pods", source })?;
        for pod in pods.items {
            if let Err(e) = handle_pod(&*client, &nodes, &mut counters, pod).await {
                tracing::debug!(error = %e, "fake kubelet pod update failed");
            }
        }
        while let Some(Ok(event)) = watch.next().await {
            let pod = match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                WatchEvent::Deleted(_) => continue,
            };
            if let Err(e) = handle_pod(&*client, &nodes, &mut counters, pod).await {
                tracing::debug!(error = %e, "fake kubelet pod update failed");
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_valid() {
        assert_eq!(node_ip(0), "172.16.0.1");
        assert_eq!(node_ip(255), "172.16.1.0");
        assert_eq!(pod_ip(0, 1), "10.128.0.3");
        assert_ne!(pod_ip(1, 1), pod_ip(0, 1));
        for ip in [node_ip(70_000), pod_ip(70_000, 300)] {
            assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
        }
        let n = fake_node(&FakeNodeConfig::default(), 2);
        assert_eq!(n.metadata.name.as_deref(), Some("fake-node-2"));
        assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.128.2.0/24"));
    }
}
