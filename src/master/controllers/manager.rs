//! Starts the scheduler and every controller as tasks over one [`ClusterApi`]; dropping the handle stops them.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::nodeipam::NodeIpamConfig;
use super::nodelifecycle::NodeLifecycleConfig;
use crate::master::client::ClusterApi;
use crate::master::client::cached::CachedCluster;
use crate::master::fakenodes::{self, FakeNodeConfig};
use crate::master::scheduler::{self, SchedulerConfig, SchedulerMetrics};

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ManagerConfig {
    pub scheduler: SchedulerConfig,
    pub node_lifecycle: NodeLifecycleConfig,
    /// Pod CIDR allocation for Nodes (`None`: off).
    pub node_ipam: Option<NodeIpamConfig>,
    /// Fake nodes to run in process (`None`: none).
    pub fake_nodes: Option<FakeNodeConfig>,
    /// Whether LoadBalancer addresses come from `--lb-pool` (else: the nodes' addresses).
    pub lb_pool: bool,
    /// The cluster DNS Service's address (`kube-system/kube-dns`, answered by every node; `None`: no
    /// cluster DNS Service).
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace (`None`: not published).
    pub root_ca: Option<String>,
}

/// The running loops; aborted on drop.
pub struct ControlPlane {
    tasks: Vec<JoinHandle<()>>,
    pub scheduler_metrics: Arc<SchedulerMetrics>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Spawn the scheduler, ReplicaSet, Deployment, GC, Endpoints, EndpointSlice and node lifecycle loops (and node IPAM
/// and fake nodes when configured). They share one cache of every kind they read ([`CachedCluster`]).
pub fn spawn_all<C: ClusterApi>(client: Arc<C>, config: ManagerConfig) -> ControlPlane {
    let client = Arc::new(CachedCluster::new(client));
    let metrics = Arc::new(SchedulerMetrics::default());
    let mut tasks = vec![
        tokio::spawn({
            let (client, cfg, metrics) = (client.clone(), config.scheduler.clone(), metrics.clone());
            async move {
                if let Err(e) = scheduler::run(client, cfg, metrics).await {
                    tracing::error!(error = %e, "scheduler stopped");
                }
            }
        }),
        tokio::spawn(super::replicaset::run(client.clone())),
        tokio::spawn(super::deployment::run(client.clone())),
        tokio::spawn(super::gc::run(client.clone())),
        tokio::spawn(super::endpoints::run(client.clone())),
        tokio::spawn(super::endpointslice::run(client.clone())),
        tokio::spawn(super::servicelb::run(client.clone(), config.lb_pool)),
        tokio::spawn(super::nodelifecycle::run(client.clone(), config.node_lifecycle.clone())),
        tokio::spawn(super::serviceaccounts::run(client.clone(), config.root_ca.clone())),
    ];
    if let Some(ip) = config.cluster_dns {
        tasks.push(tokio::spawn(super::clusterdns::run(client.clone(), ip)));
    }
    if let Some(ipam) = config.node_ipam {
        tasks.push(tokio::spawn(super::nodeipam::run(client.clone(), ipam)));
    }
    if let Some(fake) = config.fake_nodes {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = fakenodes::run(client, fake).await {
                tracing::error!(error = %e, "fake nodes stopped");
            }
        }));
    }
    ControlPlane { tasks, scheduler_metrics: metrics }
}
