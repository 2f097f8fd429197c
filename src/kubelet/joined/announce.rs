//! LoadBalancer addresses from the master's `--lb-pool`, made reachable on the nodes' network at layer
//! 2, as MetalLB's L2 mode and kube-vip do: for each such address exactly one node — the Ready node
//! (with a ready local endpoint, for `externalTrafficPolicy: Local`) whose hash of name and address is
//! lowest, so every node reaches the same answer from the same Node objects without talking to the
//! others — adds it as a /32 to its InternalIP's link (the kernel then answers ARP for it) and
//! broadcasts a gratuitous ARP so neighbours update at once when it moves. Every node's service rules
//! forward the address already, so the announcer only draws the traffic; spreading it is the rules'
//! job. This is failover, not load balancing: one node carries each address's traffic.
//!
//! Ingress addresses that are a node's own InternalIP (no pool: k3s's ServiceLB behaviour) need no
//! announcement. The addresses a node added are recorded in a file, so a restarted node removes the
//! ones it no longer announces and `rkubelet reset` removes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use super::services::{SERVICE_NAME_LABEL, ServiceWatch};
use crate::api::nodes::{internal_ips, serves};
use crate::network::link::{self, LinkError};

/// Why announcements could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("announcing load balancer addresses: {0}")]
    Netlink(#[from] LinkError),
    #[error("announcing load balancer addresses: no link has the node address {0}")]
    NoLink(Ipv4Addr),
    #[error("recording announced load balancer addresses in {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

/// `namespace/name` of the Service an address belongs to.
pub type ServiceKey = (String, String);

/// The node among `candidates` that announces `vip` (pure): the lowest hash of name and address.
pub fn announcer<'a>(vip: Ipv4Addr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().min_by_key(|node| Sha256::digest(format!("{node}#{vip}").as_bytes()))
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && svc.metadata.deletion_timestamp.is_none()
}

fn local_traffic(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local")
}

/// The nodes with a ready endpoint of `svc` (from its EndpointSlices).
fn nodes_with_endpoints<'a>(svc: &Service, slices: &'a [Arc<EndpointSlice>]) -> BTreeSet<&'a str> {
    let (ns, name) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref());
    slices
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == ns
                && s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str)
                    == name
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.node_name.as_deref())
        .collect()
}

/// The load balancer addresses node `me` announces, each with its Service (pure).
pub fn desired(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
    me: &str,
) -> BTreeMap<Ipv4Addr, ServiceKey> {
    let node_ips: BTreeSet<&str> = nodes.iter().flat_map(|n| internal_ips(n)).collect();
    let ready: Vec<&str> =
        nodes.iter().filter(|n| serves(n)).filter_map(|n| n.metadata.name.as_deref()).collect();
    let mut out = BTreeMap::new();
    for svc in services.iter().filter(|s| is_load_balancer(s)) {
        let with_endpoints = local_traffic(svc).then(|| nodes_with_endpoints(svc, slices));
        let candidates =
            ready.iter().copied().filter(|n| with_endpoints.as_ref().is_none_or(|w| w.contains(n)));
        let ingress =
            svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        for ip in ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()) {
            let Ok(vip) = ip.parse::<Ipv4Addr>() else { continue };
            if node_ips.contains(ip) || announcer(vip, candidates.clone()) != Some(me) {
                continue;
            }
            let key = (
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default(),
            );
            out.insert(vip, key);
        }
    }
    out
}

/// The addresses recorded as announced: one per line.
pub fn read_state(path: &Path) -> BTreeSet<Ipv4Addr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn write_state(path: &Path, addrs: &BTreeSet<Ipv4Addr>) -> Result<(), AnnounceError> {
    let state = |source| AnnounceError::State { path: path.to_path_buf(), source };
    let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(state)?;
    std::fs::rename(&tmp, path).map_err(state)
}

