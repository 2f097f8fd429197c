//! The cluster DNS Service. Every joined node answers DNS for its own pods (`crate::dns`); this
//! controller publishes them as the `kube-system/kube-dns` Service that pods' resolv.conf names: a
//! fixed ClusterIP (the Service CIDR's tenth address, as kubeadm reserves it), no selector,
//! `internalTrafficPolicy: Local`, and one endpoint per Ready node, its InternalIP on port 53
//! (EndpointSlices of at most 100 endpoints, and Endpoints for kubectl). Each node's Service rules
//! then send a pod's queries to its own node. The Service is created when missing and otherwise
//! left as the user keeps it; the endpoints follow the nodes.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, Node, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::endpointslice::MANAGED_BY_LABEL;
use super::runner::{Trigger, run_loop};
use crate::api::nodes::{internal_ips, serves};
use crate::master::client::{ApiError, ClusterApi, DeleteParams};

/// The Service's namespace and name, as kubeadm and k3s name it.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";
/// This controller's value of the EndpointSlice managed-by label.
pub const MANAGED_BY: &str = "rkube-cluster-dns";
/// Endpoints per EndpointSlice (the EndpointSlice controller's default).
const PER_SLICE: usize = 100;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDnsError {
    #[error("cluster-dns controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("cluster-dns controller: writing {what}: {source}")]
    Write { what: String, source: ApiError },
}

