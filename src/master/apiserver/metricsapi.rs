//! `metrics.k8s.io/v1beta1` (what metrics-server serves, so `kubectl top` works): NodeMetrics and
//! PodMetrics made from each node's `/stats/summary` (the kubelet Summary API subset rkubelet
//! serves: CPU as a rate the node measured, memory working set), fetched over the same mutual
//! TLS as pods' logs when a request comes in. Nodes that cannot be reached are left out.

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::registry::Selectors;
use super::status::ApiStatus;
use super::{ApiServer, Q, json_response, proxy, resources, selectors};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The kubelet path the summary is read from.
pub const SUMMARY_PATH: &str = "/stats/summary";
/// Largest summary read from a node.
const SUMMARY_LIMIT: usize = 8 * 1024 * 1024;

/// Whether `group/version/resource` is one of ours.
pub fn served(group: &str, version: &str, resource: &str) -> bool {
    group == GROUP && version == VERSION && matches!(resource, "nodes" | "pods")
}

/// CPU figures of the Summary API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub usage_nano_cores: Option<u64>,
}

/// Memory figures of the Summary API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    #[serde(default)]
    pub working_set_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

/// A node's `/stats/summary` (the fields used here). `windowSeconds` is rkubelet's: the interval
/// its CPU rates were measured over.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
    #[serde(default)]
    pub window_seconds: Option<f64>,
}

/// `125m`-style CPU and `53920Ki`-style memory quantities, as metrics-server writes them.
pub fn usage(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<Value> {
    let nano = cpu?.usage_nano_cores?;
    let bytes = memory?.working_set_bytes?;
    Some(json!({"cpu": format!("{}n", nano), "memory": format!("{}Ki", bytes / 1024)}))
}

fn window(s: &Summary) -> String {
    format!("{}s", s.window_seconds.unwrap_or(1.0).max(0.001))
}

/// The NodeMetrics of a summary (`None` when it lacks CPU or memory, as metrics-server drops it).
pub fn node_metrics(s: &Summary, labels: &Value) -> Option<Value> {
    let usage = usage(s.node.cpu.as_ref(), s.node.memory.as_ref())?;
    let time = s.node.cpu.as_ref().map(|c| c.time.clone()).unwrap_or_default();
    Some(json!({"metadata": {"name": s.node.node_name, "creationTimestamp": time, "labels": labels},
        "timestamp": time, "window": window(s), "usage": usage}))
}

/// The PodMetrics of one pod of a summary (`None` when a container lacks figures).
pub fn pod_metrics(s: &Summary, p: &PodStats, labels: &Value) -> Option<Value> {
    let mut containers = Vec::new();
    for c in &p.containers {
        containers.push(json!({"name": c.name, "usage": usage(c.cpu.as_ref(), c.memory.as_ref())?}));
    }
    let time = p.containers.iter().find_map(|c| c.cpu.as_ref()).map(|c| c.time.clone()).unwrap_or_default();
    Some(json!({"metadata": {"name": p.pod_ref.name, "namespace": p.pod_ref.namespace,
        "creationTimestamp": time, "labels": labels},
        "timestamp": time, "window": window(s), "containers": containers}))
}

/// Reads one node's summary (`None`: unreachable or unreadable, logged).
async fn summary(app: &ApiServer, node: &Value) -> Option<Summary> {
    let tls = app.kubelet_tls.clone()?;
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let addr = proxy::kubelet_address(node)?;
    let uri = SUMMARY_PATH.parse().ok()?;
    let resp = match proxy::send(tls, addr, Method::GET, uri, HeaderMap::new()).await {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => {
            tracing::debug!(node = name, status = %r.status(), "stats summary refused");
            return None;
        }
        Err(e) => {
            tracing::debug!(node = name, error = %e, "stats summary unreachable");
            return None;
        }
    };
    let body = axum::body::to_bytes(Body::new(resp.into_body()), SUMMARY_LIMIT).await.ok()?;
    match serde_json::from_slice::<Summary>(&body) {
        Ok(mut s) => {
            if s.node.node_name.is_empty() {
                s.node.node_name = name.to_string();
            }
            Some(s)
        }
        Err(e) => {
            tracing::debug!(node = name, error = %e, "stats summary undecodable");
            None
        }
    }
}

async fn summaries(app: &ApiServer, nodes: &[Value]) -> Vec<(Value, Summary)> {
    let reads = nodes.iter().map(|n| async move { summary(app, n).await.map(|s| (n.clone(), s)) });
    futures_util::future::join_all(reads).await.into_iter().flatten().collect()
}

fn labels_of(obj: &Value) -> Value {
    obj.pointer("/metadata/labels").cloned().unwrap_or(json!({}))
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {}, "items": items.into_iter().map(|i| with_kind(kind, i)).collect::<Vec<_>>()}),
    )
}

