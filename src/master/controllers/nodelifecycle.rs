//! Node lifecycle: nodes whose heartbeats (Lease renewals in `kube-node-lease`, or the Ready condition's
//! heartbeat) stop for longer than the grace period become Ready=Unknown and get the `unreachable`
//! taints; pods on tainted nodes are evicted after their toleration (default 300 s, the
//! `--pod-eviction-timeout` of rkube-master). An evicted pod is deleted gracefully, but a node that
//! is not Ready cannot confirm the deletion, so once the pod's grace has passed
//! (`deletionTimestamp` is in the past) and its node is still not Ready, the controller deletes it
//! with grace 0 — what upstream's pod GC does for pods of unreachable nodes — so its ReplicaSet's
//! replacement does not wait for a node that may never come back.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::runner::{Trigger, run_loop};
use crate::master::client::{ApiError, ClusterApi, DeleteParams, memory::now_time};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Why a node lifecycle pass failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("node lifecycle: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("node lifecycle: {step} {name}: {source}")]
    Action { step: &'static str, name: String, source: ApiError },
}

/// Timing of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// Silence after which a node is Unknown (`--node-monitor-grace-period`, 40 s; upstream moved
    /// to 50 s in 1.32).
    pub grace_period: Duration,
    /// Eviction delay for pods without an explicit toleration (`default-toleration-seconds`, 300 s).
    pub eviction_timeout: Duration,
    /// How often the controller checks (`node-monitor-period`, 5 s).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// What the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Write the node's Ready condition (status).
    SetReady { node: String, condition: Box<NodeCondition> },
    /// Replace the node's taints (spec).
    SetTaints { node: String, taints: Vec<Taint> },
    /// Delete a pod from a tainted node.
    Evict { namespace: String, pod: String },
    /// Delete now (grace 0) a pod whose graceful deletion expired on a node that is not Ready.
    ForceDelete { namespace: String, pod: String, uid: String },
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Time> {
    let from_lease =
        lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref()).map(|t| Time(t.0));
    let from_status = ready_condition(node).and_then(|c| c.last_heartbeat_time.clone());
    from_lease.into_iter().chain(from_status).max_by_key(|t| t.0)
}

fn elapsed(since: &Time, now: &Time) -> Duration {
    (now.0 - since.0).to_std().unwrap_or_default()
}

fn eviction_delay(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    match tolerations.iter().find(|t| crate::master::scheduler::filters::tolerates(t, taint)) {
        Some(t) => t.toleration_seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
        None => Some(default),
    }
}

