//! EndpointSlice controller (`discovery.k8s.io/v1`): for every Service with a selector, slices listing
//! the selected pods with their conditions (ready, serving, terminating), node and resolved ports, at
//! most [`MAX_ENDPOINTS`] endpoints each, labelled `kubernetes.io/service-name` as kube-proxy and most
//! clients expect. Slices of a Service that is gone are deleted.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::replicaset::pod_ready;
use super::runner::{Trigger, run_loop, semantically_equal};
use crate::api::selectors::LabelSelector;
use crate::master::client::{ApiError, ClusterApi, DeleteParams};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (kube-controller-manager's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (kube-controller-manager's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS: usize = 100;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("endpointslice controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("endpointslice {namespace}/{name}: {step}: {source}")]
    Action { namespace: String, name: String, step: &'static str, source: ApiError },
}

/// What a pass wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAction {
    Create(Box<EndpointSlice>),
    Update(Box<EndpointSlice>),
    Delete { namespace: String, name: String },
}

/// A port as a slice carries it: name, number, protocol.
type PortKey = (Option<String>, i32, String);

fn resolve_port(port: &IntOrString, pod: &Pod) -> Option<i32> {
    match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn slice(svc: &Service, ports: &[PortKey], endpoints: Vec<Endpoint>) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol)| EndpointPort {
                    name: name.clone(),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        endpoints,
    }
}

/// The endpoint's DNS name under the Service: the pod's `hostname` when its `subdomain` names this
/// Service (in its namespace), as the kube endpoint controllers set it.
pub fn dns_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| hostname.clone())
}

/// The slices a Service should have (none for a Service without a selector; one empty slice for a
/// Service that selects nothing, as kube-controller-manager keeps).
pub fn desired_slices<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Vec<EndpointSlice> {
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()).map(LabelSelector::from_map) else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut groups: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        let pod: &Pod = pod.borrow();
        if !selector.selects(pod.metadata.labels.as_ref()) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let ports: Vec<PortKey> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                let port = resolve_port(&target, pod)?;
                Some((sp.name.clone(), port, sp.protocol.clone().unwrap_or_else(|| "TCP".into())))
            })
            .collect();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready(pod) || publish_not_ready;
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(serving && (!terminating || publish_not_ready)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            hostname: dns_hostname(svc, pod),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if groups.is_empty() {
        return vec![slice(svc, &[], Vec::new())];
    }
    let mut out = Vec::new();
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in endpoints.chunks(MAX_ENDPOINTS) {
            out.push(slice(svc, &ports, chunk.to_vec()));
        }
    }
    out
}

