//! Scheduler throughput benchmark (scheduler_perf `SchedulingBasic`-like): N fake nodes, M pods created
//! through the API, timed until every pod is bound. Used by `hack/bench-scheduler.sh`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{SchedulerConfig, SchedulerMetrics, run};
use crate::master::client::{ApiError, ClusterApi, memory::MemoryCluster};

/// Why the benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark setup: creating {what} failed: {source}")]
    Setup { what: String, source: ApiError },
    #[error("benchmark: only {bound} of {pods} pods were bound within {secs} s")]
    Timeout { bound: u64, pods: usize, secs: u64 },
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub nodes: usize,
    pub pods: usize,
    pub elapsed: Duration,
    pub pods_per_second: f64,
    pub avg_nodes_examined: f64,
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

/// A fake node like scheduler_perf's node template: 4 CPU, 32Gi, 110 pods.
pub fn bench_node(i: usize) -> Node {
    let capacity = quantities(&[("cpu", "4"), ("memory", "32Gi"), ("pods", "110")]);
    Node {
        metadata: ObjectMeta {
            name: Some(format!("bench-node-{i}")),
            labels: Some([("kubernetes.io/hostname".to_string(), format!("bench-node-{i}"))].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            ..Default::default()
        }),
    }
}

/// A pod like scheduler_perf's default pod template: requests 100m CPU, 500Mi memory.
pub fn bench_pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("bench-pod-{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "pause".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "100m"), ("memory", "500Mi")])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Register `nodes` nodes, then create `pods` pods and time the scheduler until all are bound.
pub async fn run_bench(nodes: usize, pods: usize, timeout: Duration) -> Result<BenchReport, BenchError> {
    let cluster = Arc::new(MemoryCluster::new());
    for i in 0..nodes {
        cluster
            .create(&bench_node(i))
            .await
            .map_err(|source| BenchError::Setup { what: format!("node {i}"), source })?;
    }
    let metrics = Arc::new(SchedulerMetrics::default());
    let scheduler = tokio::spawn(run(cluster.clone(), SchedulerConfig::default(), metrics.clone()));
    let started = Instant::now();
    let creator = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in 0..pods {
                cluster.create(&bench_pod(i)).await?;
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), ApiError>(())
        })
    };
    let deadline = started + timeout;
    while metrics.bound.load(Ordering::Relaxed) < pods as u64 {
        if Instant::now() > deadline {
            scheduler.abort();
            creator.abort();
            return Err(BenchError::Timeout {
                bound: metrics.bound.load(Ordering::Relaxed),
                pods,
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    scheduler.abort();
    if let Ok(Err(source)) = creator.await {
        return Err(BenchError::Setup { what: "pods".into(), source });
    }
    Ok(BenchReport {
        nodes,
        pods,
        elapsed,
        pods_per_second: pods as f64 / elapsed.as_secs_f64(),
        avg_nodes_examined: metrics.nodes_examined.load(Ordering::Relaxed) as f64 / pods.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bench_binds_every_pod() {
        let report = run_bench(20, 200, Duration::from_secs(30)).await.unwrap();
        assert_eq!(report.pods, 200);
        assert!(report.pods_per_second > 0.0);
    }
}
