//! One scheduling decision: filter nodes (stopping early like `percentageOfNodesToScore`), score the
//! feasible ones, pick the best. Pure over the cache.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{Cache, PodInfo};
use super::filters::{Rejection, run_filters};
use super::scores::score_nodes;

/// No node fits: how many nodes failed for which reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub total_nodes: usize,
    pub reasons: BTreeMap<Rejection, usize>,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available", self.total_nodes)?;
        if self.reasons.is_empty() {
            return write!(f, ".");
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        write!(f, ": {}.", parts.join(", "))
    }
}

/// How many feasible nodes to find before scoring (kube-scheduler's adaptive percentage).
pub fn nodes_to_find(total: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if total <= MIN_FEASIBLE {
        return total;
    }
    let percent = (50 - (total / 125) as i64).max(5) as usize;
    (total * percent / 100).max(MIN_FEASIBLE).min(total)
}

/// Pick a node for `pod`. `start` rotates where filtering begins (round-robin across cycles);
/// `tie` breaks equal scores. Returns the node index in `cache.nodes` and how many nodes were examined.
pub fn select_node(
    cache: &Cache,
    pod: &Pod,
    info: &PodInfo,
    start: usize,
    tie: u64,
) -> Result<(usize, usize), FitError> {
    let total = cache.nodes.len();
    let want = nodes_to_find(total);
    let mut feasible = Vec::with_capacity(want.min(1024));
    let mut reasons: BTreeMap<Rejection, usize> = BTreeMap::new();
    let mut examined = 0;
    for step in 0..total {
        let i = (start + step) % total;
        examined += 1;
        match run_filters(pod, info, &cache.nodes[i]) {
            Ok(()) => {
                feasible.push(i);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    if feasible.is_empty() {
        return Err(FitError { total_nodes: total, reasons });
    }
    if feasible.len() == 1 {
        return Ok((feasible[0], examined));
    }
    let nodes: Vec<_> = feasible.iter().map(|&i| &cache.nodes[i]).collect();
    let scores = score_nodes(pod, info, &nodes);
    let best = scores.iter().copied().max().unwrap_or(0);
    let ties: Vec<usize> =
        feasible.iter().zip(&scores).filter(|(_, s)| **s == best).map(|(i, _)| *i).collect();
    Ok((ties[(tie % ties.len() as u64) as usize], examined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, Node, NodeSpec, NodeStatus, PodSpec, ResourceRequirements, Taint,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cpu: &str, taint: bool) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec {
                taints: taint.then(|| {
                    vec![Taint { key: "gpu".into(), effect: "NoSchedule".into(), ..Default::default() }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(
                    [("cpu", cpu), ("memory", "4Gi"), ("pods", "110")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.into())))
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn pod(cpu: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn adaptive_percentage_matches_kube_scheduler() {
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(500), 230);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(100_000), 5000);
    }

    #[test]
    fn picks_the_emptiest_feasible_node_and_explains_failures() {
        let mut cache = Cache::default();
        cache.upsert_node(&node("small", "1", false));
        cache.upsert_node(&node("big", "8", false));
        cache.upsert_node(&node("tainted", "16", true));
        let p = pod("500m");
        let (i, examined) = select_node(&cache, &p, &PodInfo::new(&p), 0, 0).unwrap();
        assert_eq!(cache.nodes[i].name, "big");
        assert_eq!(examined, 3);
        let huge = pod("10");
        let err = select_node(&cache, &huge, &PodInfo::new(&huge), 1, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: }, 2 Insufficient cpu."
        );
    }
}
