//! Service allocation at admission (pure): ClusterIP from the service CIDR, NodePorts unique in the
//! node-port range, LoadBalancer ingress IP from a configured pool. The API server calls
//! [`ServiceAllocator::allocate`] on create/update with the other Services of the cluster.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

/// Why allocation failed; the text matches kube-apiserver's field errors (422 Invalid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "spec.ports[{index}].nodePort: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {min}-{max}"
    )]
    NodePortOutOfRange { index: usize, port: i32, min: u16, max: u16 },
    #[error("spec.ports[{index}].nodePort: Invalid value: {port}: provided port is already allocated")]
    NodePortTaken { index: usize, port: i32 },
    #[error("spec.ports[{index}].nodePort: Internal error: range is full")]
    NodePortsExhausted { index: usize },
    #[error(
        "spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {cidr}"
    )]
    ClusterIpOutOfRange { ip: String, cidr: Ipv4Net },
    #[error(
        "spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
    )]
    ClusterIpTaken { ip: String },
    #[error("spec.clusterIPs: Internal error: failed to allocate a serviceIP: range is full")]
    ClusterIpsExhausted,
}

/// Allocation settings (from `--service-cidr`, `--node-port-range`, `--lb-pool`).
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    pub service_cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
    pub lb_pool: Vec<Ipv4Addr>,
}

impl Default for ServiceAllocator {
    fn default() -> Self {
        ServiceAllocator {
            service_cidr: "10.96.0.0/12".parse().unwrap_or_default(),
            node_ports: 30000..=32767,
            lb_pool: Vec::new(),
        }
    }
}

fn service_type(svc: &Service) -> &str {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP")
}

fn same(a: &Service, b: &Service) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

