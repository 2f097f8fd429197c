//! Endpoints controller: for every Service with a selector, an Endpoints object of the same name listing
//! ready pods as `addresses` and the others as `notReadyAddresses`, with target ports resolved.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::replicaset::pod_ready;
use super::runner::{Trigger, run_loop, semantically_equal};
use crate::api::selectors::LabelSelector;
use crate::master::client::{ApiError, ClusterApi, DeleteParams};

/// Why an Endpoints sync failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("endpoints controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("endpoints {name}: {step}: {source}")]
    Action { name: String, step: &'static str, source: ApiError },
}

/// What the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointsAction {
    Create(Box<Endpoints>),
    Update(Box<Endpoints>),
    Delete { namespace: String, name: String },
}

/// Marks Endpoints this controller maintains (only those are deleted when their Service is gone).
pub const MANAGED_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

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

/// The desired Endpoints of a Service with a selector (None for selector-less Services).
pub fn desired_endpoints<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Option<Endpoints> {
    let spec = svc.spec.as_ref()?;
    let selector = LabelSelector::from_map(spec.selector.as_ref().filter(|s| !s.is_empty())?);
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut subsets: BTreeMap<Vec<(Option<String>, i32, String)>, EndpointSubset> = BTreeMap::new();
    for pod in pods {
        let pod: &Pod = pod.borrow();
        if !selector.selects(pod.metadata.labels.as_ref()) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
            let Some(port) = resolve_port(&target, pod) else { continue };
            ports.push((sp.name.clone(), port, sp.protocol.clone().unwrap_or_else(|| "TCP".into())));
        }
        let address = EndpointAddress {
            ip,
            hostname: super::endpointslice::dns_hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let subset = subsets.entry(ports.clone()).or_insert_with(|| EndpointSubset {
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: name.clone(),
                        port: *port,
                        protocol: Some(protocol.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        });
        let list = if pod_ready(pod) || publish_not_ready {
            subset.addresses.get_or_insert_default()
        } else {
            subset.not_ready_addresses.get_or_insert_default()
        };
        list.push(address);
    }
    let mut subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    for s in &mut subsets {
        for list in [s.addresses.as_mut(), s.not_ready_addresses.as_mut()].into_iter().flatten() {
            list.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: svc.metadata.labels.clone(),
            annotations: Some([(MANAGED_ANNOTATION.to_string(), String::new())].into()),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// Compare desired Endpoints with the stored ones of one namespace.
pub fn reconcile<S: Borrow<Service>, P: Borrow<Pod>, E: Borrow<Endpoints>>(
    services: &[S],
    pods: &[P],
    existing: &[E],
) -> Vec<EndpointsAction> {
    let services: Vec<&Service> = services.iter().map(Borrow::borrow).collect();
    let existing: Vec<&Endpoints> = existing.iter().map(Borrow::borrow).collect();
    let mut actions = Vec::new();
    for svc in &services {
        let Some(want) = desired_endpoints(svc, pods) else { continue };
        match existing.iter().find(|e| e.metadata.name == want.metadata.name) {
            None => actions.push(EndpointsAction::Create(Box::new(want))),
            Some(have) => {
                if !semantically_equal(&have.subsets, &want.subsets)
                    || have.metadata.labels != want.metadata.labels
                {
                    let mut updated = (*have).clone();
                    updated.subsets = want.subsets;
                    updated.metadata.labels = want.metadata.labels;
                    updated
                        .metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(MANAGED_ANNOTATION.into(), String::new());
                    actions.push(EndpointsAction::Update(Box::new(updated)));
                }
            }
        }
    }
    for e in existing {
        let managed = e.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MANAGED_ANNOTATION));
        if managed && !services.iter().any(|s| s.metadata.name == e.metadata.name) {
            actions.push(EndpointsAction::Delete {
                namespace: e.metadata.namespace.clone().unwrap_or_default(),
                name: e.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
    actions
}

/// Services, pods and Endpoints of one namespace.
type NamespaceObjects = (Vec<Arc<Service>>, Vec<Arc<Pod>>, Vec<Arc<Endpoints>>);

/// One pass over all namespaces.
pub async fn sync_all<C: ClusterApi>(client: &C) -> Result<(), EndpointsError> {
    let services = client
        .snapshot::<Service>()
        .await
        .map_err(|source| EndpointsError::List { what: "services", source })?;
    let pods =
        client.snapshot::<Pod>().await.map_err(|source| EndpointsError::List { what: "pods", source })?;
    let endpoints = client
        .snapshot::<Endpoints>()
        .await
        .map_err(|source| EndpointsError::List { what: "endpoints", source })?;
    let mut namespaces: BTreeMap<String, NamespaceObjects> = BTreeMap::new();
    for s in services {
        namespaces.entry(s.metadata.namespace.clone().unwrap_or_default()).or_default().0.push(s);
    }
    for p in pods {
        namespaces.entry(p.metadata.namespace.clone().unwrap_or_default()).or_default().1.push(p);
    }
    for e in endpoints {
        namespaces.entry(e.metadata.namespace.clone().unwrap_or_default()).or_default().2.push(e);
    }
    for (services, pods, existing) in namespaces.values() {
        for action in reconcile(services, pods, existing) {
            let (name, step, result) = match &action {
                EndpointsAction::Create(e) => {
                    (e.metadata.name.clone(), "creating", client.create(&**e).await.map(drop))
                }
                EndpointsAction::Update(e) => {
                    (e.metadata.name.clone(), "updating", client.update(&**e).await.map(drop))
                }
                EndpointsAction::Delete { namespace, name } => (
                    Some(name.clone()),
                    "deleting",
                    client
                        .delete::<Endpoints>(Some(namespace), name, &DeleteParams::default())
                        .await
                        .map(drop),
                ),
            };
            match result {
                Ok(()) => {}
                Err(e) if e.is_conflict() || e.is_not_found() || e.is_already_exists() => {}
                Err(source) => {
                    return Err(EndpointsError::Action { name: name.unwrap_or_default(), step, source });
                }
            }
        }
    }
    Ok(())
}

/// Run the Endpoints controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>) {
    // A pass looks at every pod: on a busy cluster, run at most about five times a second.
    let trigger = Trigger::default()
        .paced(Duration::from_millis(200))
        .watch::<Service, C>(&client)
        .await
        .watch::<Pod, C>(&client)
        .await;
    run_loop("endpoints", trigger, Duration::from_secs(10), || sync_all(&*client)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn svc(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort { port: 80, target_port: Some(target), ..Default::default() }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let pods =
            [pod("a", Some("10.0.0.2"), true), pod("b", Some("10.0.0.3"), false), pod("c", None, true)];
        let e = desired_endpoints(&svc(IntOrString::String("http".into())), &pods).unwrap();
        let subset = &e.subsets.unwrap()[0];
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(subset.not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.3");
        assert_eq!(subset.addresses.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn creates_updates_and_deletes_endpoints() {
        let s = svc(IntOrString::Int(8080));
        let actions = reconcile::<_, Pod, Endpoints>(std::slice::from_ref(&s), &[], &[]);
        let EndpointsAction::Create(e) = &actions[0] else { panic!("{actions:?}") };
        assert!(e.subsets.is_none());
        let actions =
            reconcile(std::slice::from_ref(&s), &[pod("a", Some("10.0.0.2"), true)], &[(**e).clone()]);
        assert!(matches!(&actions[0], EndpointsAction::Update(_)));
        let actions = reconcile::<Service, Pod, _>(&[], &[], &[(**e).clone()]);
        assert!(matches!(&actions[0], EndpointsAction::Delete { name, .. } if name == "web"));
        let mut selectorless = s.clone();
        selectorless.spec.as_mut().unwrap().selector = None;
        assert!(reconcile::<_, Pod, Endpoints>(&[selectorless], &[], &[]).is_empty());
    }
}
