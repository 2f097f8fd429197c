//! Service admission: ClusterIP from the service CIDR, NodePorts from the node-port range and
//! LoadBalancer ingress IPs from a pool. Pure: it sees the other services and the new one.

use crate::api::validation::FieldError;
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Where service addresses come from.
#[derive(Debug, Clone)]
pub struct AllocConfig {
    pub service_cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
    pub lb_pool: Vec<Ipv4Addr>,
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig {
            service_cidr: "10.96.0.0/12".parse().expect("literal"),
            node_ports: 30000..=32767,
            lb_pool: Vec::new(),
        }
    }
}

/// What other services already hold.
#[derive(Debug, Default)]
struct Used {
    ips: HashSet<String>,
    ports: HashSet<i64>,
    lb: HashSet<String>,
}

fn used_by(others: &[Value]) -> Used {
    let mut u = Used::default();
    for s in others {
        if let Some(ip) = s.pointer("/spec/clusterIP").and_then(Value::as_str) {
            u.ips.insert(ip.to_string());
        }
        for p in s.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                u.ports.insert(n);
            }
        }
        for i in s.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).into_iter().flatten() {
            if let Some(ip) = i.get("ip").and_then(Value::as_str) {
                u.lb.insert(ip.to_string());
            }
        }
    }
    u
}