/// Moves the calling thread's namespace from the addresses `state` records to `wanted`, on the link
/// that holds `node_ip`; returns the addresses newly announced (a gratuitous ARP went out for each).
pub fn apply(
    state: &Path,
    node_ip: Ipv4Addr,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<Vec<Ipv4Addr>, AnnounceError> {
    let installed = read_state(state);
    let added: Vec<Ipv4Addr> = wanted.difference(&installed).copied().collect();
    let removed: Vec<Ipv4Addr> = installed.difference(wanted).copied().collect();
    if added.is_empty() && removed.is_empty() {
        return Ok(vec![]);
    }
    let (to_add, to_remove) = (&added, &removed);
    // What was done, step by step: a failure half way still records exactly what is on the link.
    let done = std::sync::Mutex::new(installed.clone());
    let done_ref = &done;
    // The node's link, when there is anything to add: `None` if no link holds the node address.
    let link = link::with_netlink(None, |handle| async move {
        for vip in to_remove {
            link::delete_address(&handle, *vip, 32).await?;
            done_ref.lock().unwrap_or_else(|e| e.into_inner()).remove(vip);
        }
        if to_add.is_empty() {
            return Ok(None);
        }
        let found = link::link_with_address(&handle, node_ip).await?;
        if let Some((index, _)) = &found {
            for vip in to_add {
                link::add_address_to(&handle, *index, (*vip).into(), 32).await?;
                done_ref.lock().unwrap_or_else(|e| e.into_inner()).insert(*vip);
            }
        }
        Ok(found)
    });
    write_state(state, &done.into_inner().unwrap_or_else(|e| e.into_inner()))?;
    let link = link?;
    let Some((index, mac)) = link else {
        return if added.is_empty() { Ok(vec![]) } else { Err(AnnounceError::NoLink(node_ip)) };
    };
    for vip in &added {
        match <[u8; 6]>::try_from(mac.as_slice()) {
            Ok(mac) => {
                if let Err(e) = crate::sys::arp::send_announcement(index, mac, *vip) {
                    tracing::warn!(%vip, "gratuitous ARP: {e}");
                }
            }
            Err(_) => tracing::debug!(%vip, "no Ethernet address on the node's link: no gratuitous ARP"),
        }
    }
    Ok(added)
}

/// Removes every address `state` records (from `rkubelet reset`), then the record.
pub fn withdraw_all(state: &Path) -> Result<(), AnnounceError> {
    let installed = read_state(state);
    if !installed.is_empty() {
        let addrs = &installed;
        link::with_netlink(None, |handle| async move {
            for vip in addrs {
                link::delete_address(&handle, *vip, 32).await?;
            }
            Ok(())
        })?;
    }
    match std::fs::remove_file(state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(AnnounceError::State { path: state.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Keeps this node's announcements current until `stop` changes; `state` records them.
pub async fn announce_loop(
    client: kube::Client,
    services: ServiceWatch,
    me: String,
    node_ip: Ipv4Addr,
    state: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let (nodes, writer) = reflector::store::<Node>();
    let nodes_changed = Arc::new(Notify::new());
    let notify = nodes_changed.clone();
    let api: Api<Node> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!("watching nodes: {e}"),
            }
        }
    });
    let mut changed = services.subscribe();
    tokio::select! {
        _ = stop.changed() => { task.abort(); return }
        r = nodes.wait_until_ready() => if r.is_err() { task.abort(); return },
    }
    tokio::select! {
        _ = stop.changed() => { task.abort(); return }
        ready = services.ready() => if !ready { task.abort(); return },
    }
    loop {
        changed.mark_unchanged();
        let wanted = desired(&services.services.state(), &services.slices.state(), &nodes.state(), &me);
        let addrs: BTreeSet<Ipv4Addr> = wanted.keys().copied().collect();
        let path = state.clone();
        let result = tokio::task::spawn_blocking(move || apply(&path, node_ip, &addrs))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let retry = match result {
            Ok(added) => {
                for vip in added {
                    tracing::info!(%vip, "announcing load balancer address");
                    if let Some((ns, name)) = wanted.get(&vip) {
                        post_event(&client, &me, ns, name, vip).await;
                    }
                }
                None
            }
            Err(e) => {
                tracing::warn!("{e}");
                Some(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = nodes_changed.notified(), if retry.is_none() => {}
            _ = changed.changed(), if retry.is_none() => {}
            _ = tokio::time::sleep(retry.unwrap_or(Duration::from_secs(60))) => {}
        }
    }
    task.abort();
}

/// A `nodeAssigned` Event on the Service (MetalLB's reason): which node now announces `vip`.
async fn post_event(client: &kube::Client, me: &str, ns: &str, name: &str, vip: Ipv4Addr) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let now = Time(k8s_openapi::chrono::Utc::now());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        reason: Some("nodeAssigned".into()),
        message: Some(format!("announcing {vip} from node \"{me}\"")),
        type_: Some("Normal".into()),
        source: Some(EventSource { component: Some("rkube-lb-announcer".into()), host: Some(me.into()) }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::debug!("posting event for service {ns}/{name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeCondition, NodeStatus, ServiceSpec,
        ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn node(name: &str, ip: &str, ready: bool) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: ip.into() }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn lb(name: &str, ips: &[&str], local: bool) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                external_traffic_policy: Some(if local { "Local" } else { "Cluster" }.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|ip| LoadBalancerIngress { ip: Some((*ip).into()), ..Default::default() })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        })
    }

    fn slice(svc: &str, nodes: &[&str]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-x")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: nodes
                .iter()
                .map(|n| Endpoint {
                    addresses: vec!["10.244.0.5".into()],
                    node_name: Some((*n).into()),
                    conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: None,
        })
    }

    fn announcers(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
    ) -> BTreeMap<Ipv4Addr, String> {
        let mut out = BTreeMap::new();
        for n in nodes {
            let me = n.metadata.name.clone().unwrap();
            for vip in desired(services, slices, nodes, &me).into_keys() {
                assert!(out.insert(vip, me.clone()).is_none(), "{vip} announced twice");
            }
        }
        out
    }

    #[test]
    fn exactly_one_ready_node_announces_each_pool_address() {
        let nodes = vec![
            node("n1", "10.250.0.11", true),
            node("n2", "10.250.0.12", true),
            node("n3", "10.250.0.13", false),
        ];
        let vips: Vec<String> = (200..220).map(|i| format!("10.250.0.{i}")).collect();
        let services: Vec<Arc<Service>> = vips.iter().map(|v| lb(&format!("s{v}"), &[v], false)).collect();
        let got = announcers(&services, &[], &nodes);
        assert_eq!(got.len(), vips.len());
        assert!(got.values().all(|n| n != "n3"), "a NotReady node never announces");
        // The hash spreads addresses over the nodes.
        assert!(got.values().any(|n| n == "n1") && got.values().any(|n| n == "n2"));
        // A node going away moves only its own addresses.
        let fewer = vec![nodes[0].clone(), nodes[2].clone()];
        let after = announcers(&services, &[], &fewer);
        for (vip, n) in &got {
            if n == "n1" {
                assert_eq!(after.get(vip).map(String::as_str), Some("n1"));
            }
        }
        assert!(after.values().all(|n| n == "n1"));
    }

    #[test]
    fn node_addresses_need_no_announcement_and_local_policy_needs_a_local_endpoint() {
        let nodes = vec![node("n1", "10.250.0.11", true), node("n2", "10.250.0.12", true)];
        // No pool: the ingress is the nodes' own addresses.
        let services = vec![lb("web", &["10.250.0.11", "10.250.0.12"], false)];
        assert!(announcers(&services, &[], &nodes).is_empty());
        // externalTrafficPolicy Local: only a node with a ready endpoint, or nobody.
        let services = vec![lb("web", &["10.250.0.200"], true)];
        assert!(announcers(&services, &[], &nodes).is_empty());
        for holder in ["n1", "n2"] {
            let got = announcers(&services, &[slice("web", &[holder])], &nodes);
            assert_eq!(got.values().collect::<Vec<_>>(), vec![holder]);
        }
        assert!(announcers(&services, &[slice("other", &["n1"])], &nodes).is_empty());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb");
        let addrs: BTreeSet<Ipv4Addr> =
            ["10.250.0.200".parse().unwrap(), "10.250.0.7".parse().unwrap()].into();
        write_state(&path, &addrs).unwrap();
        assert_eq!(read_state(&path), addrs);
        assert!(read_state(&dir.path().join("none")).is_empty());
    }
}
