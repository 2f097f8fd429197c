//! Renders Services and endpoints as `iptables-restore --noflush` input with kube-proxy's layout.
//!
//! [`build`] computes the rules as a [`RuleSet`]: the top-level chains (always rewritten) and one
//! block of chains per service port. [`format`] turns all of it, or only the blocks that changed
//! (partial sync, as kube-proxy does since 1.26), into restore input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::chains::{self, FixedChains};
use super::types::{Endpoint, ProxyConfig, Service, ServiceEndpoints, ServicePort};

/// The chains and rules of one service port (its SVC, EXT and SEP chains).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceBlock {
    pub chains: Vec<String>,
    pub rules: Vec<String>,
    /// Service IPs of a UDP port: their conntrack entries go stale when endpoints go away.
    pub udp_destinations: Vec<Ipv4Addr>,
}

/// Every rule the proxy wants, split so that unchanged services can be skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules of the fixed filter chains (REJECT for services without endpoints).
    pub filter: Vec<String>,
    /// Rules of the nat SERVICES and NODEPORTS chains.
    pub nat_entry: Vec<String>,
    /// Per service port (`ns/name:port`), its own chains.
    pub services: BTreeMap<String, ServiceBlock>,
}

impl RuleSet {
    /// All per-service nat chains.
    pub fn nat_chains(&self) -> BTreeSet<String> {
        self.services.values().flat_map(|b| b.chains.iter().cloned()).collect()
    }
}

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
    let rules = build(services, endpoints, config);
    Rendered { text: format(&rules, config, None, stale_nat_chains), nat_chains: rules.nat_chains() }
}

