//! The service proxy of a joined node (kube-proxy's job, inside `rkubelet`): Services and
//! EndpointSlices from the API, turned into [`crate::proxy`]'s model by a pure function and programmed
//! into this node's iptables, a full sync first (and after any failure or hourly), partial syncs after.
//! Rules are replaced atomically, so a restarted node keeps forwarding with the old rules until its
//! first sync rewrites them. The same watch feeds the node's cluster DNS ([`crate::dns`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::network::Protocol;
use crate::proxy::{Backend, Endpoint, ProxyConfig, ProxyMode, Service, ServiceEndpoints, ServicePort};

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Syncs start at most this often, and never sooner than twice the last sync's time after it
/// started (so syncing takes at most half of a core however large the rules); changes in between
/// gather. kube-proxy's `--iptables-min-sync-period` is a fixed 1 s: a selector switch (a Service
/// change, then its EndpointSlice's a few ms later) would wait for it.
const MIN_SYNC_PERIOD: Duration = Duration::from_millis(50);
/// A full rewrite at least this often, as kube-proxy does.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
/// DNS zone rebuilds gather changes this long.
const DNS_MIN_SYNC_PERIOD: Duration = Duration::from_millis(50);
/// Pause before retrying a failed sync.
const RETRY: Duration = Duration::from_secs(1);

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// One Service as the proxy sees it (`None` for ExternalName Services and Services without a usable
/// cluster IP: headless ones get no rules).
pub fn service(svc: &K8sService) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return None;
    }
    let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let external = matches!(kind, "NodePort" | "LoadBalancer");
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let target_port = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => port(*t)?,
                // A named target port is resolved per endpoint (the slice carries the number).
                Some(_) => 0,
                None => port(p.port)?,
            };
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: port(p.port)?,
                target_port,
                node_port: if external { p.node_port.and_then(port) } else { None },
            })
        })
        .collect();
    let load_balancer_ips = if kind == "LoadBalancer" {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let session_affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    Some(Service {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        cluster_ip,
        ports,
        load_balancer_ips,
        session_affinity_seconds,
        external_traffic_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
    })
}

/// The proxy's model of every Service and its endpoints on node `node` (pure). Endpoints come from
/// the EndpointSlices labelled with the Service's name; a ready endpoint is one whose `ready` condition
/// is not false. When a port has no ready endpoint, serving endpoints that are terminating take the
/// traffic (kube-proxy's terminating-endpoint fallback), so a rolling update drops no connection.
pub fn model(
    services: &[Arc<K8sService>],
    slices: &[Arc<EndpointSlice>],
    node: &str,
) -> (Vec<Service>, Vec<ServiceEndpoints>) {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(name) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        if s.address_type != "IPv4" {
            continue;
        }
        by_service
            .entry((s.metadata.namespace.clone().unwrap_or_default(), name.clone()))
            .or_default()
            .push(s);
    }
    let mut out_services = Vec::new();
    let mut out_endpoints = Vec::new();
    // A load balancer address and port forwards to one Service only: the oldest keeps it (one
    // rule per address and port; nftables refuses a second map element for it outright).
    let mut in_age_order: Vec<&K8sService> = services.iter().map(|s| &**s).collect();
    in_age_order.sort_by_key(|s| {
        (s.metadata.creation_timestamp.as_ref().map(|t| t.0), &s.metadata.namespace, &s.metadata.name)
    });
    let mut taken: BTreeSet<(Ipv4Addr, Protocol, u16)> = BTreeSet::new();
    for svc in in_age_order {
        let Some(mut svc) = service(svc) else { continue };
        svc.load_balancer_ips.retain(|ip| {
            let free = svc.ports.iter().all(|p| !taken.contains(&(*ip, p.protocol, p.port)));
            if !free {
                tracing::warn!(
                    service = %format!("{}/{}", svc.namespace, svc.name),
                    %ip,
                    "a port of this load balancer address belongs to an older Service: not forwarded"
                );
            }
            free
        });
        for ip in &svc.load_balancer_ips {
            taken.extend(svc.ports.iter().map(|p| (*ip, p.protocol, p.port)));
        }
        let key = (svc.namespace.clone(), svc.name.clone());
        for p in &svc.ports {
            let mut ready = BTreeSet::new();
            let mut terminating = BTreeSet::new();
            for slice in by_service.get(&key).into_iter().flatten() {
                let Some(sp) = slice.ports.iter().flatten().find(|sp| {
                    sp.name.as_deref().unwrap_or("") == p.name
                        && protocol(sp.protocol.as_deref()) == Some(p.protocol)
                }) else {
                    continue;
                };
                let Some(number) = sp.port.and_then(port) else { continue };
                for e in &slice.endpoints {
                    let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                        continue;
                    };
                    let c = e.conditions.clone().unwrap_or_default();
                    let local = e.node_name.as_deref() == Some(node);
                    let ep = Endpoint { ip, port: number, ready: true, local };
                    if c.ready != Some(false) {
                        ready.insert(ep);
                    } else if c.serving == Some(true) && c.terminating == Some(true) {
                        terminating.insert(ep);
                    }
                }
            }
            let endpoints = if ready.is_empty() { terminating } else { ready };
            out_endpoints.push(ServiceEndpoints {
                namespace: svc.namespace.clone(),
                service: svc.name.clone(),
                port_name: p.name.clone(),
                endpoints: endpoints.into_iter().collect(),
            });
        }
        out_services.push(svc);
    }
    (out_services, out_endpoints)
}

