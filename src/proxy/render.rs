//! Renders Services and endpoints as `iptables-restore --noflush` input with kube-proxy's layout.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::chains::{self, FixedChains};
use super::types::{Endpoint, ProxyConfig, Service, ServiceEndpoints, ServicePort};

/// The restore text plus the per-service chains it declares (to find stale ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub nat_chains: BTreeSet<String>,
}

/// Renders the full rule set (filter and nat) for `services` and their `endpoints`.
pub fn render(services: &[Service], endpoints: &[ServiceEndpoints], config: &ProxyConfig) -> String {
    render_full(services, endpoints, config, &[]).text
}

/// Like [`render`], additionally flushing and deleting `stale_nat_chains` (per-service chains
/// left from an earlier sync that are no longer wanted).
pub fn render_full(
    services: &[Service],
    endpoints: &[ServiceEndpoints],
    config: &ProxyConfig,
    stale_nat_chains: &[String],
) -> Rendered {
    let p = config.prefix.as_str();
    let fixed = FixedChains::new(p);
    let mark = config.mark();
    let mut filter = Vec::new();
    let mut nat_chain_lines = Vec::new();
    let mut nat = Vec::new();
    let mut nat_chains = BTreeSet::new();

    let mut sorted: Vec<&Service> = services.iter().filter(|s| s.cluster_ip.is_some()).collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut nodeport_rules = Vec::new();

    for svc in sorted {
        let Some(cluster_ip) = svc.cluster_ip else { continue };
        let mut ports: Vec<&ServicePort> = svc.ports.iter().collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        for port in ports {
            let spn = chains::service_port_name(&svc.namespace, &svc.name, &port.name);
            let proto = port.protocol.as_str();
            let m = format!("-m {proto} -p {proto}");
            let ready = ready_endpoints(endpoints, svc, port);
            if ready.is_empty() {
                let reject = "-j REJECT";
                let c = format!("-m comment --comment \"{spn} has no endpoints\"");
                filter.push(format!(
                    "-A {} {c} {m} -d {cluster_ip}/32 --dport {} {reject}",
                    fixed.services, port.port
                ));
                for lb in &svc.load_balancer_ips {
                    filter.push(format!(
                        "-A {} {c} {m} -d {lb}/32 --dport {} {reject}",
                        fixed.external_services, port.port
                    ));
                }
                if let Some(np) = port.node_port {
                    filter.push(format!(
                        "-A {} {c} -m addrtype --dst-type LOCAL {m} --dport {np} {reject}",
                        fixed.external_services
                    ));
                }
                continue;
            }

            let svc_chain = chains::svc_chain(p, &spn, port.protocol);
            let ext_chain = chains::ext_chain(p, &spn, port.protocol);
            let has_external = port.node_port.is_some() || !svc.load_balancer_ips.is_empty();
            nat_chains.insert(svc_chain.clone());
            if has_external {
                nat_chains.insert(ext_chain.clone());
            }

            // Entry rules.
            nat.push(format!(
                "-A {} -m comment --comment \"{spn} cluster IP\" {m} -d {cluster_ip}/32 --dport {} -j {svc_chain}",
                fixed.services, port.port
            ));
            for lb in &svc.load_balancer_ips {
                nat.push(format!(
                    "-A {} -m comment --comment \"{spn} loadbalancer IP\" {m} -d {lb}/32 --dport {} -j {ext_chain}",
                    fixed.services, port.port
                ));
            }
            if let Some(np) = port.node_port {
                nodeport_rules.push(format!(
                    "-A {} -m comment --comment {spn} {m} --dport {np} -j {ext_chain}",
                    fixed.nodeports
                ));
            }

            // Service chain: masquerade off-cluster sources, then pick an endpoint.
            let mut svc_rules = Vec::new();
            if let Some(cidr) = config.cluster_cidr {
                svc_rules.push(format!(
                    "-A {svc_chain} -m comment --comment \"{spn} cluster IP\" {m} -d {cluster_ip}/32 --dport {} ! -s {} -j {}",
                    port.port,
                    cidr.trunc(),
                    fixed.mark_masq
                ));
            }
            let n = ready.len();
            let mut sep_rules = Vec::new();
            for (i, (ip, target)) in ready.iter().enumerate() {
                let endpoint = format!("{ip}:{target}");
                let sep = chains::sep_chain(p, &spn, port.protocol, &endpoint);
                nat_chains.insert(sep.clone());
                let probability = if i + 1 < n {
                    format!(" -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64)
                } else {
                    String::new()
                };
                svc_rules.push(format!(
                    "-A {svc_chain} -m comment --comment \"{spn} -> {endpoint}\"{probability} -j {sep}"
                ));
                sep_rules
                    .push(format!("-A {sep} -m comment --comment {spn} -s {ip}/32 -j {}", fixed.mark_masq));
                sep_rules.push(format!(
                    "-A {sep} -m comment --comment {spn} {m} -j DNAT --to-destination {endpoint}"
                ));
            }
            nat.extend(svc_rules);
            if has_external {
                nat.push(format!(
                    "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j {}",
                    fixed.mark_masq
                ));
                nat.push(format!("-A {ext_chain} -j {svc_chain}"));
            }
            nat.extend(sep_rules);
        }
    }
    nat.push(format!(
        "-A {} -m comment --comment \"rkube service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {}",
        fixed.services, fixed.nodeports
    ));
    nat.extend(nodeport_rules);

    for chain in &nat_chains {
        nat_chain_lines.push(format!(":{chain} - [0:0]"));
    }
    let stale: Vec<&String> = stale_nat_chains.iter().filter(|c| !nat_chains.contains(*c)).collect();
    for chain in &stale {
        nat_chain_lines.push(format!(":{chain} - [0:0]"));
    }

    let mut out = String::new();
    let _ = writeln!(out, "*filter");
    for chain in [&fixed.services, &fixed.external_services, &fixed.forward] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for line in &filter {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "-A {} -m comment --comment \"rkube forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT",
        fixed.forward
    );
    let _ = writeln!(
        out,
        "-A {} -m comment --comment \"rkube forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        fixed.forward
    );
    let _ = writeln!(out, "COMMIT");
    let _ = writeln!(out, "*nat");
    for chain in [&fixed.services, &fixed.nodeports, &fixed.postrouting, &fixed.mark_masq] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for line in &nat_chain_lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "-A {} -m mark ! --mark {mark}/{mark} -j RETURN", fixed.postrouting);
    let _ = writeln!(out, "-A {} -j MARK --xor-mark {mark}", fixed.postrouting);
    let random = if config.random_fully { " --random-fully" } else { "" };
    let _ = writeln!(
        out,
        "-A {} -m comment --comment \"rkube service traffic requiring SNAT\" -j MASQUERADE{random}",
        fixed.postrouting
    );
    let _ = writeln!(out, "-A {} -j MARK --or-mark {mark}", fixed.mark_masq);
    for line in &nat {
        let _ = writeln!(out, "{line}");
    }
    // Service and external chains first: they reference endpoint chains.
    let (seps, others): (Vec<&&String>, Vec<&&String>) = stale.iter().partition(|c| c.contains("-SEP-"));
    for chain in others.into_iter().chain(seps) {
        let _ = writeln!(out, "-X {chain}");
    }
    let _ = writeln!(out, "COMMIT");
    Rendered { text: out, nat_chains }
}

