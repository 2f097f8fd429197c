//! Objects the API server keeps itself: the `default/kubernetes` Service (the first address of the
//! Service CIDR, port 443) with the Endpoints and EndpointSlice that point at the API server, so pods
//! reach it by ClusterIP and by name, as kube-apiserver's endpoint reconciler does.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::registry::{Part, Registry, WriteOptions};
use super::resources;
use super::status::ApiStatus;

/// The Service's ClusterIP: the first address of the Service CIDR.
pub fn kubernetes_cluster_ip(service_cidr: Ipv4Net) -> Option<Ipv4Addr> {
    service_cidr.hosts().next()
}

/// The DNS names and address the API server's certificate must carry for pods.
pub fn kubernetes_sans(service_cidr: Ipv4Net) -> Vec<String> {
    let mut out: Vec<String> = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec();
    out.extend(kubernetes_cluster_ip(service_cidr).map(|ip| ip.to_string()));
    out
}

fn objects(
    cluster_ip: Ipv4Addr,
    advertise: Option<Ipv4Addr>,
    port: u16,
) -> [(&'static str, &'static str, Value); 3] {
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    let addresses: Vec<String> = advertise.iter().map(|a| a.to_string()).collect();
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
    "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
    "subsets": if addresses.is_empty() { json!([]) } else {
        json!([{"addresses": addresses.iter().map(|a| json!({"ip": a})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    }});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()});
    [("", "services", service), ("", "endpoints", endpoints), ("discovery.k8s.io", "endpointslices", slice)]
}

/// Creates the `kubernetes` Service and its endpoints, or brings them back to what they must be.
/// `advertise`: the address pods reach the API server at (`None`: no endpoints).
pub async fn ensure_kubernetes_service(
    registry: &Registry,
    service_cidr: Ipv4Net,
    advertise: Option<Ipv4Addr>,
    port: u16,
) -> Result<(), ApiStatus> {
    let Some(cluster_ip) = kubernetes_cluster_ip(service_cidr) else {
        return Err(ApiStatus::internal(format!("the Service CIDR {service_cidr} has no address")));
    };
    for (group, plural, want) in objects(cluster_ip, advertise, port) {
        let r = resources::find(group, "v1", plural).expect("built-in resource");
        match registry.get(r, "default", "kubernetes").await {
            Err(e) if e.code == 404 => {
                registry.create(r, "default", want, WriteOptions::default()).await?;
            }
            Err(e) => return Err(e),
            Ok(mut have) => {
                let mut changed = false;
                for field in ["spec", "subsets", "ports", "endpoints", "addressType"] {
                    let Some(w) = want.get(field) else { continue };
                    // Fields the server fills (nodePort, sessionAffinity...) are kept.
                    let merged = merge(have.get(field).cloned().unwrap_or(Value::Null), w);
                    if have.get(field) != Some(&merged) {
                        have[field] = merged;
                        changed = true;
                    }
                }
                if changed {
                    registry
                        .update(r, "default", "kubernetes", have, Part::Main, WriteOptions::default())
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// `want` laid over `have`: objects merge key by key, everything else is replaced.
fn merge(have: Value, want: &Value) -> Value {
    match (have, want) {
        (Value::Object(mut h), Value::Object(w)) => {
            for (k, v) in w {
                let old = h.remove(k).unwrap_or(Value::Null);
                h.insert(k.clone(), merge(old, v));
            }
            Value::Object(h)
        }
        (_, w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::apiserver::alloc::AllocConfig;
    use crate::master::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_kubernetes_service_points_at_the_api_server_and_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        let reg = Registry::new(Arc::new(store), AllocConfig::default());
        reg.ensure_namespaces().await.unwrap();
        let cidr: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let ip = Some(Ipv4Addr::new(10, 250, 0, 2));
        ensure_kubernetes_service(&reg, cidr, ip, 6443).await.unwrap();
        let svc = resources::find("", "v1", "services").unwrap();
        let s = reg.get(svc, "default", "kubernetes").await.unwrap();
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 6443);
        let slices = resources::find("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let e = reg.get(slices, "default", "kubernetes").await.unwrap();
        assert_eq!(e["endpoints"][0]["addresses"][0], "10.250.0.2");
        // A new address on restart is written over the old one; a second run changes nothing.
        ensure_kubernetes_service(&reg, cidr, Some(Ipv4Addr::new(10, 250, 0, 3)), 6443).await.unwrap();
        let e = reg.get(slices, "default", "kubernetes").await.unwrap();
        assert_eq!(e["endpoints"][0]["addresses"][0], "10.250.0.3");
        let rv = reg.get(svc, "default", "kubernetes").await.unwrap()["metadata"]["resourceVersion"].clone();
        ensure_kubernetes_service(&reg, cidr, Some(Ipv4Addr::new(10, 250, 0, 3)), 6443).await.unwrap();
        assert_eq!(reg.get(svc, "default", "kubernetes").await.unwrap()["metadata"]["resourceVersion"], rv);
        assert_eq!(kubernetes_sans(cidr).last().map(String::as_str), Some("10.96.0.1"));
    }
}
