//! LoadBalancer Services without a cloud. With `--lb-pool`, the API server gives each one an address
//! of the pool at creation; one node announces it on the LAN and every node forwards it
//! (`kubelet::joined::announce`). Without a pool, as k3s's ServiceLB does, a LoadBalancer Service's ingress is the
//! InternalIP of every Ready node, kept current as nodes come and go: the Service's port answers on
//! every node, so it never stays `<pending>`; a second Service on a port one already takes there
//! stays pending with a Warning Event, as with k3s. A pool that ran out gets a Warning Event too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};

use super::events::{EventRecorder, EventType};
use super::runner::{Trigger, run_loop};
use crate::api::nodes::{internal_ips, serves};
use crate::master::client::{ApiError, ClusterApi};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceLbError {
    #[error("service-lb controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("service {name}: setting its load balancer ingress: {source}")]
    Update { name: String, source: ApiError },
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// The InternalIPs of the Ready nodes, sorted (pure).
pub fn node_addresses<N: std::borrow::Borrow<Node>>(nodes: &[N]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for n in nodes.iter().map(|n| n.borrow()).filter(|n| serves(n)) {
        out.extend(internal_ips(n).map(String::from));
    }
    out.into_iter().collect()
}

fn key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// Without a pool every LoadBalancer Service shares the nodes' addresses, so a port (`80/TCP`)
/// can belong to one of them only: the oldest keeps it, as k3s's ServiceLB does (its later
/// Services' pods find the host port taken). Returns, per later Service (`namespace/name`), the
/// port it wants and the Service that holds it (pure).
pub fn port_clashes<S: std::borrow::Borrow<Service>>(services: &[S]) -> BTreeMap<String, (String, String)> {
    let mut lbs: Vec<&Service> = services
        .iter()
        .map(|s| s.borrow())
        .filter(|s| is_load_balancer(s) && s.metadata.deletion_timestamp.is_none())
        .collect();
    lbs.sort_by_key(|s| (s.metadata.creation_timestamp.as_ref().map(|t| t.0), key(s)));
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut clashes = BTreeMap::new();
    for svc in lbs {
        let ports: Vec<String> = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
            .collect();
        if let Some((port, owner)) = ports.iter().find_map(|p| owners.get(p).map(|o| (p.clone(), o.clone())))
        {
            clashes.insert(key(svc), (port, owner));
            continue;
        }
        for p in ports {
            owners.insert(p, key(svc));
        }
    }
    clashes
}

/// The ingress a Service should have when no pool is configured (`None`: leave it alone): the
/// nodes' addresses, or none while another Service holds one of its ports.
pub fn wanted_ingress(svc: &Service, nodes: &[String], clashing: bool) -> Option<Vec<String>> {
    let wanted = if clashing { &[][..] } else { nodes };
    (is_load_balancer(svc) && svc.metadata.deletion_timestamp.is_none() && ingress_ips(svc) != wanted)
        .then(|| wanted.to_vec())
}

/// One pass. `pool` tells whether the API server allocates from `--lb-pool`; `warned` remembers the
/// Services already told that the pool ran out.
pub async fn sync<C: ClusterApi>(
    client: &C,
    pool: bool,
    events: &EventRecorder<C>,
    warned: &mut BTreeSet<String>,
) -> Result<(), ServiceLbError> {
    let services = client
        .snapshot::<Service>()
        .await
        .map_err(|source| ServiceLbError::List { what: "services", source })?;
    if pool {
        for svc in services.iter().filter(|s| is_load_balancer(s) && ingress_ips(s).is_empty()) {
            if warned.insert(key(svc)) {
                let msg = "no address left in the load balancer pool (--lb-pool); the Service stays pending until one is freed";
                events.record(&**svc, EventType::Warning, "AllocationFailed", msg).await;
            }
        }
        return Ok(());
    }
    let nodes =
        client.snapshot::<Node>().await.map_err(|source| ServiceLbError::List { what: "nodes", source })?;
    let addresses = node_addresses(&nodes);
    let clashes = port_clashes(&services);
    warned.retain(|k| clashes.contains_key(k));
    for svc in &services {
        let clash = clashes.get(&key(svc));
        if let Some((port, owner)) = clash
            && warned.insert(key(svc))
        {
            let msg = format!(
                "port {port} is already taken on the nodes' addresses by LoadBalancer Service {owner}; \
                 the Service stays pending until it is free (or use --lb-pool for addresses of its own)"
            );
            events.record(&**svc, EventType::Warning, "AllocationFailed", &msg).await;
        }
        let Some(ips) = wanted_ingress(svc, &addresses, clash.is_some()) else { continue };
        let mut updated = (**svc).clone();
        let status = updated.status.get_or_insert_default();
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: Some(
                ips.into_iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        });
        match client.update_status(&updated).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(source) => {
                return Err(ServiceLbError::Update {
                    name: svc.metadata.name.clone().unwrap_or_default(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Runs the controller forever; `pool`: whether `--lb-pool` is set.
pub async fn run<C: ClusterApi>(client: Arc<C>, pool: bool) {
    let events = EventRecorder::new(client.clone(), "service-lb-controller");
    let trigger = Trigger::default()
        .paced(Duration::from_millis(200))
        .watch::<Service, C>(&client)
        .await
        .watch::<Node, C>(&client)
        .await;
    let warned = std::sync::Mutex::new(BTreeSet::new());
    run_loop("service-lb", trigger, Duration::from_secs(30), || async {
        let mut w = std::mem::take(&mut *warned.lock().unwrap_or_else(|p| p.into_inner()));
        let r = sync(&*client, pool, &events, &mut w).await;
        *warned.lock().unwrap_or_else(|p| p.into_inner()) = w;
        r
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(ip: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(format!("n-{ip}")), ..Default::default() },
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

    fn svc(kind: &str) -> Service {
        Service {
            spec: Some(ServiceSpec { type_: Some(kind.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn load_balancers_get_the_ready_nodes_and_follow_them() {
        let nodes = node_addresses(&[
            node("10.250.0.12", true),
            node("10.250.0.11", true),
            node("10.250.0.13", false),
        ]);
        assert_eq!(nodes, ["10.250.0.11", "10.250.0.12"]);
        assert_eq!(wanted_ingress(&svc("LoadBalancer"), &nodes, false), Some(nodes.clone()));
        assert_eq!(wanted_ingress(&svc("NodePort"), &nodes, false), None);
        let mut done = svc("LoadBalancer");
        done.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    nodes
                        .iter()
                        .map(|ip| LoadBalancerIngress { ip: Some(ip.clone()), ..Default::default() })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        assert_eq!(wanted_ingress(&done, &nodes, false), None);
        assert_eq!(wanted_ingress(&done, &nodes[..1], false), Some(vec!["10.250.0.11".to_string()]));
        // A clashing Service gives its ingress back.
        assert_eq!(wanted_ingress(&done, &nodes, true), Some(vec![]));
        assert_eq!(wanted_ingress(&svc("LoadBalancer"), &nodes, true), None);
    }

    fn lb(name: &str, age: i64, ports: &[(i32, &str)]) -> Service {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut s = svc("LoadBalancer");
        s.metadata.namespace = Some("default".into());
        s.metadata.name = Some(name.into());
        s.metadata.creation_timestamp =
            Some(Time(k8s_openapi::chrono::DateTime::from_timestamp(1_700_000_000 - age, 0).unwrap()));
        s.spec.as_mut().unwrap().ports = Some(
            ports
                .iter()
                .map(|(port, proto)| k8s_openapi::api::core::v1::ServicePort {
                    port: *port,
                    protocol: Some(proto.to_string()),
                    ..Default::default()
                })
                .collect(),
        );
        s
    }

    #[test]
    fn the_oldest_service_keeps_a_port_on_the_nodes_addresses() {
        let services = vec![
            lb("young", 10, &[(443, "TCP"), (80, "TCP")]),
            lb("old", 100, &[(80, "TCP")]),
            lb("udp", 5, &[(80, "UDP")]),
            lb("other", 1, &[(8080, "TCP")]),
            svc("NodePort"),
        ];
        let clashes = port_clashes(&services);
        assert_eq!(clashes.len(), 1, "{clashes:?}");
        assert_eq!(clashes["default/young"], ("80/TCP".to_string(), "default/old".to_string()));
        // Once the old one is gone, the young one gets the port.
        assert!(port_clashes(&services[..1]).is_empty());
    }
}