/// Decide status, taints and evictions for all nodes at `now`.
pub fn reconcile<N: Borrow<Node>, L: Borrow<Lease>, P: Borrow<Pod>>(
    nodes: &[N],
    leases: &[L],
    pods: &[P],
    config: &NodeLifecycleConfig,
    now: &Time,
) -> Vec<NodeAction> {
    let leases: HashMap<&str, &Lease> =
        leases.iter().map(Borrow::borrow).map(|l| (l.metadata.name.as_deref().unwrap_or(""), l)).collect();
    // Pods by node, built only when some node needs its pods looked at.
    let mut by_node: Option<HashMap<&str, Vec<&Pod>>> = None;
    let mut actions = Vec::new();
    for node in nodes {
        let node: &Node = node.borrow();
        let name = node.metadata.name.clone().unwrap_or_default();
        let lease = leases.get(name.as_str()).copied();
        let ready = ready_condition(node);
        let since = last_heartbeat(node, lease).or_else(|| node.metadata.creation_timestamp.clone());
        let silent = since.as_ref().is_none_or(|t| elapsed(t, now) > config.grace_period);
        let mut status = ready.map_or("Unknown", |c| c.status.as_str()).to_string();
        if silent && status != "Unknown" {
            status = "Unknown".into();
            actions.push(NodeAction::SetReady {
                node: name.clone(),
                condition: Box::new(NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusUnknown".into()),
                    message: Some("Kubelet stopped posting node status.".into()),
                    last_heartbeat_time: ready.and_then(|c| c.last_heartbeat_time.clone()),
                    last_transition_time: Some(now.clone()),
                }),
            });
        }
        let wanted_key = match status.as_str() {
            "True" => None,
            "False" => Some(TAINT_NOT_READY),
            _ => Some(TAINT_UNREACHABLE),
        };
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let mut taints: Vec<Taint> = current
            .iter()
            .filter(|t| {
                (t.key != TAINT_UNREACHABLE && t.key != TAINT_NOT_READY) || Some(t.key.as_str()) == wanted_key
            })
            .cloned()
            .collect();
        if let Some(key) = wanted_key {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                    taints.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        time_added: Some(now.clone()),
                        value: None,
                    });
                }
            }
        }
        if taints != current {
            actions.push(NodeAction::SetTaints { node: name.clone(), taints: taints.clone() });
        }
        if status == "True" && !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        let on_node: &[&Pod] = by_node
            .get_or_insert_with(|| {
                let mut m: HashMap<&str, Vec<&Pod>> = HashMap::new();
                for p in pods {
                    let p: &Pod = p.borrow();
                    if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                        m.entry(n).or_default().push(p);
                    }
                }
                m
            })
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if status != "True" {
            for pod in on_node {
                let expired = pod.metadata.deletion_timestamp.as_ref().is_some_and(|t| t.0 <= now.0);
                if expired {
                    actions.push(NodeAction::ForceDelete {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                        uid: pod.metadata.uid.clone().unwrap_or_default(),
                    });
                }
            }
        }
        for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
            let added = taint.time_added.clone().unwrap_or_else(|| now.clone());
            for pod in on_node {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if eviction_delay(pod, taint, config.eviction_timeout)
                    .is_some_and(|d| elapsed(&added, now) >= d)
                {
                    let evict = NodeAction::Evict {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                    };
                    if !actions.contains(&evict) {
                        actions.push(evict);
                    }
                }
            }
        }
    }
    actions
}

/// One pass at the current time.
pub async fn sync_all<C: ClusterApi>(
    client: &C,
    config: &NodeLifecycleConfig,
) -> Result<(), NodeLifecycleError> {
    sync_at(client, config, &now_time()).await
}

/// One pass as if the time were `now`.
pub async fn sync_at<C: ClusterApi>(
    client: &C,
    config: &NodeLifecycleConfig,
    now: &Time,
) -> Result<(), NodeLifecycleError> {
    let nodes = client
        .snapshot::<Node>()
        .await
        .map_err(|source| NodeLifecycleError::List { what: "nodes", source })?;
    let mut leases = client
        .snapshot::<Lease>()
        .await
        .map_err(|source| NodeLifecycleError::List { what: "leases", source })?;
    leases.retain(|l| l.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE));
    let pods =
        client.snapshot::<Pod>().await.map_err(|source| NodeLifecycleError::List { what: "pods", source })?;
    for action in reconcile(&nodes, &leases, &pods, config, now) {
        let (step, name, result) = match action {
            NodeAction::SetReady { node, condition } => {
                let result = async {
                    let mut n: Node = client.get(None, &node).await?;
                    let conds = n.status.get_or_insert_default().conditions.get_or_insert_default();
                    conds.retain(|c| c.type_ != "Ready");
                    conds.push(*condition);
                    client.update_status(&n).await.map(drop)
                }
                .await;
                ("marking unknown", node, result)
            }
            NodeAction::SetTaints { node, taints } => {
                let result = async {
                    let mut n: Node = client.get(None, &node).await?;
                    n.spec.get_or_insert_default().taints = (!taints.is_empty()).then_some(taints);
                    client.update(&n).await.map(drop)
                }
                .await;
                ("tainting", node, result)
            }
            NodeAction::Evict { namespace, pod } => {
                let result =
                    client.delete::<Pod>(Some(&namespace), &pod, &DeleteParams::default()).await.map(drop);
                ("evicting pod", format!("{namespace}/{pod}"), result)
            }
            NodeAction::ForceDelete { namespace, pod, uid } => {
                let params = DeleteParams { precondition_uid: Some(uid), ..DeleteParams::now() };
                let result = client.delete::<Pod>(Some(&namespace), &pod, &params).await.map(drop);
                ("force-deleting pod", format!("{namespace}/{pod}"), result)
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(source) => return Err(NodeLifecycleError::Action { step, name, source }),
        }
    }
    Ok(())
}