impl ServiceAllocator {
    /// Fill in `spec.clusterIP(s)`, `ports[].nodePort` and, for LoadBalancers, `status.loadBalancer.ingress`,
    /// keeping values already set (validated). `existing` are the stored Services (the one being
    /// updated, if present, is ignored).
    pub fn allocate(&self, svc: &mut Service, existing: &[Service]) -> Result<(), AllocError> {
        let others: Vec<&Service> = existing.iter().filter(|o| !same(o, svc)).collect();
        let kind = service_type(svc).to_string();
        let spec = svc.spec.get_or_insert_default();
        if kind != "ExternalName" {
            let used: HashSet<&str> =
                others.iter().filter_map(|o| o.spec.as_ref().and_then(|s| s.cluster_ip.as_deref())).collect();
            match spec.cluster_ip.as_deref() {
                Some("None") => {}
                Some(ip) if !ip.is_empty() => {
                    let parsed: Option<Ipv4Addr> = ip.parse().ok();
                    if !parsed.is_some_and(|p| self.service_cidr.contains(&p)) {
                        return Err(AllocError::ClusterIpOutOfRange {
                            ip: ip.into(),
                            cidr: self.service_cidr,
                        });
                    }
                    if used.contains(ip) {
                        return Err(AllocError::ClusterIpTaken { ip: ip.into() });
                    }
                }
                _ => {
                    let ip = self
                        .service_cidr
                        .hosts()
                        .map(|h| h.to_string())
                        .find(|h| !used.contains(h.as_str()))
                        .ok_or(AllocError::ClusterIpsExhausted)?;
                    spec.cluster_ip = Some(ip);
                }
            }
            spec.cluster_ips = spec.cluster_ip.clone().map(|ip| vec![ip]);
        }
        if kind == "NodePort" || kind == "LoadBalancer" {
            let mut used: HashSet<i32> = others
                .iter()
                .flat_map(|o| o.spec.iter().flat_map(|s| s.ports.iter().flatten()))
                .filter_map(|p| p.node_port)
                .collect();
            let (min, max) = (*self.node_ports.start(), *self.node_ports.end());
            for (index, port) in spec.ports.iter_mut().flatten().enumerate() {
                match port.node_port {
                    Some(n) if n != 0 => {
                        if n < i32::from(min) || n > i32::from(max) {
                            return Err(AllocError::NodePortOutOfRange { index, port: n, min, max });
                        }
                        if !used.insert(n) {
                            return Err(AllocError::NodePortTaken { index, port: n });
                        }
                    }
                    _ => {
                        let free = (i32::from(min)..=i32::from(max))
                            .find(|p| !used.contains(p))
                            .ok_or(AllocError::NodePortsExhausted { index })?;
                        used.insert(free);
                        port.node_port = Some(free);
                    }
                }
            }
        } else {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = None;
            }
        }
        if kind == "LoadBalancer" {
            let has_ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| !i.is_empty());
            if !has_ingress {
                let used: HashSet<String> = others
                    .iter()
                    .flat_map(|o| o.status.iter())
                    .flat_map(|s| s.load_balancer.iter())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.clone())
                    .collect();
                let wanted = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.clone());
                let ip = match wanted {
                    Some(ip) if !ip.is_empty() => Some(ip),
                    _ => self.lb_pool.iter().map(|a| a.to_string()).find(|a| !used.contains(a)),
                };
                // An empty or exhausted pool leaves the Service pending, like a cluster without a cloud LB.
                if let Some(ip) = ip {
                    svc.status = Some(ServiceStatus {
                        load_balancer: Some(LoadBalancerStatus {
                            ingress: Some(vec![LoadBalancerIngress {
                                ip: Some(ip),
                                ip_mode: Some("VIP".into()),
                                ..Default::default()
                            }]),
                        }),
                        ..svc.status.clone().unwrap_or_default()
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn alloc() -> ServiceAllocator {
        ServiceAllocator {
            service_cidr: "10.96.0.0/30".parse().unwrap(),
            node_ports: 30000..=30001,
            lb_pool: vec!["192.168.1.240".parse().unwrap()],
        }
    }

    fn svc(name: &str, kind: &str, node_port: Option<i32>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(kind.into()),
                ports: Some(vec![ServicePort { port: 80, node_port, ..Default::default() }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn cluster_ips_are_unique_until_the_range_is_full() {
        let a = alloc();
        let mut s1 = svc("a", "ClusterIP", None);
        a.allocate(&mut s1, &[]).unwrap();
        assert_eq!(s1.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
        let mut s2 = svc("b", "ClusterIP", None);
        a.allocate(&mut s2, std::slice::from_ref(&s1)).unwrap();
        assert_eq!(s2.spec.as_ref().unwrap().cluster_ips, Some(vec!["10.96.0.2".to_string()]));
        let mut s3 = svc("c", "ClusterIP", None);
        assert_eq!(a.allocate(&mut s3, &[s1.clone(), s2]), Err(AllocError::ClusterIpsExhausted));
        let mut taken = svc("d", "ClusterIP", None);
        taken.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
        assert!(matches!(
            a.allocate(&mut taken, std::slice::from_ref(&s1)),
            Err(AllocError::ClusterIpTaken { .. })
        ));
        // Updating the same Service keeps its own IP.
        let mut again = s1.clone();
        a.allocate(&mut again, std::slice::from_ref(&s1)).unwrap();
        assert_eq!(again, s1);
    }

    #[test]
    fn node_ports_are_checked_and_allocated() {
        let a = alloc();
        let mut s1 = svc("a", "NodePort", None);
        a.allocate(&mut s1, &[]).unwrap();
        assert_eq!(s1.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port, Some(30000));
        let mut out = svc("b", "NodePort", Some(80));
        let err = a.allocate(&mut out, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30001"
        );
        let mut dup = svc("c", "NodePort", Some(30000));
        assert_eq!(
            a.allocate(&mut dup, std::slice::from_ref(&s1)).unwrap_err().to_string(),
            "spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated"
        );
    }

    #[test]
    fn load_balancers_get_an_ingress_ip_from_the_pool() {
        let a = alloc();
        let mut lb = svc("lb", "LoadBalancer", None);
        a.allocate(&mut lb, &[]).unwrap();
        let ingress = lb.status.as_ref().unwrap().load_balancer.as_ref().unwrap().ingress.as_ref().unwrap();
        assert_eq!(ingress[0].ip.as_deref(), Some("192.168.1.240"));
        assert!(lb.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port.is_some());
        let mut second = svc("lb2", "LoadBalancer", None);
        a.allocate(&mut second, std::slice::from_ref(&lb)).unwrap();
        assert!(second.status.is_none(), "pool exhausted: stays pending");
    }
}
