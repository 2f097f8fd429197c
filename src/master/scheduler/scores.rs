//! Score plugins: how good is a feasible node? Each plugin gives 0..=100 per node; the total is a weighted sum.

use k8s_openapi::api::core::v1::Pod;

use super::cache::{NodeInfo, PodInfo};
use super::filters::{term_matches, tolerates};

/// Highest score a plugin gives.
pub const MAX_SCORE: i64 = 100;

/// Plugin weights, as in kube-scheduler's default profile.
pub const WEIGHT_TAINT: i64 = 3;
pub const WEIGHT_AFFINITY: i64 = 2;
pub const WEIGHT_SPREAD: i64 = 2;
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
pub const WEIGHT_BALANCED: i64 = 1;

fn free_fraction_score(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested) * MAX_SCORE / allocatable
}

/// LeastAllocated: mean over cpu and memory of the free share after placing the pod (non-zero requests).
pub fn least_allocated(info: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = free_fraction_score(node.nonzero_requested.0 + info.nonzero.0, node.allocatable.milli_cpu);
    let mem = free_fraction_score(node.nonzero_requested.1 + info.nonzero.1, node.allocatable.memory);
    (cpu + mem) / 2
}

/// BalancedAllocation: `(1 - |f_cpu - f_mem| / 2) * 100` with the pod placed, fractions capped at 1.
pub fn balanced_allocation(info: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction = |req: i64, alloc: i64| if alloc <= 0 { 1.0 } else { (req as f64 / alloc as f64).min(1.0) };
    let f_cpu = fraction(node.nonzero_requested.0 + info.nonzero.0, node.allocatable.milli_cpu);
    let f_mem = fraction(node.nonzero_requested.1 + info.nonzero.1, node.allocatable.memory);
    ((1.0 - (f_cpu - f_mem).abs() / 2.0) * MAX_SCORE as f64) as i64
}

/// Raw TaintToleration: number of PreferNoSchedule taints the pod does not tolerate (fewer is better).
pub fn intolerable_prefer_taints(pod: &Pod, node: &NodeInfo) -> i64 {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// Raw NodeAffinity: sum of weights of matching preferred terms.
pub fn preferred_affinity(pod: &Pod, node: &NodeInfo) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|terms| {
            terms.iter().filter(|t| term_matches(&t.preference, node)).map(|t| i64::from(t.weight)).sum()
        })
        .unwrap_or(0)
}

/// Raw spreading: pods of the same controller already on the node (fewer is better).
pub fn same_owner_pods(info: &PodInfo, node: &NodeInfo) -> i64 {
    info.owner_uid.as_ref().and_then(|uid| node.owner_counts.get(uid)).map_or(0, |c| i64::from(*c))
}

/// Scale raw values to 0..=100 by the maximum; `reverse` makes smaller raw values score higher.
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for v in raw.iter_mut() {
        *v = match (max, reverse) {
            (0, true) => MAX_SCORE,
            (0, false) => 0,
            (m, false) => *v * MAX_SCORE / m,
            (m, true) => MAX_SCORE - *v * MAX_SCORE / m,
        };
    }
}

/// Weighted total score for each feasible node (same order as `nodes`).
pub fn score_nodes(pod: &Pod, info: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut taint: Vec<i64> = nodes.iter().map(|n| intolerable_prefer_taints(pod, n)).collect();
    let mut affinity: Vec<i64> = nodes.iter().map(|n| preferred_affinity(pod, n)).collect();
    let mut spread: Vec<i64> = nodes.iter().map(|n| same_owner_pods(info, n)).collect();
    normalize(&mut taint, true);
    normalize(&mut affinity, false);
    normalize(&mut spread, true);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            WEIGHT_TAINT * taint[i]
                + WEIGHT_AFFINITY * affinity[i]
                + WEIGHT_SPREAD * spread[i]
                + WEIGHT_LEAST_ALLOCATED * least_allocated(info, n)
                + WEIGHT_BALANCED * balanced_allocation(info, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::scheduler::resources::Resources;
    use k8s_openapi::api::core::v1::{PodSpec, Taint};

    fn node(cpu_used: i64, mem_used: i64) -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            allocatable: Resources { milli_cpu: 4000, memory: 4000, ..Default::default() },
            nonzero_requested: (cpu_used, mem_used),
            ..Default::default()
        }
    }

    #[test]
    fn least_allocated_prefers_empty_nodes() {
        let info = PodInfo { nonzero: (1000, 1000), ..Default::default() };
        assert_eq!(least_allocated(&info, &node(0, 0)), 75);
        assert_eq!(least_allocated(&info, &node(2000, 2000)), 25);
        assert_eq!(least_allocated(&info, &node(4000, 0)), 37);
    }

    #[test]
    fn balanced_allocation_prefers_even_usage() {
        let info = PodInfo { nonzero: (1000, 1000), ..Default::default() };
        assert_eq!(balanced_allocation(&info, &node(0, 0)), 100);
        assert_eq!(balanced_allocation(&info, &node(2000, 0)), 75);
    }

    #[test]
    fn normalization_and_spreading() {
        let mut raw = vec![0, 2, 4];
        normalize(&mut raw, true);
        assert_eq!(raw, vec![100, 50, 0]);
        let mut zeros = vec![0, 0];
        normalize(&mut zeros, true);
        assert_eq!(zeros, vec![100, 100]);
        let info = PodInfo { owner_uid: Some("rs".into()), ..Default::default() };
        let mut crowded = node(0, 0);
        crowded.owner_counts.insert("rs".into(), 3);
        let empty = node(0, 0);
        let pod = Pod::default();
        let scores = score_nodes(&pod, &info, &[&crowded, &empty]);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let mut tainted = node(0, 0);
        tainted.taints.push(Taint {
            key: "k".into(),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        });
        let pod = Pod { spec: Some(PodSpec::default()), ..Default::default() };
        assert_eq!(intolerable_prefer_taints(&pod, &tainted), 1);
        let scores = score_nodes(&pod, &PodInfo::default(), &[&tainted, &node(0, 0)]);
        assert!(scores[1] > scores[0]);
    }
}