/// The DNS Service's ClusterIP for a Service CIDR: its tenth address (`10.96.0.10`).
pub fn default_address(service_cidr: ipnet::Ipv4Net) -> Option<Ipv4Addr> {
    service_cidr.hosts().nth(9)
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(
            [
                ("k8s-app", "kube-dns"),
                ("kubernetes.io/cluster-service", "true"),
                ("kubernetes.io/name", "rkube-dns"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..Default::default()
    }
}

/// (port name, protocol) of the Service's two ports, both 53.
const PORTS: [(&str, &str); 2] = [("dns", "UDP"), ("dns-tcp", "TCP")];

/// The Service this controller creates when it is missing.
pub fn service(ip: Ipv4Addr) -> Service {
    Service {
        metadata: meta(NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.to_string()),
            internal_traffic_policy: Some("Local".into()),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, proto)| ServicePort {
                        name: Some(name.to_string()),
                        protocol: Some(proto.to_string()),
                        port: 53,
                        target_port: Some(IntOrString::Int(53)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// (name, InternalIP) of every Ready node that is not being deleted, by name (pure).
pub fn ready_nodes<N: Borrow<Node>>(nodes: &[N]) -> Vec<(String, String)> {
    let mut out = BTreeMap::new();
    for n in nodes.iter().map(|n| n.borrow()).filter(|n| serves(n)) {
        if let (Some(ip), Some(name)) = (internal_ips(n).next(), n.metadata.name.as_ref()) {
            out.insert(name.clone(), ip.to_string());
        }
    }
    out.into_iter().collect()
}

/// The EndpointSlices the Service should have (pure): `kube-dns-nodes-<i>`, at least one.
pub fn desired_slices(nodes: &[(String, String)]) -> Vec<EndpointSlice> {
    let chunks: Vec<&[(String, String)]> =
        if nodes.is_empty() { vec![&[]] } else { nodes.chunks(PER_SLICE).collect() };
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut m = meta(&format!("{NAME}-nodes-{i}"));
            let labels = m.labels.get_or_insert_default();
            labels.insert(SERVICE_NAME_LABEL.into(), NAME.into());
            labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
            EndpointSlice {
                metadata: m,
                address_type: "IPv4".into(),
                endpoints: chunk
                    .iter()
                    .map(|(node, ip)| Endpoint {
                        addresses: vec![ip.clone()],
                        node_name: Some(node.clone()),
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ports: Some(
                    PORTS
                        .iter()
                        .map(|(name, proto)| EndpointPort {
                            name: Some(name.to_string()),
                            protocol: Some(proto.to_string()),
                            port: Some(53),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// The Endpoints object kubectl shows for the Service (pure).
pub fn desired_endpoints(nodes: &[(String, String)]) -> Endpoints {
    let subsets = (!nodes.is_empty()).then(|| {
        vec![EndpointSubset {
            addresses: Some(
                nodes
                    .iter()
                    .map(|(node, ip)| EndpointAddress {
                        ip: ip.clone(),
                        node_name: Some(node.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, proto)| CoreEndpointPort {
                        name: Some(name.to_string()),
                        protocol: Some(proto.to_string()),
                        port: 53,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }]
    });
    let mut m = meta(NAME);
    m.labels.get_or_insert_default().insert("endpointslice.kubernetes.io/skip-mirror".into(), "true".into());
    Endpoints { metadata: m, subsets }
}

fn is_ours(s: &EndpointSlice) -> bool {
    s.metadata.namespace.as_deref() == Some(NAMESPACE)
        && s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str)
            == Some(MANAGED_BY)
}

fn write_err(what: String) -> impl FnOnce(ApiError) -> ClusterDnsError {
    move |source| ClusterDnsError::Write { what, source }
}

/// Creates the Service when it is missing (the master calls it before it serves, so joining nodes
/// find it).
pub async fn ensure_service<C: ClusterApi>(client: &C, ip: Ipv4Addr) -> Result<(), ClusterDnsError> {
    match client.get::<Service>(Some(NAMESPACE), NAME).await {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => {}
        Err(source) => return Err(ClusterDnsError::List { what: "services", source }),
    }
    match client.create(&service(ip)).await {
        Ok(_) => {
            tracing::info!("created the {NAMESPACE}/{NAME} Service at {ip}");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(write_err(format!("service {NAMESPACE}/{NAME}"))(e)),
    }
}

/// One pass: the Service when missing, then its endpoints from the nodes.
pub async fn sync<C: ClusterApi>(client: &C, ip: Ipv4Addr) -> Result<(), ClusterDnsError> {
    let list = |what| move |source| ClusterDnsError::List { what, source };
    ensure_service(client, ip).await?;
    let nodes = ready_nodes(&client.snapshot::<Node>().await.map_err(list("nodes"))?);
    let mut have: Vec<Arc<EndpointSlice>> = client
        .snapshot::<EndpointSlice>()
        .await
        .map_err(list("endpointslices"))?
        .into_iter()
        .filter(|s| is_ours(s))
        .collect();
    have.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let want = desired_slices(&nodes);
    for w in &want {
        let name = w.metadata.name.clone().unwrap_or_default();
        let what = || format!("endpointslice {NAMESPACE}/{name}");
        match have.iter().find(|h| h.metadata.name == w.metadata.name) {
            None => {
                client.create(w).await.map_err(write_err(what()))?;
            }
            Some(h)
                if h.endpoints == w.endpoints
                    && h.ports == w.ports
                    && h.metadata.labels == w.metadata.labels => {}
            Some(h) => {
                let mut updated = (**h).clone();
                updated.endpoints = w.endpoints.clone();
                updated.ports = w.ports.clone();
                updated.metadata.labels = w.metadata.labels.clone();
                match client.update(&updated).await {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => return Err(write_err(what())(e)),
                }
            }
        }
    }
    for extra in have.iter().filter(|h| !want.iter().any(|w| w.metadata.name == h.metadata.name)) {
        let name = extra.metadata.name.clone().unwrap_or_default();
        match client.delete::<EndpointSlice>(Some(NAMESPACE), &name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(write_err(format!("endpointslice {NAMESPACE}/{name}"))(e)),
        }
    }
    let endpoints = desired_endpoints(&nodes);
    match client.get::<Endpoints>(Some(NAMESPACE), NAME).await {
        Ok(h) if h.subsets == endpoints.subsets => {}
        Ok(mut h) => {
            h.subsets = endpoints.subsets;
            match client.update(&h).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(write_err(format!("endpoints {NAMESPACE}/{NAME}"))(e)),
            }
        }
        Err(e) if e.is_not_found() => {
            client.create(&endpoints).await.map_err(write_err(format!("endpoints {NAMESPACE}/{NAME}")))?;
        }
        Err(e) => return Err(ClusterDnsError::List { what: "endpoints", source: e }),
    }
    Ok(())
}

/// Runs the controller forever for the DNS address `ip`.
pub async fn run<C: ClusterApi>(client: Arc<C>, ip: Ipv4Addr) {
    let trigger = Trigger::default()
        .paced(Duration::from_millis(200))
        .watch::<Node, C>(&client)
        .await
        .watch::<Service, C>(&client)
        .await
        .watch::<EndpointSlice, C>(&client)
        .await;
    run_loop("cluster-dns", trigger, Duration::from_secs(30), || sync(&*client, ip)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus};

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: ip.into() }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "Unknown" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_ready_node_is_an_endpoint_on_its_own_node() {
        let nodes = ready_nodes(&[
            node("b", "10.0.0.2", true),
            node("a", "10.0.0.1", true),
            node("c", "10.0.0.3", false),
        ]);
        assert_eq!(nodes, [("a".to_string(), "10.0.0.1".to_string()), ("b".into(), "10.0.0.2".into())]);
        let slices = desired_slices(&nodes);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.metadata.name.as_deref(), Some("kube-dns-nodes-0"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL], "kube-dns");
        assert_eq!(s.endpoints[1].node_name.as_deref(), Some("b"));
        assert_eq!(s.endpoints[1].addresses, ["10.0.0.2"]);
        assert_eq!(s.ports.as_ref().unwrap().len(), 2);
        // Many nodes: slices of 100; none: one empty slice.
        let many: Vec<(String, String)> =
            (0..250).map(|i| (format!("n{i:03}"), format!("10.0.{}.{}", i / 200, i % 200))).collect();
        assert_eq!(
            desired_slices(&many).iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(desired_slices(&[])[0].endpoints.len(), 0);
        assert!(desired_endpoints(&[]).subsets.is_none());
        assert_eq!(desired_endpoints(&nodes).subsets.unwrap()[0].addresses.as_ref().unwrap().len(), 2);
        let svc = service(Ipv4Addr::new(10, 96, 0, 10));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
        assert!(spec.selector.is_none());
        assert_eq!(default_address("10.96.0.0/12".parse().unwrap()), Some(Ipv4Addr::new(10, 96, 0, 10)));
    }
}
