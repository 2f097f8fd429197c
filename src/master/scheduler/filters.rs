//! Filter plugins: can this pod run on this node? Pure functions over [`NodeInfo`].

use std::fmt;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use super::cache::{NodeInfo, PodInfo};

/// Why a node was rejected; the Display text matches kube-scheduler's messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    Unschedulable,
    NodeNameMismatch,
    AffinityMismatch,
    UntoleratedTaint(String),
    PortsInUse,
    Insufficient(String),
    TooManyPods,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Unschedulable => write!(f, "node(s) were unschedulable"),
            Rejection::NodeNameMismatch => write!(f, "node(s) didn't match the requested node name"),
            Rejection::AffinityMismatch => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Rejection::UntoleratedTaint(t) => write!(f, "node(s) had untolerated taint {{{t}}}"),
            Rejection::PortsInUse => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Rejection::Insufficient(r) => write!(f, "Insufficient {r}"),
            Rejection::TooManyPods => write!(f, "Too many pods"),
        }
    }
}

/// Whether a toleration tolerates a taint (key, operator Equal|Exists, value, effect).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    if !key_ok {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => true,
        _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

fn pod_tolerates(pod: &Pod, taint: &Taint) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| tolerates(t, taint)))
}

/// NodeUnschedulable: `spec.unschedulable` nodes only take pods tolerating the unschedulable taint.
pub fn node_unschedulable(pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if pod_tolerates(pod, &taint) { Ok(()) } else { Err(Rejection::Unschedulable) }
}