/// The cluster's Services and EndpointSlices, watched once per node and read by the service proxy
/// and the cluster DNS. Clones share the watches, which stop with the last clone.
#[derive(Clone)]
pub struct ServiceWatch {
    pub services: Store<K8sService>,
    pub slices: Store<EndpointSlice>,
    changed: watch::Receiver<u64>,
    /// `Some(true)` once both lists arrived, `Some(false)` if a watch ended first.
    ready: watch::Receiver<Option<bool>>,
    _tasks: Arc<AbortOnDrop>,
}

impl ServiceWatch {
    /// Starts watching through `client`.
    pub fn start(client: &kube::Client) -> Self {
        let (tx, changed) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let (services, services_task) = reflect::<K8sService>(client, tx.clone());
        let (slices, slices_task) = reflect::<EndpointSlice>(client, tx);
        // One waiter on the stores: kube-runtime's readiness wakes only the last of several.
        let (ready_tx, ready) = watch::channel(None);
        let ready_task = tokio::spawn({
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let (a, b) = tokio::join!(services.wait_until_ready(), slices.wait_until_ready());
                let _ = ready_tx.send(Some(a.is_ok() && b.is_ok()));
            }
        });
        let tasks = AbortOnDrop(vec![services_task, slices_task, ready_task]);
        Self { services, slices, changed, ready, _tasks: Arc::new(tasks) }
    }

    /// Waits until both lists arrived; `false` if the watches ended first.
    pub async fn ready(&self) -> bool {
        let mut ready = self.ready.clone();
        let done = ready.wait_for(Option::is_some).await.map(|v| *v);
        matches!(done, Ok(Some(true)))
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changed.clone();
        rx.mark_unchanged();
        rx
    }
}