/// Fills clusterIP(s), nodePorts and LB ingress of `svc` (a defaulted Service), given the other
/// services. `old` is the stored version on update (its allocations are kept).
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    others: &[Value],
    cfg: &AllocConfig,
) -> Result<(), Vec<FieldError>> {
    let used = used_by(others);
    let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let mut errs = Vec::new();
    // ClusterIP: keep the old one, honour a requested one, else the first free address.
    let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(String::from);
    let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
    let ip = match (&old_ip, requested.as_str()) {
        (Some(old), "") => Some(old.clone()),
        (Some(old), req) if req != old => {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!(req), "may not change once set"));
            None
        }
        (_, "None") => Some("None".into()),
        (None, "") => {
            // The first ten addresses are left to Services that ask for one: the `kubernetes`
            // Service's (the first) and the cluster DNS's (the tenth), as kubeadm places them.
            let hosts = cfg.service_cidr.hosts().skip(10);
            let free = hosts.map(|h| h.to_string()).find(|h| !used.ips.contains(h));
            if free.is_none() {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([]),
                    "failed to allocate IP: range is full",
                ));
            }
            free
        }
        (_, req) => {
            let parsed: Option<Ipv4Addr> = req.parse().ok();
            match parsed {
                Some(a) if !cfg.service_cidr.contains(&a) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([req]),
                        &format!("failed to allocate IP {req}: the provided IP ({req}) is not in the valid range. The range of valid IPs is {}", cfg.service_cidr),
                    ));
                    None
                }
                Some(_) if used.ips.contains(req) && old_ip.as_deref() != Some(req) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([req]),
                        &format!("failed to allocate IP {req}: provided IP is already allocated"),
                    ));
                    None
                }
                Some(_) => Some(req.to_string()),
                None => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIP",
                        &json!(req),
                        "must be a valid IP address",
                    ));
                    None
                }
            }
        }
    };
    if let (Some(ip), Some(spec)) = (ip, svc.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    // NodePorts.
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let old_ports: Vec<Value> =
        old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut taken_now: HashSet<i64> = HashSet::new();
    if let Some(Value::Array(ports)) = svc.pointer_mut("/spec/ports") {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            if !wants_node_ports {
                p.remove("nodePort");
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            let mine =
                |n: i64| old_ports.iter().any(|op| op.get("nodePort").and_then(Value::as_i64) == Some(n));
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(n) => {
                    let in_range = u16::try_from(n).is_ok_and(|n| cfg.node_ports.contains(&n));
                    if !in_range {
                        errs.push(FieldError::invalid(
                            field,
                            &json!(n),
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                cfg.node_ports.start(),
                                cfg.node_ports.end()
                            ),
                        ));
                    } else if (used.ports.contains(&n) && !mine(n)) || taken_now.contains(&n) {
                        errs.push(FieldError::invalid(
                            field,
                            &json!(n),
                            "provided port is already allocated",
                        ));
                    } else {
                        taken_now.insert(n);
                    }
                }
                None => {
                    let port = p.get("port").and_then(Value::as_i64);
                    let reuse = old_ports
                        .iter()
                        .find(|op| op.get("port").and_then(Value::as_i64) == port)
                        .and_then(|op| op.get("nodePort").and_then(Value::as_i64))
                        .filter(|n| !taken_now.contains(n));
                    let start = *cfg.node_ports.start() as i64;
                    let len = (*cfg.node_ports.end() as i64) - start + 1;
                    let offset = rand::random_range(0..len);
                    let free = reuse.or_else(|| {
                        (0..len)
                            .map(|k| start + (offset + k) % len)
                            .find(|n| !used.ports.contains(n) && !taken_now.contains(n))
                    });
                    match free {
                        Some(n) => {
                            taken_now.insert(n);
                            p.insert("nodePort".into(), json!(n));
                        }
                        None => {
                            errs.push(FieldError::invalid(field, &json!(0), "range of node ports is full"))
                        }
                    }
                }
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    // LoadBalancer ingress.
    if ty == "LoadBalancer" {
        let has = svc
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !has && let Some(ip) = cfg.lb_pool.iter().map(|a| a.to_string()).find(|a| !used.lb.contains(a)) {
            svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}});
        }
    } else if let Some(status) = svc.get_mut("status") {
        status["loadBalancer"] = json!({});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AllocConfig {
        AllocConfig { lb_pool: vec!["10.0.0.100".parse().unwrap()], ..Default::default() }
    }

    #[test]
    fn allocates_and_rejects() {
        let mut a = json!({"spec":{"type":"LoadBalancer","ports":[{"port":80}]},"status":{}});
        allocate(&mut a, None, &[], &cfg()).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.11");
        let np = a["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np));
        assert_eq!(a["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.100");
        let mut b = json!({"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":np}]}});
        let e = allocate(&mut b, None, std::slice::from_ref(&a), &cfg()).unwrap_err();
        assert_eq!(
            e[0].message,
            format!("spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated")
        );
        let mut c = json!({"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":40000}]}});
        let e = allocate(&mut c, None, &[], &cfg()).unwrap_err();
        assert!(e[0].message.contains("not in the valid range"));
        let mut d = json!({"spec":{"type":"ClusterIP","ports":[{"port":80}]}});
        allocate(&mut d, None, std::slice::from_ref(&a), &cfg()).unwrap();
        assert_eq!(d["spec"]["clusterIP"], "10.96.0.12");
        // Updating keeps the allocations.
        let mut a2 =
            json!({"spec":{"type":"LoadBalancer","ports":[{"port":80}]},"status":a["status"].clone()});
        allocate(&mut a2, Some(&a), &[], &cfg()).unwrap();
        assert_eq!(a2["spec"]["ports"][0]["nodePort"], np);
        assert_eq!(a2["spec"]["clusterIP"], "10.96.0.11");
    }
    #[test]
    fn full_ranges_are_reported_and_an_empty_pool_leaves_the_lb_pending() {
        // A /28 has 14 hosts; the first 10 are reserved, so 4 are allocatable.
        let small = AllocConfig {
            service_cidr: "10.96.0.0/28".parse().unwrap(),
            node_ports: 30000..=30000,
            lb_pool: vec!["10.0.0.100".parse().unwrap()],
        };
        let mut others = Vec::new();
        for _ in 0..4 {
            let mut s = json!({"spec":{"type":"ClusterIP","ports":[{"port":80}]}});
            allocate(&mut s, None, &others, &small).unwrap();
            others.push(s);
        }
        let mut full = json!({"spec":{"type":"ClusterIP","ports":[{"port":80}]}});
        let e = allocate(&mut full, None, &others, &small).unwrap_err();
        assert!(e[0].message.contains("range is full"), "{}", e[0].message);

        let mut lb = json!({"spec":{"type":"LoadBalancer","ports":[{"port":80}]},"status":{}});
        allocate(&mut lb, None, &[], &small).unwrap();
        assert_eq!(lb["spec"]["ports"][0]["nodePort"], 30000);
        let mut second = json!({"spec":{"type":"LoadBalancer","ports":[{"port":80}]},"status":{}});
        let e = allocate(&mut second, None, std::slice::from_ref(&lb), &small).unwrap_err();
        assert_eq!(e[0].message, "spec.ports[0].nodePort: Invalid value: 0: range of node ports is full");
        let roomy = AllocConfig { node_ports: 30000..=30001, ..small };
        allocate(&mut second, None, std::slice::from_ref(&lb), &roomy).unwrap();
        assert!(second["status"].get("loadBalancer").is_none(), "pool exhausted: stays pending");
    }
}