/// NodeName: a pod naming a node only fits that node.
pub fn node_name(pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node.name => Err(Rejection::NodeNameMismatch),
        _ => Ok(()),
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    let as_int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(as_int), values.first().and_then(|x| as_int(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(as_int), values.first().and_then(|x| as_int(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Whether a node selector term (AND of its expressions and fields) matches the node. An empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&node.name)))
}

/// NodeAffinity: `spec.nodeSelector` (all labels equal) and required node affinity (OR of terms).
pub fn node_affinity(pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Err(Rejection::AffinityMismatch);
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    if let Some(req) = required
        && !req.node_selector_terms.iter().any(|t| term_matches(t, node))
    {
        return Err(Rejection::AffinityMismatch);
    }
    Ok(())
}

/// TaintToleration: every NoSchedule/NoExecute taint must be tolerated.
pub fn taint_toleration(pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
    for taint in &node.taints {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !pod_tolerates(pod, taint) {
            return Err(Rejection::UntoleratedTaint(format!(
                "{}: {}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// NodePorts: the pod's host ports must be free (a wildcard host IP conflicts with every IP).
pub fn node_ports(info: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    for (proto, ip, port) in &info.host_ports {
        let clash = node.used_ports.iter().any(|(p2, ip2, port2)| {
            port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        });
        if clash {
            return Err(Rejection::PortsInUse);
        }
    }
    Ok(())
}

/// NodeResourcesFit: requests plus what is already there must fit the allocatable, and the pod count too.
pub fn resources_fit(info: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if node.pod_count + 1 > node.allowed_pods {
        return Err(Rejection::TooManyPods);
    }
    let (req, used, alloc) = (&info.requests, &node.requested, &node.allocatable);
    if req.milli_cpu > 0 && used.milli_cpu + req.milli_cpu > alloc.milli_cpu {
        return Err(Rejection::Insufficient("cpu".into()));
    }
    if req.memory > 0 && used.memory + req.memory > alloc.memory {
        return Err(Rejection::Insufficient("memory".into()));
    }
    if req.ephemeral_storage > 0 && used.ephemeral_storage + req.ephemeral_storage > alloc.ephemeral_storage {
        return Err(Rejection::Insufficient("ephemeral-storage".into()));
    }
    for (name, amount) in &req.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        let used = used.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && used + amount > have {
            return Err(Rejection::Insufficient(name.clone()));
        }
    }
    Ok(())
}

/// Run all filters in kube-scheduler's order; the first rejection wins.
pub fn run_filters(pod: &Pod, info: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    node_unschedulable(pod, node)?;
    node_name(pod, node)?;
    taint_toleration(pod, node)?;
    node_affinity(pod, node)?;
    node_ports(info, node)?;
    resources_fit(info, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::scheduler::resources::Resources;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, PodSpec};

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: [("disk".to_string(), "ssd".to_string()), ("cores".to_string(), "8".to_string())].into(),
            allocatable: Resources { milli_cpu: 1000, memory: 1 << 30, ..Default::default() },
            allowed_pods: 2,
            ..Default::default()
        }
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod { spec: Some(spec), ..Default::default() }
    }

    fn toleration(key: &str, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn unschedulable_nodes_reject_unless_tolerated() {
        let mut n = node();
        n.unschedulable = true;
        assert_eq!(node_unschedulable(&pod(PodSpec::default()), &n), Err(Rejection::Unschedulable));
        let tolerant = pod(PodSpec {
            tolerations: Some(vec![toleration("node.kubernetes.io/unschedulable", "Exists", None, None)]),
            ..Default::default()
        });
        assert_eq!(node_unschedulable(&tolerant, &n), Ok(()));
    }

    #[test]
    fn node_name_and_selector() {
        let n = node();
        assert!(node_name(&pod(PodSpec { node_name: Some("n2".into()), ..Default::default() }), &n).is_err());
        assert!(node_name(&pod(PodSpec { node_name: Some("n1".into()), ..Default::default() }), &n).is_ok());
        let sel = |k: &str, v: &str| {
            pod(PodSpec {
                node_selector: Some([(k.to_string(), v.to_string())].into()),
                ..Default::default()
            })
        };
        assert!(node_affinity(&sel("disk", "ssd"), &n).is_ok());
        assert_eq!(node_affinity(&sel("disk", "hdd"), &n), Err(Rejection::AffinityMismatch));
    }

    #[test]
    fn required_affinity_terms_are_ored_and_expressions_anded() {
        let n = node();
        let req = |op: &str, key: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let with_terms = |terms: Vec<NodeSelectorTerm>| {
            pod(PodSpec {
                affinity: Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: terms,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let term = |reqs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(reqs),
            ..Default::default()
        };
        assert!(
            node_affinity(
                &with_terms(vec![term(vec![req("In", "disk", &["ssd"]), req("Gt", "cores", &["4"])])]),
                &n
            )
            .is_ok()
        );
        assert!(
            node_affinity(
                &with_terms(vec![term(vec![req("In", "disk", &["ssd"]), req("Lt", "cores", &["4"])])]),
                &n
            )
            .is_err()
        );
        assert!(
            node_affinity(
                &with_terms(vec![
                    term(vec![req("NotIn", "disk", &["ssd"])]),
                    term(vec![req("DoesNotExist", "gpu", &[])])
                ]),
                &n
            )
            .is_ok()
        );
        let by_name = NodeSelectorTerm {
            match_fields: Some(vec![req("In", "metadata.name", &["n1"])]),
            ..Default::default()
        };
        assert!(node_affinity(&with_terms(vec![by_name]), &n).is_ok());
        assert!(node_affinity(&with_terms(vec![NodeSelectorTerm::default()]), &n).is_err());
    }

    #[test]
    fn taints_need_matching_tolerations() {
        let mut n = node();
        n.taints = vec![
            Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
            Taint { key: "soft".into(), effect: "PreferNoSchedule".into(), ..Default::default() },
        ];
        let err = taint_toleration(&pod(PodSpec::default()), &n).unwrap_err();
        assert_eq!(err.to_string(), "node(s) had untolerated taint {dedicated: db}");
        let with = |t: Toleration| pod(PodSpec { tolerations: Some(vec![t]), ..Default::default() });
        assert!(
            taint_toleration(&with(toleration("dedicated", "Equal", Some("db"), Some("NoSchedule"))), &n)
                .is_ok()
        );
        assert!(taint_toleration(&with(toleration("dedicated", "Equal", Some("web"), None)), &n).is_err());
        assert!(taint_toleration(&with(toleration("dedicated", "Exists", None, None)), &n).is_ok());
        assert!(taint_toleration(&with(toleration("", "Exists", None, None)), &n).is_ok());
        assert!(
            taint_toleration(&with(toleration("dedicated", "Exists", None, Some("NoExecute"))), &n).is_err()
        );
    }

    #[test]
    fn host_ports_conflict_on_same_protocol_and_overlapping_ip() {
        let mut n = node();
        n.used_ports.insert(("TCP".into(), "0.0.0.0".into(), 8080));
        let info = |proto: &str, ip: &str, port| PodInfo {
            host_ports: vec![(proto.into(), ip.into(), port)],
            ..Default::default()
        };
        assert_eq!(node_ports(&info("TCP", "10.0.0.1", 8080), &n), Err(Rejection::PortsInUse));
        assert!(node_ports(&info("UDP", "0.0.0.0", 8080), &n).is_ok());
        assert!(node_ports(&info("TCP", "0.0.0.0", 8081), &n).is_ok());
    }

    #[test]
    fn resources_must_fit_including_pod_count() {
        let mut n = node();
        let want = |cpu, mem| PodInfo {
            requests: Resources { milli_cpu: cpu, memory: mem, ..Default::default() },
            ..Default::default()
        };
        assert!(resources_fit(&want(1000, 1 << 30), &n).is_ok());
        assert_eq!(resources_fit(&want(1001, 0), &n).unwrap_err().to_string(), "Insufficient cpu");
        assert_eq!(
            resources_fit(&want(0, (1 << 30) + 1), &n).unwrap_err().to_string(),
            "Insufficient memory"
        );
        let mut gpu = want(0, 0);
        gpu.requests.scalar.insert("example.com/gpu".into(), 1);
        assert_eq!(resources_fit(&gpu, &n).unwrap_err().to_string(), "Insufficient example.com/gpu");
        n.pod_count = 2;
        assert_eq!(resources_fit(&want(0, 0), &n), Err(Rejection::TooManyPods));
    }
}