/// Keeps this node's Service rules current until `stop` changes. Runs in the node's network namespace
/// (the caller's).
pub async fn proxy_loop(
    watch: ServiceWatch,
    node: String,
    mode: ProxyMode,
    config: ProxyConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut changed = watch.subscribe();
    // Start from what is there once both lists arrived.
    tokio::select! {
        _ = stop.changed() => return,
        ready = watch.ready() => if !ready { return },
    }
    let mut proxier = Some(Backend::new(mode, config));
    let mut last_full = Instant::now();
    loop {
        changed.mark_unchanged();
        let (svcs, eps) = model(&watch.services.state(), &watch.slices.state(), &node);
        let mut p = proxier.take().expect("proxier");
        if last_full.elapsed() > FULL_SYNC_PERIOD {
            p.request_full_sync();
            last_full = Instant::now();
        }
        let started = Instant::now();
        let (p, result) = tokio::task::spawn_blocking(move || {
            let r = p.sync(&svcs, &eps);
            (p, r.map(|stats| (stats, svcs.len())))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        proxier = Some(p);
        let period = MIN_SYNC_PERIOD.max(started.elapsed() * 2);
        let wait = match result {
            Ok((stats, n)) => {
                tracing::debug!(
                    services = n,
                    mode = %mode,
                    full = stats.full,
                    written = stats.services_written,
                    took_ms = started.elapsed().as_millis() as u64,
                    "service rules synced"
                );
                None
            }
            Err(e) => {
                tracing::warn!("programming service rules: {e}");
                Some(RETRY)
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = changed.changed(), if wait.is_none() => {}
            _ = tokio::time::sleep(wait.unwrap_or(FULL_SYNC_PERIOD)) => {}
        }
        // A change after a quiet spell syncs at once; a burst gathers until the period is over.
        tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
    }
}

/// Serves the cluster DNS zone of `watch`'s Services through `dns` (already listening) until `stop`
/// changes, rebuilding the zone on every change.
pub async fn dns_loop(
    watch: ServiceWatch,
    dns: crate::dns::ClusterDns,
    zone: crate::dns::ZoneConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut changed = watch.subscribe();
    tokio::select! {
        _ = stop.changed() => return,
        ready = watch.ready() => if !ready { return },
    }
    let mut serial = 0u32;
    loop {
        changed.mark_unchanged();
        serial = serial.wrapping_add(1);
        match crate::dns::Zone::build(&watch.services.state(), &watch.slices.state(), &zone, serial) {
            Ok(z) => dns.set_zone(z),
            Err(e) => {
                tracing::error!("cluster DNS: {e}");
                return;
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            r = changed.changed() => if r.is_err() { return },
        }
        tokio::time::sleep(DNS_MIN_SYNC_PERIOD).await;
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A reflector store of every `K`, counting each change in `changed`.
fn reflect<K>(
    client: &kube::Client,
    changed: Arc<watch::Sender<u64>>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => tracing::warn!("watching {}: {e}", K::kind(&Default::default())),
            }
        }
    });
    (store, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort as K8sPort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn svc(kind: &str) -> K8sService {
        K8sService {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(kind.into()),
                cluster_ip: Some("10.96.0.20".into()),
                ports: Some(vec![K8sPort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("web".into())),
                    node_port: Some(30080),
                    ..Default::default()
                }]),
                external_traffic_policy: Some("Local".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("10.250.0.11".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        }
    }

    fn endpoint(ip: &str, node: &str, ready: bool, terminating: bool) -> K8sEndpoint {
        K8sEndpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready || terminating),
                terminating: Some(terminating),
            }),
            node_name: Some(node.into()),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<K8sEndpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-x".into()),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            endpoints,
        }
    }

    #[test]
    fn services_and_slices_become_the_proxy_model() {
        let services = [Arc::new(svc("LoadBalancer"))];
        let slices = [Arc::new(slice(vec![
            endpoint("10.244.1.2", "node1", true, false),
            endpoint("10.244.2.2", "node2", true, false),
            endpoint("10.244.2.3", "node2", false, false),
        ]))];
        let (s, e) = model(&services, &slices, "node1");
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 20)));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[0].target_port, 0);
        assert_eq!(s.load_balancer_ips, vec![Ipv4Addr::new(10, 250, 0, 11)]);
        assert!(s.external_traffic_local);
        let eps = &e[0].endpoints;
        assert_eq!(eps.len(), 2, "{eps:?}");
        assert!(eps.iter().all(|e| e.port == 8080));
        assert_eq!(eps.iter().filter(|e| e.local).count(), 1);

        // A ClusterIP Service has no node port, LB IPs or Local policy, whatever its fields say.
        let (s, _) = model(&[Arc::new(svc("ClusterIP"))], &slices, "node1");
        assert_eq!(
            (s[0].ports[0].node_port, s[0].load_balancer_ips.len(), s[0].external_traffic_local),
            (None, 0, false)
        );
        // Headless and ExternalName Services: no rules for the second.
        let mut headless = svc("ClusterIP");
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(model(&[Arc::new(headless)], &slices, "n").0[0].cluster_ip, None);
        assert!(model(&[Arc::new(svc("ExternalName"))], &slices, "n").0.is_empty());
    }

    #[test]
    fn a_load_balancer_address_and_port_forwards_to_the_oldest_service_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |secs| Some(Time(k8s_openapi::chrono::DateTime::from_timestamp(secs, 0).unwrap()));
        let mut old = svc("LoadBalancer");
        old.metadata.creation_timestamp = at(1_000);
        let mut young = svc("LoadBalancer");
        young.metadata.name = Some("young".into());
        young.metadata.creation_timestamp = at(2_000);
        young.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.21".into());
        let mut other_port = young.clone();
        other_port.metadata.name = Some("other-port".into());
        other_port.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 8080;
        for services in [
            [old.clone(), young.clone(), other_port.clone()],
            [other_port.clone(), young.clone(), old.clone()],
        ] {
            let services: Vec<_> = services.into_iter().map(Arc::new).collect();
            let (s, _) = model(&services, &[], "node1");
            let lbs: BTreeMap<&str, usize> =
                s.iter().map(|s| (s.name.as_str(), s.load_balancer_ips.len())).collect();
            assert_eq!(lbs, BTreeMap::from([("web", 1), ("young", 0), ("other-port", 1)]));
        }
    }

    #[test]
    fn terminating_endpoints_serve_only_when_nothing_is_ready() {
        let services = [Arc::new(svc("ClusterIP"))];
        let both = [Arc::new(slice(vec![
            endpoint("10.244.1.2", "n", true, false),
            endpoint("10.244.1.3", "n", false, true),
        ]))];
        let (_, e) = model(&services, &both, "n");
        assert_eq!(e[0].endpoints.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(), ["10.244.1.2"]);
        let only_terminating = [Arc::new(slice(vec![endpoint("10.244.1.3", "n", false, true)]))];
        let (_, e) = model(&services, &only_terminating, "n");
        assert_eq!(e[0].endpoints.len(), 1);
        let none = [Arc::new(slice(vec![]))];
        assert!(model(&services, &none, "n").1[0].endpoints.is_empty());
    }
}