/// Ready endpoints of `port` as (ip, backend port), sorted and de-duplicated.
fn ready_endpoints(all: &[ServiceEndpoints], svc: &Service, port: &ServicePort) -> Vec<(Ipv4Addr, u16)> {
    let set: BTreeSet<(Ipv4Addr, u16)> = all
        .iter()
        .filter(|e| e.namespace == svc.namespace && e.service == svc.name && e.port_name == port.name)
        .flat_map(|e| e.endpoints.iter())
        .filter(|e: &&Endpoint| e.ready)
        .map(|e| (e.ip, if e.port == 0 { port.target_port } else { e.port }))
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::types::Protocol;

    fn web() -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: Some("10.96.0.10".parse().unwrap()),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: 8080,
                node_port: Some(30080),
            }],
            load_balancer_ips: vec!["192.168.77.200".parse().unwrap()],
        }
    }

    fn dns() -> Service {
        Service {
            namespace: "kube-system".into(),
            name: "dns".into(),
            cluster_ip: Some("10.96.0.11".parse().unwrap()),
            ports: vec![ServicePort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
                target_port: 53,
                node_port: None,
            }],
            load_balancer_ips: vec![],
        }
    }

    fn web_endpoints() -> ServiceEndpoints {
        let ep = |ip: &str, port, ready| Endpoint { ip: ip.parse().unwrap(), port, ready };
        ServiceEndpoints {
            namespace: "default".into(),
            service: "web".into(),
            port_name: "http".into(),
            endpoints: vec![
                ep("10.244.1.4", 8080, true),
                ep("10.244.1.2", 0, true),
                ep("10.244.1.3", 8080, true),
                ep("10.244.1.5", 8080, false),
            ],
        }
    }

    fn config() -> ProxyConfig {
        ProxyConfig { cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), ..ProxyConfig::default() }
    }

    #[test]
    fn golden_clusterip_nodeport_lb_and_no_endpoints() {
        let text = render(&[web(), dns()], &[web_endpoints()], &config());
        let svc = chains::svc_chain("RKUBE", "default/web:http", Protocol::Tcp);
        let ext = chains::ext_chain("RKUBE", "default/web:http", Protocol::Tcp);
        let sep = |e: &str| chains::sep_chain("RKUBE", "default/web:http", Protocol::Tcp, e);
        let (a, b, c) = (sep("10.244.1.2:8080"), sep("10.244.1.3:8080"), sep("10.244.1.4:8080"));
        let mut declared = [svc.clone(), ext.clone(), a.clone(), b.clone(), c.clone()];
        declared.sort();
        let declared: String = declared.iter().map(|n| format!(":{n} - [0:0]\n")).collect();
        let expected = format!(
            "\
*filter
:RKUBE-SERVICES - [0:0]
:RKUBE-EXTERNAL-SERVICES - [0:0]
:RKUBE-FORWARD - [0:0]
-A RKUBE-SERVICES -m comment --comment \"kube-system/dns:dns has no endpoints\" -m udp -p udp -d 10.96.0.11/32 --dport 53 -j REJECT
-A RKUBE-FORWARD -m comment --comment \"rkube forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A RKUBE-FORWARD -m comment --comment \"rkube forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:RKUBE-SERVICES - [0:0]
:RKUBE-NODEPORTS - [0:0]
:RKUBE-POSTROUTING - [0:0]
:RKUBE-MARK-MASQ - [0:0]
{declared}\
-A RKUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A RKUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A RKUBE-POSTROUTING -m comment --comment \"rkube service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A RKUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A RKUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j {svc}
-A RKUBE-SERVICES -m comment --comment \"default/web:http loadbalancer IP\" -m tcp -p tcp -d 192.168.77.200/32 --dport 80 -j {ext}
-A {svc} -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 ! -s 10.244.0.0/16 -j RKUBE-MARK-MASQ
-A {svc} -m comment --comment \"default/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.3333333333 -j {a}
-A {svc} -m comment --comment \"default/web:http -> 10.244.1.3:8080\" -m statistic --mode random --probability 0.5000000000 -j {b}
-A {svc} -m comment --comment \"default/web:http -> 10.244.1.4:8080\" -j {c}
-A {ext} -m comment --comment \"masquerade traffic for default/web:http external destinations\" -j RKUBE-MARK-MASQ
-A {ext} -j {svc}
-A {a} -m comment --comment default/web:http -s 10.244.1.2/32 -j RKUBE-MARK-MASQ
-A {a} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080
-A {b} -m comment --comment default/web:http -s 10.244.1.3/32 -j RKUBE-MARK-MASQ
-A {b} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.3:8080
-A {c} -m comment --comment default/web:http -s 10.244.1.4/32 -j RKUBE-MARK-MASQ
-A {c} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.4:8080
-A RKUBE-SERVICES -m comment --comment \"rkube service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j RKUBE-NODEPORTS
-A RKUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30080 -j {ext}
COMMIT
"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn no_endpoints_rejects_external_paths_too() {
        let text = render(&[web()], &[], &config());
        assert!(text.contains(
            "-A RKUBE-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no endpoints\" -m tcp -p tcp -d 192.168.77.200/32 --dport 80 -j REJECT"
        ));
        assert!(text.contains("-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT"));
        assert!(!text.contains("-SVC-"));
    }

    #[test]
    fn headless_services_get_no_rules_and_output_is_deterministic() {
        let mut headless = web();
        headless.cluster_ip = None;
        let text = render(&[headless], &[web_endpoints()], &config());
        assert!(!text.contains("default/web"));
        let one = render(&[web(), dns()], &[web_endpoints()], &config());
        let two = render(&[dns(), web()], &[web_endpoints()], &config());
        assert_eq!(one, two);
    }

    #[test]
    fn stale_chains_are_flushed_and_deleted_after_rules() {
        let stale = vec!["RKUBE-SEP-OLD".to_string(), "RKUBE-SVC-OLD".to_string()];
        let rendered = render_full(&[web()], &[web_endpoints()], &config(), &stale);
        assert!(rendered.text.contains(":RKUBE-SVC-OLD - [0:0]\n"));
        assert!(rendered.text.ends_with("-X RKUBE-SVC-OLD\n-X RKUBE-SEP-OLD\nCOMMIT\n"));
        assert_eq!(rendered.nat_chains.len(), 5);
        // A wanted chain is never deleted even if listed as existing.
        let wanted: Vec<String> = rendered.nat_chains.iter().cloned().collect();
        let again = render_full(&[web()], &[web_endpoints()], &config(), &wanted);
        assert!(!again.text.contains("-X "));
    }

    #[test]
    fn single_endpoint_has_no_probability_and_no_masq_without_cidr() {
        let eps = ServiceEndpoints {
            endpoints: vec![Endpoint { ip: "10.1.0.2".parse().unwrap(), port: 80, ready: true }],
            ..web_endpoints()
        };
        let config = ProxyConfig { random_fully: false, ..ProxyConfig::default() };
        let text = render(&[web()], &[eps], &config);
        assert!(!text.contains("statistic"));
        assert!(!text.contains("! -s"));
        assert!(text.contains("-j MASQUERADE\n"));
    }
}