fn managed_service(s: &EndpointSlice) -> Option<&str> {
    let labels = s.metadata.labels.as_ref()?;
    (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .then(|| labels.get(SERVICE_NAME_LABEL).map(String::as_str))
        .flatten()
}

fn same_content(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    semantically_equal(&have.endpoints, &want.endpoints)
        && semantically_equal(&have.ports, &want.ports)
        && have.metadata.labels == want.metadata.labels
        && have.metadata.owner_references == want.metadata.owner_references
}

/// Compares desired slices with the stored ones of one namespace (pure). Existing slices are reused in
/// name order, so a change rewrites slices rather than replacing them.
pub fn reconcile<S: Borrow<Service>, P: Borrow<Pod>, E: Borrow<EndpointSlice>>(
    services: &[S],
    pods: &[P],
    existing: &[E],
) -> Vec<SliceAction> {
    let mut by_service: HashMap<&str, Vec<&EndpointSlice>> = HashMap::new();
    for e in existing {
        let e: &EndpointSlice = e.borrow();
        if let Some(svc) = managed_service(e) {
            by_service.entry(svc).or_default().push(e);
        }
    }
    let mut actions = Vec::new();
    let mut seen = Vec::new();
    for svc in services {
        let svc: &Service = svc.borrow();
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let want = desired_slices(svc, pods);
        if want.is_empty() {
            continue;
        }
        seen.push(name);
        let mut have = by_service.get(name).cloned().unwrap_or_default();
        have.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let reused = want.len();
        for (i, w) in want.into_iter().enumerate() {
            match have.get(i) {
                None => actions.push(SliceAction::Create(Box::new(w))),
                Some(h) if same_content(h, &w) => {}
                Some(h) => {
                    let mut updated = (*h).clone();
                    updated.endpoints = w.endpoints;
                    updated.ports = w.ports;
                    updated.address_type = w.address_type;
                    updated.metadata.labels = w.metadata.labels;
                    updated.metadata.owner_references = w.metadata.owner_references;
                    actions.push(SliceAction::Update(Box::new(updated)));
                }
            }
        }
        for extra in have.iter().skip(reused) {
            actions.push(SliceAction::Delete {
                namespace: extra.metadata.namespace.clone().unwrap_or_default(),
                name: extra.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
    for (svc, slices) in &by_service {
        if !seen.contains(svc) {
            for s in slices {
                actions.push(SliceAction::Delete {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.metadata.name.clone().unwrap_or_default(),
                });
            }
        }
    }
    actions
}

/// Services, pods and slices of one namespace.
type NamespaceObjects = (Vec<Arc<Service>>, Vec<Arc<Pod>>, Vec<Arc<EndpointSlice>>);

/// One pass over all namespaces.
pub async fn sync_all<C: ClusterApi>(client: &C) -> Result<(), EndpointSliceError> {
    let list = |what| move |source| EndpointSliceError::List { what, source };
    let services = client.snapshot::<Service>().await.map_err(list("services"))?;
    let pods = client.snapshot::<Pod>().await.map_err(list("pods"))?;
    let slices = client.snapshot::<EndpointSlice>().await.map_err(list("endpointslices"))?;
    let mut namespaces: BTreeMap<String, NamespaceObjects> = BTreeMap::new();
    for s in services {
        namespaces.entry(s.metadata.namespace.clone().unwrap_or_default()).or_default().0.push(s);
    }
    for s in slices {
        namespaces.entry(s.metadata.namespace.clone().unwrap_or_default()).or_default().2.push(s);
    }
    for p in pods {
        if let Some(entry) = namespaces.get_mut(p.metadata.namespace.as_deref().unwrap_or("")) {
            entry.1.push(p);
        }
    }
    for (namespace, (services, pods, existing)) in &namespaces {
        for action in reconcile(services, pods, existing) {
            let (name, step, result) = match &action {
                SliceAction::Create(s) => {
                    (s.metadata.generate_name.clone(), "creating", client.create(&**s).await.map(drop))
                }
                SliceAction::Update(s) => {
                    (s.metadata.name.clone(), "updating", client.update(&**s).await.map(drop))
                }
                SliceAction::Delete { namespace, name } => (
                    Some(name.clone()),
                    "deleting",
                    client
                        .delete::<EndpointSlice>(Some(namespace), name, &DeleteParams::default())
                        .await
                        .map(drop),
                ),
            };
            match result {
                Ok(()) => {}
                Err(e) if e.is_conflict() || e.is_not_found() || e.is_already_exists() => {}
                Err(source) => {
                    return Err(EndpointSliceError::Action {
                        namespace: namespace.clone(),
                        name: name.unwrap_or_default(),
                        step,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Run the EndpointSlice controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>) {
    // A pass looks at every pod: on a busy cluster, run at most about five times a second.
    let trigger = Trigger::default()
        .paced(Duration::from_millis(200))
        .watch::<Service, C>(&client)
        .await
        .watch::<Pod, C>(&client)
        .await
        .watch::<EndpointSlice, C>(&client)
        .await;
    run_loop("endpointslice", trigger, Duration::from_secs(30), || sync_all(&*client)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(i: u32, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{i}")),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some("n1".into()), ..Default::default() }),
            status: Some(PodStatus {
                pod_ip: Some(format!("10.244.{}.{}", i / 200, i % 200 + 2)),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn stored(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn slices_carry_conditions_ports_and_split_at_the_limit() {
        let mut terminating = pod(0, true);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::chrono::Utc::now()));
        let mut pods = vec![terminating, pod(1, false)];
        pods.extend((2..=MAX_ENDPOINTS as u32 + 1).map(|i| pod(i, true)));
        let slices = desired_slices(&svc(), &pods);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].endpoints.len() + slices[1].endpoints.len(), MAX_ENDPOINTS + 2);
        let all: Vec<&Endpoint> = slices.iter().flat_map(|s| &s.endpoints).collect();
        let cond = |ip: &str| all.iter().find(|e| e.addresses[0] == ip).unwrap().conditions.clone().unwrap();
        assert_eq!(
            cond("10.244.0.2"),
            EndpointConditions { ready: Some(false), serving: Some(true), terminating: Some(true) }
        );
        assert_eq!(cond("10.244.0.3").ready, Some(false));
        assert_eq!(cond("10.244.0.4").ready, Some(true));
        let s = &slices[0];
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL], "web");
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "svc-uid");
    }

    #[test]
    fn a_pod_with_the_services_subdomain_gets_its_hostname() {
        let mut named = pod(1, true);
        let spec = named.spec.as_mut().unwrap();
        spec.hostname = Some("web-a".into());
        spec.subdomain = Some("web".into());
        let mut other = pod(2, true);
        other.spec.as_mut().unwrap().hostname = Some("web-b".into());
        other.spec.as_mut().unwrap().subdomain = Some("elsewhere".into());
        let slices = desired_slices(&svc(), &[named.clone(), other]);
        let hostnames: Vec<Option<&str>> =
            slices[0].endpoints.iter().map(|e| e.hostname.as_deref()).collect();
        assert_eq!(hostnames, [Some("web-a"), None]);
        named.metadata.namespace = Some("other".into());
        assert_eq!(dns_hostname(&svc(), &named), None, "only in the Service's namespace");
    }

    #[test]
    fn reconcile_creates_updates_reuses_and_deletes() {
        let services = [svc()];
        // Nothing stored: one slice to create; a Service selecting nothing still gets an empty one.
        let actions = reconcile(&services, &[pod(1, true)], &[] as &[EndpointSlice]);
        assert!(matches!(&actions[..], [SliceAction::Create(_)]));
        assert!(
            matches!(&reconcile(&services, &[] as &[Pod], &[] as &[EndpointSlice])[..], [SliceAction::Create(s)] if s.endpoints.is_empty())
        );
        // Stored and unchanged: nothing; a pod turning unready updates the same slice by name.
        let current = stored(desired_slices(&svc(), &[pod(1, true)]).remove(0), "web-abc");
        assert!(reconcile(&services, &[pod(1, true)], std::slice::from_ref(&current)).is_empty());
        let actions = reconcile(&services, &[pod(1, false)], std::slice::from_ref(&current));
        assert!(
            matches!(&actions[..], [SliceAction::Update(s)] if s.metadata.name.as_deref() == Some("web-abc"))
        );
        // A surplus slice and the slices of a deleted Service are deleted; foreign slices are left.
        let extra = stored(current.clone(), "web-xyz");
        let mut foreign = stored(current.clone(), "other");
        foreign.metadata.labels.as_mut().unwrap().insert(MANAGED_BY_LABEL.into(), "someone-else".into());
        let actions = reconcile(&services, &[pod(1, true)], &[current.clone(), extra, foreign.clone()]);
        assert_eq!(
            actions,
            vec![SliceAction::Delete { namespace: "default".into(), name: "web-xyz".into() }]
        );
        let actions = reconcile(&[] as &[Service], &[] as &[Pod], &[current, foreign]);
        assert_eq!(
            actions,
            vec![SliceAction::Delete { namespace: "default".into(), name: "web-abc".into() }]
        );
    }
}