/// Run the node lifecycle controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>, config: NodeLifecycleConfig) {
    // Node status changes arrive every few seconds from every node: react within a second, not to each.
    let trigger = Trigger::default().paced(Duration::from_secs(1)).watch::<Node, C>(&client).await;
    let period = config.monitor_period;
    run_loop("node-lifecycle", trigger, period, || sync_all(&*client, &config)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::chrono::Duration as ChronoDuration;

    fn at(now: &Time, secs_ago: i64) -> Time {
        Time(now.0 - ChronoDuration::seconds(secs_ago))
    }

    fn node(now: &Time) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(at(now, 1000)),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_heartbeat_time: Some(at(now, 900)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn lease(now: &Time, secs_ago: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                namespace: Some(LEASE_NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec { renew_time: Some(MicroTime(at(now, secs_ago).0)), ..Default::default() }),
        }
    }

    #[test]
    fn fresh_lease_keeps_node_ready() {
        let now = now_time();
        assert!(
            reconcile::<_, _, Pod>(
                &[node(&now)],
                &[lease(&now, 5)],
                &[],
                &NodeLifecycleConfig::default(),
                &now
            )
            .is_empty()
        );
    }

    #[test]
    fn silent_node_becomes_unknown_and_tainted() {
        let now = now_time();
        let actions = reconcile::<_, _, Pod>(
            &[node(&now)],
            &[lease(&now, 60)],
            &[],
            &NodeLifecycleConfig::default(),
            &now,
        );
        assert!(
            matches!(&actions[0], NodeAction::SetReady { condition, .. } if condition.status == "Unknown")
        );
        let NodeAction::SetTaints { taints, .. } = &actions[1] else { panic!("{actions:?}") };
        assert_eq!(taints.len(), 2);
        assert!(taints.iter().all(|t| t.key == TAINT_UNREACHABLE));
    }

    #[test]
    fn pods_are_evicted_after_the_toleration() {
        let now = now_time();
        let mut n = node(&now);
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "Unknown".into();
        n.spec = Some(Default::default());
        n.spec.as_mut().unwrap().taints = Some(
            ["NoSchedule", "NoExecute"]
                .iter()
                .map(|e| Taint {
                    key: TAINT_UNREACHABLE.into(),
                    effect: e.to_string(),
                    time_added: Some(at(&now, 100)),
                    value: None,
                })
                .collect(),
        );
        let pod = |name: &str, seconds: Option<i64>| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                tolerations: seconds.map(|s| {
                    vec![Toleration {
                        key: Some(TAINT_UNREACHABLE.into()),
                        operator: Some("Exists".into()),
                        effect: Some("NoExecute".into()),
                        toleration_seconds: Some(s),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: None,
        };
        let mut pods = vec![pod("default-300", None), pod("quick", Some(30))];
        let actions =
            reconcile(&[n.clone()], &[lease(&now, 100)], &pods, &NodeLifecycleConfig::default(), &now);
        assert_eq!(actions, vec![NodeAction::Evict { namespace: "default".into(), pod: "quick".into() }]);

        // Once evicted, the grace passes without the node confirming: deleted with grace 0.
        let mut gone = pod("evicted", None);
        gone.metadata.uid = Some("u1".into());
        gone.metadata.deletion_timestamp = Some(at(&now, 1));
        let mut waiting = pod("still-in-grace", None);
        waiting.metadata.deletion_timestamp = Some(at(&now, -20));
        pods = vec![gone, waiting];
        let actions = reconcile(&[n], &[lease(&now, 100)], &pods, &NodeLifecycleConfig::default(), &now);
        assert_eq!(
            actions,
            vec![NodeAction::ForceDelete {
                namespace: "default".into(),
                pod: "evicted".into(),
                uid: "u1".into()
            }]
        );
    }
}