/// Computes every rule for `services` and their `endpoints`.
pub fn build(services: &[Service], endpoints: &[ServiceEndpoints], config: &ProxyConfig) -> RuleSet {
    let p = config.prefix.as_str();
    let fixed = FixedChains::new(p);
    let mut set = RuleSet::default();
    let mut nodeport_rules = Vec::new();
    let index = EndpointIndex::new(endpoints);

    let mut sorted: Vec<&Service> = services.iter().filter(|s| s.cluster_ip.is_some()).collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for svc in sorted {
        let Some(cluster_ip) = svc.cluster_ip else { continue };
        let mut ports: Vec<&ServicePort> = svc.ports.iter().collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        for port in ports {
            let spn = chains::service_port_name(&svc.namespace, &svc.name, &port.name);
            let proto = port.protocol.as_str();
            let m = format!("-m {proto} -p {proto}");
            let ready = index.ready(svc, port);
            if ready.is_empty() {
                let reject = "-j REJECT";
                let c = format!("-m comment --comment \"{spn} has no endpoints\"");
                set.filter.push(format!(
                    "-A {} {c} {m} -d {cluster_ip}/32 --dport {} {reject}",
                    fixed.services, port.port
                ));
                for lb in &svc.load_balancer_ips {
                    set.filter.push(format!(
                        "-A {} {c} {m} -d {lb}/32 --dport {} {reject}",
                        fixed.external_services, port.port
                    ));
                }
                if let Some(np) = port.node_port {
                    set.filter.push(format!(
                        "-A {} {c} -m addrtype --dst-type LOCAL {m} --dport {np} {reject}",
                        fixed.external_services
                    ));
                }
                continue;
            }

            let svc_chain = chains::svc_chain(p, &spn, port.protocol);
            let ext_chain = chains::ext_chain(p, &spn, port.protocol);
            let has_external = port.node_port.is_some() || !svc.load_balancer_ips.is_empty();
            let mut block = ServiceBlock { chains: vec![svc_chain.clone()], ..ServiceBlock::default() };
            if port.protocol == super::types::Protocol::Udp {
                block.udp_destinations =
                    std::iter::once(cluster_ip).chain(svc.load_balancer_ips.iter().copied()).collect();
            }
            if has_external {
                block.chains.push(ext_chain.clone());
            }

            // Endpoints on this node, and the chain that picks among them (the SVL chain), wanted
            // by a Local internal or external traffic policy.
            let local: Vec<&(Ipv4Addr, u16, bool)> = ready.iter().filter(|e| e.2).collect();
            let svl = chains::svl_chain(p, &spn, port.protocol);
            let wants_svl = svc.internal_traffic_local || (has_external && svc.external_traffic_local);
            // Cluster IP traffic goes to every endpoint, or with a Local internal policy to this
            // node's only (dropped when it has none, as kube-proxy does).
            let internal_chain = if svc.internal_traffic_local { &svl } else { &svc_chain };
            if svc.internal_traffic_local && local.is_empty() {
                set.filter.push(format!(
                    "-A {} -m comment --comment \"{spn} has no local endpoints\" {m} -d {cluster_ip}/32 --dport {} -j DROP",
                    fixed.services, port.port
                ));
            } else {
                set.nat_entry.push(format!(
                    "-A {} -m comment --comment \"{spn} cluster IP\" {m} -d {cluster_ip}/32 --dport {} -j {internal_chain}",
                    fixed.services, port.port
                ));
            }
            for lb in &svc.load_balancer_ips {
                set.nat_entry.push(format!(
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

            // Internal traffic chain: masquerade off-cluster sources, then pick an endpoint.
            if let Some(cidr) =
                config.cluster_cidr.filter(|_| !(svc.internal_traffic_local && local.is_empty()))
            {
                block.rules.push(format!(
                    "-A {internal_chain} -m comment --comment \"{spn} cluster IP\" {m} -d {cluster_ip}/32 --dport {} ! -s {} -j {}",
                    port.port,
                    cidr.trunc(),
                    fixed.mark_masq
                ));
            }
            // The local endpoints (after the masquerade rule when it is the internal chain).
            if wants_svl && !local.is_empty() {
                block.chains.push(svl.clone());
                for (i, (ip, target, _)) in local.iter().enumerate() {
                    let endpoint = format!("{ip}:{target}");
                    let sep = chains::sep_chain(p, &spn, port.protocol, &endpoint);
                    let probability = probability(i, local.len());
                    block.rules.push(format!(
                        "-A {svl} -m comment --comment \"{spn} -> {endpoint}\"{probability} -j {sep}"
                    ));
                }
            }
            let n = ready.len();
            let mut sep_rules = Vec::new();
            // ClientIP affinity: a client seen recently goes back to the same endpoint (xt_recent).
            let affinity = svc.session_affinity_seconds;
            if let Some(seconds) = affinity {
                for (ip, target, _) in &ready {
                    let endpoint = format!("{ip}:{target}");
                    let sep = chains::sep_chain(p, &spn, port.protocol, &endpoint);
                    block.rules.push(format!(
                        "-A {svc_chain} -m comment --comment \"{spn} -> {endpoint}\" -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}"
                    ));
                }
            }
            for (i, (ip, target, _)) in ready.iter().enumerate() {
                let endpoint = format!("{ip}:{target}");
                let sep = chains::sep_chain(p, &spn, port.protocol, &endpoint);
                block.chains.push(sep.clone());
                let probability = probability(i, n);
                block.rules.push(format!(
                    "-A {svc_chain} -m comment --comment \"{spn} -> {endpoint}\"{probability} -j {sep}"
                ));
                sep_rules
                    .push(format!("-A {sep} -m comment --comment {spn} -s {ip}/32 -j {}", fixed.mark_masq));
                let remember =
                    if affinity.is_some() { format!(" -m recent --name {sep} --set") } else { String::new() };
                sep_rules.push(format!(
                    "-A {sep} -m comment --comment {spn}{remember} {m} -j DNAT --to-destination {endpoint}"
                ));
            }
            if has_external && svc.external_traffic_local {
                // Local policy: in-cluster and node-local sources use all endpoints; external
                // clients only local ones, unmasqueraded (client IP preserved).
                let x = &ext_chain;
                if let Some(cidr) = config.cluster_cidr {
                    block.rules.push(format!(
                        "-A {x} -m comment --comment \"pod traffic for {spn} external destinations\" -s {} -j {svc_chain}",
                        cidr.trunc()
                    ));
                }
                block.rules.push(format!(
                    "-A {x} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {}",
                    fixed.mark_masq
                ));
                block.rules.push(format!(
                    "-A {x} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"
                ));
                if local.is_empty() {
                    let c = format!("-m comment --comment \"{spn} has no local endpoints\"");
                    for lb in &svc.load_balancer_ips {
                        set.filter.push(format!(
                            "-A {} {c} {m} -d {lb}/32 --dport {} -j DROP",
                            fixed.external_services, port.port
                        ));
                    }
                    if let Some(np) = port.node_port {
                        set.filter.push(format!(
                            "-A {} {c} -m addrtype --dst-type LOCAL {m} --dport {np} -j DROP",
                            fixed.external_services
                        ));
                    }
                } else {
                    block.rules.push(format!("-A {x} -j {svl}"));
                }
            } else if has_external {
                block.rules.push(format!(
                    "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j {}",
                    fixed.mark_masq
                ));
                block.rules.push(format!("-A {ext_chain} -j {svc_chain}"));
            }
            block.rules.extend(sep_rules);
            block.chains.sort();
            set.services.insert(spn, block);
        }
    }
    set.nat_entry.push(format!(
        "-A {} -m comment --comment \"rkube service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {}",
        fixed.services, fixed.nodeports
    ));
    set.nat_entry.extend(nodeport_rules);
    set
}

/// Restore input for `rules`: the fixed chains always, the per-service blocks named in `only`
/// (all when `None`), and flush + delete of `stale_nat_chains` that are not wanted any more.
pub fn format(
    rules: &RuleSet,
    config: &ProxyConfig,
    only: Option<&BTreeSet<String>>,
    stale_nat_chains: &[String],
) -> String {
    let fixed = FixedChains::new(&config.prefix);
    let mark = config.mark();
    let wanted = rules.nat_chains();
    let blocks: Vec<&ServiceBlock> = rules
        .services
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o.contains(*name)))
        .map(|(_, b)| b)
        .collect();
    let stale: Vec<&String> = stale_nat_chains.iter().filter(|c| !wanted.contains(*c)).collect();

    let mut out = String::new();
    let _ = writeln!(out, "*filter");
    for chain in [&fixed.services, &fixed.external_services, &fixed.forward] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for line in &rules.filter {
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
    let mut declared: Vec<&String> = blocks.iter().flat_map(|b| b.chains.iter()).collect();
    declared.sort();
    for chain in declared.into_iter().chain(stale.iter().copied()) {
        let _ = writeln!(out, ":{chain} - [0:0]");
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
    for line in rules.nat_entry.iter().chain(blocks.iter().flat_map(|b| b.rules.iter())) {
        let _ = writeln!(out, "{line}");
    }
    // Service and external chains first: they reference endpoint chains.
    let (seps, others): (Vec<&&String>, Vec<&&String>) = stale.iter().partition(|c| c.contains("-SEP-"));
    for chain in others.into_iter().chain(seps) {
        let _ = writeln!(out, "-X {chain}");
    }
    let _ = writeln!(out, "COMMIT");
    out
}

/// The endpoint lists of every service port, indexed once per sync (looking each port up in the
/// whole list would make a sync quadratic in the number of Services).
pub(crate) struct EndpointIndex<'a> {
    by_port: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Endpoint>>,
}

impl<'a> EndpointIndex<'a> {
    pub(crate) fn new(all: impl IntoIterator<Item = &'a ServiceEndpoints>) -> Self {
        let mut by_port: HashMap<(&str, &str, &str), Vec<&Endpoint>> = HashMap::new();
        for e in all {
            by_port
                .entry((e.namespace.as_str(), e.service.as_str(), e.port_name.as_str()))
                .or_default()
                .extend(e.endpoints.iter());
        }
        Self { by_port }
    }

    /// Ready endpoints of `port` as (ip, backend port, on this node), sorted and de-duplicated.
    pub(crate) fn ready(&self, svc: &Service, port: &ServicePort) -> Vec<(Ipv4Addr, u16, bool)> {
        let mut set: BTreeMap<(Ipv4Addr, u16), bool> = BTreeMap::new();
        let key = (svc.namespace.as_str(), svc.name.as_str(), port.name.as_str());
        for e in self.by_port.get(&key).into_iter().flatten().filter(|e| e.ready) {
            let key = (e.ip, if e.port == 0 { port.target_port } else { e.port });
            *set.entry(key).or_default() |= e.local;
        }
        set.into_iter().map(|((ip, port), local)| (ip, port, local)).collect()
    }
}

/// `-m statistic` for endpoint `i` of `n`: 1/(n-i), none for the last one.
fn probability(i: usize, n: usize) -> String {
    if i + 1 < n {
        format!(" -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::fixtures::{config, dns, web, web_endpoints};
    use crate::proxy::types::Protocol;

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
-A RKUBE-SERVICES -m comment --comment \"rkube service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j RKUBE-NODEPORTS
-A RKUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30080 -j {ext}
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
    fn client_ip_affinity_uses_recent_match() {
        let svc = Service { session_affinity_seconds: Some(10800), ..web() };
        let text = render(&[svc], &[web_endpoints()], &config());
        let sep = chains::sep_chain("RKUBE", "default/web:http", Protocol::Tcp, "10.244.1.2:8080");
        let check = format!("-m recent --name {sep} --rcheck --seconds 10800 --reap -j {sep}");
        let set = format!(
            "-A {sep} -m comment --comment default/web:http -m recent --name {sep} --set -m tcp -p tcp -j DNAT"
        );
        assert!(text.contains(&check), "{text}");
        assert!(text.contains(&set), "{text}");
        // Affinity checks come before the probability rules.
        assert!(text.find(&check).unwrap() < text.find("--probability").unwrap());
    }

    #[test]
    fn external_traffic_policy_local_uses_only_local_endpoints() {
        let svc = Service { external_traffic_local: true, ..web() };
        let mut eps = web_endpoints();
        for e in &mut eps.endpoints {
            e.local = e.ip == "10.244.1.3".parse::<Ipv4Addr>().unwrap();
        }
        let text = render(std::slice::from_ref(&svc), std::slice::from_ref(&eps), &config());
        let ext = chains::ext_chain("RKUBE", "default/web:http", Protocol::Tcp);
        let svl = chains::svl_chain("RKUBE", "default/web:http", Protocol::Tcp);
        let local_sep = chains::sep_chain("RKUBE", "default/web:http", Protocol::Tcp, "10.244.1.3:8080");
        assert!(text.contains(&format!(":{svl} - [0:0]")));
        assert!(text.contains(&format!("-A {ext} -m comment --comment \"pod traffic for default/web:http external destinations\" -s 10.244.0.0/16 -j RKUBE-SVC-")));
        assert!(text.contains("-m addrtype --src-type LOCAL -j RKUBE-MARK-MASQ\n"));
        assert!(text.contains(&format!("-A {ext} -j {svl}\n")));
        assert!(text.contains(&format!(
            "-A {svl} -m comment --comment \"default/web:http -> 10.244.1.3:8080\" -j {local_sep}\n"
        )));
        assert_eq!(text.matches(&format!("-A {svl} ")).count(), 1, "only the local endpoint");
        // External traffic is not masqueraded unconditionally any more.
        assert!(!text.contains("masquerade traffic for default/web:http external destinations"));

        // No local endpoint: external paths are dropped in filter, cluster IP still works.
        for e in &mut eps.endpoints {
            e.local = false;
        }
        let text = render(&[svc], &[eps], &config());
        assert!(!text.contains("-SVL-"));
        assert!(text.contains("\"default/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP"));
        assert!(text.contains("-d 192.168.77.200/32 --dport 80 -j DROP"));
        assert!(text.contains("cluster IP\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j RKUBE-SVC-"));
    }

    #[test]
    fn single_endpoint_has_no_probability_and_no_masq_without_cidr() {
        let eps = ServiceEndpoints {
            endpoints: vec![Endpoint { ip: "10.1.0.2".parse().unwrap(), port: 80, ready: true, local: true }],
            ..web_endpoints()
        };
        let config = ProxyConfig { random_fully: false, ..ProxyConfig::default() };
        let text = render(&[web()], &[eps], &config);
        assert!(!text.contains("statistic"));
        assert!(!text.contains("! -s"));
        assert!(text.contains("-j MASQUERADE\n"));
    }

    #[test]
    fn internal_traffic_policy_local_keeps_cluster_ip_traffic_on_the_node() {
        let svc = Service { internal_traffic_local: true, ..web() };
        let svc = Service {
            ports: svc.ports.iter().map(|p| ServicePort { node_port: None, ..p.clone() }).collect(),
            load_balancer_ips: vec![],
            ..svc
        };
        let mut eps = web_endpoints();
        for e in &mut eps.endpoints {
            e.local = e.ip == "10.244.1.3".parse::<Ipv4Addr>().unwrap();
        }
        let text = render(std::slice::from_ref(&svc), std::slice::from_ref(&eps), &config());
        let svl = chains::svl_chain("RKUBE", "default/web:http", Protocol::Tcp);
        let local_sep = chains::sep_chain("RKUBE", "default/web:http", Protocol::Tcp, "10.244.1.3:8080");
        assert!(text.contains(&format!("-d 10.96.0.10/32 --dport 80 -j {svl}\n")), "{text}");
        // The masquerade rule comes first in the chain the cluster IP jumps to.
        let masq =
            text.find(&format!("-A {svl} -m comment --comment \"default/web:http cluster IP\"")).unwrap();
        let pick = text
            .find(&format!(
                "-A {svl} -m comment --comment \"default/web:http -> 10.244.1.3:8080\" -j {local_sep}\n"
            ))
            .unwrap();
        assert!(masq < pick, "{text}");
        assert_eq!(text.matches(&format!("-A {svl} ")).count(), 2, "masquerade + the one local endpoint");
        assert!(!text.contains("-j RKUBE-SVC-"), "nothing jumps to the all-endpoints chain: {text}");

        // No endpoint on this node: cluster IP traffic is dropped, not sent to another node.
        for e in &mut eps.endpoints {
            e.local = false;
        }
        let text = render(&[svc], &[eps], &config());
        assert!(!text.contains("-SVL-"));
        assert!(text.contains(
            "\"default/web:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j DROP"
        ));
        assert!(!text.contains("-d 10.96.0.10/32 --dport 80 -j RKUBE-"));
    }
}