fn with_kind(kind: &str, mut v: Value) -> Value {
    v["kind"] = json!(kind);
    v["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    v
}

fn not_found(resource: &str, name: &str) -> ApiStatus {
    let mut s = ApiStatus::internal("");
    s.code = 404;
    s.reason = "NotFound";
    s.message = format!("{resource}.{GROUP} \"{name}\" not found");
    s.details = Some(json!({"name": name, "group": GROUP, "kind": resource}));
    s
}

/// `GET /apis/metrics.k8s.io/v1beta1/<rest>`.
pub async fn handle(app: &ApiServer, rest: &[&str], q: &Q) -> Result<Response, ApiStatus> {
    let nodes_r = resources::find("", "v1", "nodes").expect("nodes are served");
    let pods_r = resources::find("", "v1", "pods").expect("pods are served");
    let sel = selectors(q)?;
    match rest {
        [] => Ok(json_response(StatusCode::OK, &resource_list())),
        ["nodes", name @ ..] if name.len() <= 1 => {
            let (nodes, _) = app.registry.list(nodes_r, None, &sel).await?;
            let nodes: Vec<Value> = match name.first() {
                Some(n) => nodes
                    .into_iter()
                    .filter(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n))
                    .collect(),
                None => nodes,
            };
            let items: Vec<Value> = summaries(app, &nodes)
                .await
                .iter()
                .filter_map(|(node, s)| node_metrics(s, &labels_of(node)))
                .collect();
            match name.first() {
                Some(n) => items
                    .into_iter()
                    .next()
                    .map(|i| json_response(StatusCode::OK, &with_kind("NodeMetrics", i)))
                    .ok_or_else(|| not_found("nodes", n)),
                None => Ok(list("NodeMetrics", items)),
            }
        }
        ["pods"] => pods(app, pods_r, nodes_r, None, None, &sel).await,
        ["namespaces", ns, "pods", name @ ..] if name.len() <= 1 => {
            pods(app, pods_r, nodes_r, Some(ns), name.first().copied(), &sel).await
        }
        _ => Err(ApiStatus::no_route()),
    }
}

async fn pods(
    app: &ApiServer,
    pods_r: &'static resources::ResourceInfo,
    nodes_r: &'static resources::ResourceInfo,
    ns: Option<&str>,
    name: Option<&str>,
    sel: &Selectors,
) -> Result<Response, ApiStatus> {
    let (pods, _) = app.registry.list(pods_r, ns, sel).await?;
    let pods: Vec<Value> = pods
        .into_iter()
        .filter(|p| name.is_none() || p.pointer("/metadata/name").and_then(Value::as_str) == name)
        .collect();
    let on_nodes: HashSet<&str> =
        pods.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    let (nodes, _) = app.registry.list(nodes_r, None, &Selectors::default()).await?;
    let nodes: Vec<Value> = nodes
        .into_iter()
        .filter(|n| n.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| on_nodes.contains(n)))
        .collect();
    let found = summaries(app, &nodes).await;
    let mut items = Vec::new();
    for pod in &pods {
        let (pns, pname) = (
            pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(""),
            pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
        );
        let m = found.iter().find_map(|(_, s)| {
            let p = s.pods.iter().find(|p| p.pod_ref.namespace == pns && p.pod_ref.name == pname)?;
            pod_metrics(s, p, &labels_of(pod))
        });
        items.extend(m);
    }
    match name {
        Some(n) => items
            .into_iter()
            .next()
            .map(|i| json_response(StatusCode::OK, &with_kind("PodMetrics", i)))
            .ok_or_else(|| not_found("pods", n)),
        None => Ok(list("PodMetrics", items)),
    }
}

/// `GET /apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
    "resources": [
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}
    ]})
}

/// The group's entry in aggregated discovery.
pub fn aggregated_group() -> Value {
    let res = |plural: &str, kind: &str, scope: &str| {
        json!({"resource": plural, "responseKind": {"group": "", "version": "", "kind": kind},
            "scope": scope, "singularResource": "", "verbs": ["get", "list"]})
    };
    json!({"metadata": {"name": GROUP}, "versions": [{"version": VERSION, "freshness": "Current",
        "resources": [res("nodes", "NodeMetrics", "Cluster"), res("pods", "PodMetrics", "Namespaced")]}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_summary() {
        let s: Summary = serde_json::from_value(json!({
            "node": {"nodeName": "n1", "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 125_000_000u64},
                "memory": {"workingSetBytes": 55_214_080u64}},
            "pods": [{"podRef": {"name": "p", "namespace": "default", "uid": "u"},
                "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 1000},
                    "memory": {"workingSetBytes": 4096}}]},
                {"podRef": {"name": "q", "namespace": "default"}, "containers": [{"name": "c"}]}],
            "windowSeconds": 2.5
        }))
        .unwrap();
        let n = node_metrics(&s, &json!({"a": "b"})).unwrap();
        assert_eq!(n["usage"], json!({"cpu": "125000000n", "memory": "53920Ki"}));
        assert_eq!(n["window"], "2.5s");
        assert_eq!(n["metadata"]["name"], "n1");
        let p = pod_metrics(&s, &s.pods[0], &json!({})).unwrap();
        assert_eq!(p["containers"][0], json!({"name": "c", "usage": {"cpu": "1000n", "memory": "4Ki"}}));
        assert!(pod_metrics(&s, &s.pods[1], &json!({})).is_none());
        assert!(served(GROUP, VERSION, "pods") && !served(GROUP, VERSION, "services"));
    }
}
