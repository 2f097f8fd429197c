//! Renders Services and endpoints as `nft -f` input with kube-proxy's nftables-mode layout (pure).
//!
//! One table of ours (`ip <prefix>-proxy`, e.g. `ip rkube-proxy`). Its `services` chain dispatches
//! with verdict maps, so a Service is a few map elements rather than rules in a linear chain:
//! - `service-ips` (`daddr . l4proto . dport`) sends ClusterIPs to their `service-…` chain and
//!   LoadBalancer IPs to their `external-…` chain; `service-nodeports` (`l4proto . dport`, for
//!   local destinations) sends NodePorts to `external-…`;
//! - `no-endpoint-services` / `no-endpoint-nodeports`, checked in the filter hooks for new
//!   connections, reject Services without endpoints (or drop when a Local policy finds none here).
//!
//! Per service port: `service-…` picks an endpoint with `numgen random` (see [`pick`]), `local-…` does
//! the same among this node's endpoints (Local traffic policies), `external-…` handles NodePort/LB
//! traffic, and one `endpoint-…` chain per endpoint marks hairpin traffic for masquerade and DNATs.
//! sessionAffinity ClientIP uses one dynamic set with a timeout per endpoint, as kube-proxy does.
//!
//! [`build`] computes an [`NftRuleSet`]; [`full`] renders a transaction that replaces the table
//! atomically; [`partial`] one that touches only the changed service ports' chains, sets and map
//! elements.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::chains;
use super::render::EndpointIndex;
use super::types::{Protocol, ProxyConfig, Service, ServiceEndpoints, ServicePort};

/// Map: ClusterIP / LB IP . protocol . port → verdict.
pub const SERVICE_IPS: &str = "service-ips";
/// Map: protocol . NodePort → verdict.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Map: Service IP . protocol . port of Services without (local) endpoints → reject or drop.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Map: protocol . NodePort of Services without (local) endpoints → reject or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

/// The name of our table for `config` (`rkube-proxy` for prefix `RKUBE`).
pub fn table_name(config: &ProxyConfig) -> String {
    format!("{}-proxy", config.prefix.to_ascii_lowercase())
}

/// One element of a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub map: &'static str,
    /// The key as nft writes it, e.g. `10.96.0.10 . tcp . 80`.
    pub key: String,
    /// The verdict, e.g. `goto service-…` or `drop`.
    pub verdict: String,
}

/// The chains, affinity sets and map elements of one service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftBlock {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    pub elements: Vec<Element>,
    /// Service IPs of a UDP port: their conntrack entries go stale when endpoints go away.
    pub udp_destinations: Vec<Ipv4Addr>,
}

impl NftBlock {
    /// The endpoint chains (one per endpoint) of this block.
    pub fn endpoint_chains(&self) -> impl Iterator<Item = &String> {
        self.chains.keys().filter(|c| c.starts_with("endpoint-"))
    }
}

/// Every per-service object the proxy wants, by service port (`ns/name:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftRuleSet {
    pub services: BTreeMap<String, NftBlock>,
}

/// `ns/name/proto/port` (the port's name, or `p<port>` when unnamed), the readable part of chain
/// names, as kube-proxy writes it.
fn chain_base(svc: &Service, port: &ServicePort) -> String {
    let label = if port.name.is_empty() { format!("p{}", port.port) } else { port.name.clone() };
    format!("{}/{}/{}/{label}", svc.namespace, svc.name, port.protocol.as_str())
}

fn short_hash(input: &str) -> String {
    chains::hash16(input)[..8].to_string()
}

/// Names of a service port's chains.
struct Names {
    service: String,
    external: String,
    local: String,
    spn_proto: String,
    base: String,
}

impl Names {
    fn new(spn: &str, svc: &Service, port: &ServicePort) -> Self {
        let base = chain_base(svc, port);
        let spn_proto = format!("{spn}{}", port.protocol.as_str());
        let h = short_hash(&spn_proto);
        Names {
            service: format!("service-{h}-{base}"),
            external: format!("external-{h}-{base}"),
            local: format!("local-{h}-{base}"),
            spn_proto,
            base,
        }
    }

    /// (endpoint chain, affinity set) of `ip:port`.
    fn endpoint(&self, ip: Ipv4Addr, port: u16) -> (String, String) {
        let h = short_hash(&format!("{}{ip}:{port}", self.spn_proto));
        let tail = format!("{h}-{}__{ip}/{port}", self.base);
        (format!("endpoint-{tail}"), format!("affinity-{tail}"))
    }
}

/// Rules choosing one of `targets` uniformly: target i of n is taken with probability 1/(n-i)
/// (`numgen random mod (n-i) == 0`), the last one unconditionally, as iptables' statistic rules do.
/// kube-proxy writes one `numgen random mod n vmap { … }` instead; each such rule is an anonymous
/// set, and the kernel names anonymous sets by scanning all of a table's sets, which made a full
/// load of 10,000 Services take over a minute here (under 4 s with these rules).
fn pick(targets: &[String]) -> Vec<String> {
    let n = targets.len();
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i + 1 < n { format!("numgen random mod {} == 0 goto {t}", n - i) } else { format!("goto {t}") }
        })
        .collect()
}

/// Computes every per-service chain, set and map element for `services` and their `endpoints`.
pub fn build(services: &[Service], endpoints: &[ServiceEndpoints], config: &ProxyConfig) -> NftRuleSet {
    let mut set = NftRuleSet::default();
    let index = EndpointIndex::new(endpoints);
    for svc in services {
        set.services.extend(service_blocks(svc, &index, config));
    }
    set
}

/// The blocks of one Service's ports (none for a headless Service), by service port name.
pub(crate) fn service_blocks(
    svc: &Service,
    index: &EndpointIndex,
    config: &ProxyConfig,
) -> Vec<(String, NftBlock)> {
    let Some(cluster_ip) = svc.cluster_ip else { return Vec::new() };
    svc.ports
        .iter()
        .map(|port| {
            let spn = chains::service_port_name(&svc.namespace, &svc.name, &port.name);
            let block = service_block(svc, cluster_ip, port, &spn, index, config);
            (spn, block)
        })
        .collect()
}

fn service_block(
    svc: &Service,
    cluster_ip: Ipv4Addr,
    port: &ServicePort,
    spn: &str,
    index: &EndpointIndex,
    config: &ProxyConfig,
) -> NftBlock {
    let proto = port.protocol.as_str();
    let n = Names::new(spn, svc, port);
    let mut block = NftBlock::default();
    let ip_key = |ip: Ipv4Addr| format!("{ip} . {proto} . {}", port.port);
    let element = |map, key: String, verdict: String| Element { map, key, verdict };
    if port.protocol == Protocol::Udp {
        block.udp_destinations =
            std::iter::once(cluster_ip).chain(svc.load_balancer_ips.iter().copied()).collect();
    }

    let ready = index.ready(svc, port);
    if ready.is_empty() {
        // No endpoints: new connections are rejected in the filter hooks.
        let reject = "goto reject-chain".to_string();
        for ip in std::iter::once(cluster_ip).chain(svc.load_balancer_ips.iter().copied()) {
            block.elements.push(element(NO_ENDPOINT_SERVICES, ip_key(ip), reject.clone()));
        }
        if let Some(np) = port.node_port {
            block.elements.push(element(NO_ENDPOINT_NODEPORTS, format!("{proto} . {np}"), reject));
        }
        return block;
    }

    let has_external = port.node_port.is_some() || !svc.load_balancer_ips.is_empty();
    let local: Vec<&(Ipv4Addr, u16, bool)> = ready.iter().filter(|e| e.2).collect();
    let wants_local = svc.internal_traffic_local || (has_external && svc.external_traffic_local);
    let internal_chain = if svc.internal_traffic_local { &n.local } else { &n.service };
    let internal_dropped = svc.internal_traffic_local && local.is_empty();

    // Dispatch: the cluster IP, LB IPs and NodePort.
    if internal_dropped {
        block.elements.push(element(NO_ENDPOINT_SERVICES, ip_key(cluster_ip), "drop".into()));
    } else {
        block.elements.push(element(SERVICE_IPS, ip_key(cluster_ip), format!("goto {internal_chain}")));
    }
    for lb in &svc.load_balancer_ips {
        block.elements.push(element(SERVICE_IPS, ip_key(*lb), format!("goto {}", n.external)));
    }
    if let Some(np) = port.node_port {
        block.elements.push(element(
            SERVICE_NODEPORTS,
            format!("{proto} . {np}"),
            format!("goto {}", n.external),
        ));
    }

    // Endpoint chains: hairpin traffic is masqueraded, then DNAT (remembering the client for
    // ClientIP affinity).
    let affinity = svc.session_affinity_seconds;
    let mut all = Vec::new();
    let mut local_chains = Vec::new();
    let mut affinity_rules = Vec::new();
    for (ip, target, is_local) in &ready {
        let (chain, aff) = n.endpoint(*ip, *target);
        let mut rules = vec![format!("ip saddr {ip} jump mark-for-masquerade")];
        if let Some(seconds) = affinity {
            block.sets.insert(aff.clone(), seconds);
            rules.push(format!("update @{aff} {{ ip saddr }}"));
            affinity_rules.push(format!("ip saddr @{aff} goto {chain}"));
        }
        rules.push(format!("meta l4proto {proto} dnat to {ip}:{target}"));
        block.chains.insert(chain.clone(), rules);
        if *is_local {
            local_chains.push(chain.clone());
        }
        all.push(chain);
    }

    // Masquerade off-cluster sources reaching the cluster IP (first rule of the internal chain).
    let masq = config.cluster_cidr.filter(|_| !internal_dropped).map(|cidr| {
        format!(
            "ip daddr {cluster_ip} {proto} dport {} ip saddr != {} jump mark-for-masquerade",
            port.port,
            cidr.trunc()
        )
    });
    let mut service_rules = Vec::new();
    if !svc.internal_traffic_local {
        service_rules.extend(masq.clone());
    }
    service_rules.extend(affinity_rules);
    service_rules.extend(pick(&all));
    block.chains.insert(n.service.clone(), service_rules);

    if wants_local && !local_chains.is_empty() {
        let mut rules = Vec::new();
        if svc.internal_traffic_local {
            rules.extend(masq);
        }
        rules.extend(pick(&local_chains));
        block.chains.insert(n.local.clone(), rules);
    }

    if has_external {
        let mut rules = Vec::new();
        if svc.external_traffic_local {
            // Pods and the node itself use every endpoint; external clients only this node's,
            // unmasqueraded (client IP preserved).
            if let Some(cidr) = config.cluster_cidr {
                rules.push(format!("ip saddr {} goto {}", cidr.trunc(), n.service));
            }
            rules.push("fib saddr type local jump mark-for-masquerade".to_string());
            rules.push(format!("fib saddr type local goto {}", n.service));
            if local_chains.is_empty() {
                // Nothing here for external clients: they fall through undNATed and are dropped.
                for lb in &svc.load_balancer_ips {
                    block.elements.push(element(NO_ENDPOINT_SERVICES, ip_key(*lb), "drop".into()));
                }
                if let Some(np) = port.node_port {
                    block.elements.push(element(
                        NO_ENDPOINT_NODEPORTS,
                        format!("{proto} . {np}"),
                        "drop".into(),
                    ));
                }
            } else {
                rules.push(format!("goto {}", n.local));
            }
        } else {
            rules.push("jump mark-for-masquerade".to_string());
            rules.push(format!("goto {}", n.service));
        }
        block.chains.insert(n.external.clone(), rules);
    }
    block
}

/// The fixed part's chains: the six hooked into netfilter, then the helpers.
const BASE_CHAINS: [&str; 12] = [
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "filter-input",
    "filter-forward",
    "filter-output",
    "services",
    "masquerading",
    "mark-for-masquerade",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "reject-chain",
];

/// The fixed part of the table: maps, base chains hooked into netfilter, helper chains.
fn base(out: &mut String, table: &str, config: &ProxyConfig) {
    let t = format!("ip {table}");
    let mark = config.mark();
    let ip_map = "type ipv4_addr . inet_proto . inet_service : verdict";
    let port_map = "type inet_proto . inet_service : verdict";
    for (name, ty) in [
        (SERVICE_IPS, ip_map),
        (SERVICE_NODEPORTS, port_map),
        (NO_ENDPOINT_SERVICES, ip_map),
        (NO_ENDPOINT_NODEPORTS, port_map),
    ] {
        let _ = writeln!(out, "add map {t} {name} {{ {ty}; }}");
    }
    // DNAT at -100, the endpoint checks just before it (-110) as kube-proxy does.
    let hooked = [
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
        ("filter-input", "filter", "input", -110),
        ("filter-forward", "filter", "forward", -110),
        ("filter-output", "filter", "output", -110),
    ];
    for (name, kind, hook, priority) in hooked {
        let _ = writeln!(
            out,
            "add chain {t} {name} {{ type {kind} hook {hook} priority {priority}; policy accept; }}"
        );
    }
    for name in &BASE_CHAINS[6..] {
        let _ = writeln!(out, "add chain {t} {name}");
    }
    let random = if config.random_fully { " fully-random" } else { "" };
    let rules: [(&str, String); 14] = [
        ("nat-prerouting", "jump services".into()),
        ("nat-output", "jump services".into()),
        ("nat-postrouting", "jump masquerading".into()),
        ("filter-input", "ct state new jump nodeport-endpoints-check".into()),
        ("filter-input", "ct state new jump service-endpoints-check".into()),
        ("filter-forward", "ct state new jump service-endpoints-check".into()),
        ("filter-output", "ct state new jump service-endpoints-check".into()),
        ("services", format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")),
        (
            "services",
            format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
            ),
        ),
        ("masquerading", format!("meta mark & {mark} == 0 return")),
        ("masquerading", format!("meta mark set meta mark ^ {mark} masquerade{random}")),
        ("mark-for-masquerade", format!("meta mark set meta mark | {mark}")),
        (
            "service-endpoints-check",
            format!("ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
        ),
        (
            "nodeport-endpoints-check",
            format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            ),
        ),
    ];
    for (chain, rule) in rules {
        let _ = writeln!(out, "add rule {t} {chain} {rule}");
    }
    let _ = writeln!(out, "add rule {t} reject-chain reject");
}

fn add_set(out: &mut String, t: &str, name: &str, seconds: u32) {
    let _ =
        writeln!(out, "add set {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {seconds}s; }}");
}

/// Adds the chains, sets, rules and elements of `blocks` (chains before any rule referencing them).
fn add_blocks<'a>(out: &mut String, t: &str, blocks: impl Iterator<Item = &'a NftBlock> + Clone) {
    for block in blocks.clone() {
        for (name, seconds) in &block.sets {
            add_set(out, t, name, *seconds);
        }
        for chain in block.chains.keys() {
            let _ = writeln!(out, "add chain {t} {chain}");
        }
    }
    for block in blocks.clone() {
        for (chain, rules) in &block.chains {
            for rule in rules {
                let _ = writeln!(out, "add rule {t} {chain} {rule}");
            }
        }
    }
    for block in blocks {
        for e in &block.elements {
            let _ = writeln!(out, "add element {t} {} {{ {} : {} }}", e.map, e.key, e.verdict);
        }
    }
}

/// One transaction replacing our table with `rules` (created if missing): no moment without
/// rules, so traffic keeps flowing across restarts.
pub fn full(rules: &NftRuleSet, config: &ProxyConfig) -> String {
    let table = table_name(config);
    let t = format!("ip {table}");
    let mut out = String::new();
    let _ = writeln!(out, "add table {t}");
    let _ = writeln!(out, "delete table {t}");
    let _ = writeln!(out, "add table {t} {{ comment \"rkube service proxy\"; }}");
    base(&mut out, &table, config);
    add_blocks(&mut out, &t, rules.services.values());
    out
}

/// The chains and named sets (not maps) our table holds, as listed before a full sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    /// Set name → its timeout in seconds (`None`: none).
    pub sets: BTreeMap<String, Option<u32>>,
}

/// A full sync over the table as it is (`existing`) rather than a new one: one transaction that
/// flushes every rule and map element, deletes the chains and sets no longer wanted, and writes
/// everything again. Affinity sets still wanted keep their entries (their timeout unchanged), so
/// a restarted proxy sends each client where it went before.
pub fn full_keeping(rules: &NftRuleSet, config: &ProxyConfig, existing: &Existing) -> String {
    let table = table_name(config);
    let t = format!("ip {table}");
    let mut out = String::new();
    let _ = writeln!(out, "add table {t}");
    let _ = writeln!(out, "flush table {t}");
    base(&mut out, &table, config);
    for map in [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] {
        let _ = writeln!(out, "flush map {t} {map}");
    }
    let mut wanted_sets = BTreeMap::new();
    let mut wanted_chains: BTreeSet<&str> = BASE_CHAINS.iter().copied().collect();
    for block in rules.services.values() {
        wanted_sets.extend(block.sets.iter().map(|(n, s)| (n.as_str(), *s)));
        wanted_chains.extend(block.chains.keys().map(String::as_str));
    }
    // Unreferenced now that every rule and element is gone (later in this same transaction).
    for (name, timeout) in &existing.sets {
        if wanted_sets.get(name.as_str()).map(|s| Some(*s)) != Some(*timeout) {
            let _ = writeln!(out, "delete set {t} {name}");
        }
    }
    for chain in existing.chains.iter().filter(|c| !wanted_chains.contains(c.as_str())) {
        let _ = writeln!(out, "delete chain {t} {chain}");
    }
    add_blocks(&mut out, &t, rules.services.values());
    out
}

/// The service ports whose objects differ between `old` and `new` (added, changed or removed).
pub fn changed(old: &NftRuleSet, new: &NftRuleSet) -> BTreeSet<String> {
    let keys: BTreeSet<&String> = old.services.keys().chain(new.services.keys()).collect();
    keys.into_iter().filter(|k| old.services.get(*k) != new.services.get(*k)).cloned().collect()
}

/// One transaction moving the table from `old` to `new`, touching only changed service ports:
/// their old map elements are deleted, their chains flushed and rewritten, chains and sets no
/// longer wanted deleted, and their new elements added.
pub fn partial(old: &NftRuleSet, new: &NftRuleSet, config: &ProxyConfig) -> String {
    partial_of(old, new, &changed(old, new), config)
}

/// [`partial`] for the service ports `changed` (known to the caller; others are not compared).
pub fn partial_of(
    old: &NftRuleSet,
    new: &NftRuleSet,
    changed: &BTreeSet<String>,
    config: &ProxyConfig,
) -> String {
    let t = format!("ip {}", table_name(config));
    let mut out = String::new();
    let empty = NftBlock::default();
    let pairs: Vec<(&NftBlock, &NftBlock)> = changed
        .iter()
        .map(|k| (old.services.get(k).unwrap_or(&empty), new.services.get(k).unwrap_or(&empty)))
        .collect();
    // 1. Old dispatch elements go (the chains they point at may be deleted below).
    for (before, _) in &pairs {
        for e in &before.elements {
            let _ = writeln!(out, "delete element {t} {} {{ {} }}", e.map, e.key);
        }
    }
    // 2. Every old chain of a changed port is flushed (dropping references to chains and sets).
    for (before, _) in &pairs {
        for chain in before.chains.keys() {
            let _ = writeln!(out, "flush chain {t} {chain}");
        }
    }
    // 3. Sets that went away or changed timeout are deleted (new ones are added with the blocks).
    for (before, after) in &pairs {
        for (name, seconds) in &before.sets {
            if after.sets.get(name) != Some(seconds) {
                let _ = writeln!(out, "delete set {t} {name}");
            }
        }
    }
    // 4. New chains, sets, rules and elements; a kept set or chain is not re-added.
    let fresh: Vec<NftBlock> = pairs
        .iter()
        .map(|(before, after)| NftBlock {
            chains: after.chains.clone(),
            sets: after
                .sets
                .iter()
                .filter(|(n, s)| before.sets.get(*n) != Some(*s))
                .map(|(n, s)| (n.clone(), *s))
                .collect(),
            elements: after.elements.clone(),
            udp_destinations: Vec::new(),
        })
        .collect();
    add_blocks(&mut out, &t, fresh.iter());
    // 5. Chains no longer wanted (flushed above, unreferenced now) are deleted.
    for (before, after) in &pairs {
        for chain in before.chains.keys().filter(|c| !after.chains.contains_key(*c)) {
            let _ = writeln!(out, "delete chain {t} {chain}");
        }
    }
    out
}

/// The transaction deleting our table (fails if it does not exist; see `nft_apply::flush`).
pub fn delete_table(config: &ProxyConfig) -> String {
    format!("delete table ip {}\n", table_name(config))
}

/// UDP Service IPs that lost an endpoint (or all of them) between `old` and `new` (pure).
pub fn stale_udp_destinations(old: &NftRuleSet, new: &NftRuleSet) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for (name, before) in old.services.iter().filter(|(_, b)| !b.udp_destinations.is_empty()) {
        let after = new.services.get(name);
        let lost = before.endpoint_chains().any(|c| after.is_none_or(|a| !a.chains.contains_key(c)));
        if lost {
            out.extend(before.udp_destinations.iter().copied());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::fixtures::{config, dns, web, web_endpoints};
    use crate::proxy::types::Endpoint;

    fn names() -> Names {
        Names::new("default/web:http", &web(), &web().ports[0])
    }

    fn ep(ip: &str) -> String {
        names().endpoint(ip.parse().unwrap(), 8080).0
    }

    fn rules(block: &NftBlock, chain: &str) -> Vec<String> {
        block.chains.get(chain).unwrap_or_else(|| panic!("no chain {chain} in {block:#?}")).clone()
    }

    #[test]
    fn names_follow_kube_proxy() {
        let n = names();
        assert!(
            n.service.starts_with("service-") && n.service.ends_with("-default/web/tcp/http"),
            "{}",
            n.service
        );
        assert_eq!(n.service.len(), "service-".len() + 8 + "-default/web/tcp/http".len());
        let (chain, set) = n.endpoint("10.244.1.2".parse().unwrap(), 8080);
        assert!(chain.starts_with("endpoint-") && chain.ends_with("-default/web/tcp/http__10.244.1.2/8080"));
        assert_eq!(set.strip_prefix("affinity-"), chain.strip_prefix("endpoint-"));
        assert_ne!(chain, n.endpoint("10.244.1.3".parse().unwrap(), 8080).0);
        assert_eq!(table_name(&config()), "rkube-proxy");
        let mut unnamed = web();
        unnamed.ports[0].name = String::new();
        assert!(Names::new("default/web:", &unnamed, &unnamed.ports[0]).service.ends_with("/tcp/p80"));
    }

    #[test]
    fn golden_clusterip_nodeport_lb_and_no_endpoints() {
        let set = build(&[web(), dns()], &[web_endpoints()], &config());
        let n = names();
        let web = &set.services["default/web:http"];
        let (a, b, c) = (ep("10.244.1.2"), ep("10.244.1.3"), ep("10.244.1.4"));
        // Chains: service, external, one per ready endpoint (not the unready one).
        let mut expected: Vec<&String> = vec![&n.service, &n.external, &a, &b, &c];
        expected.sort();
        assert_eq!(web.chains.keys().collect::<Vec<_>>(), expected);
        assert_eq!(
            rules(web, &n.service),
            vec![
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
                    .to_string(),
                format!("numgen random mod 3 == 0 goto {a}"),
                format!("numgen random mod 2 == 0 goto {b}"),
                format!("goto {c}"),
            ]
        );
        assert_eq!(
            rules(web, &a),
            vec![
                "ip saddr 10.244.1.2 jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat to 10.244.1.2:8080".to_string()
            ]
        );
        assert_eq!(
            rules(web, &n.external),
            vec!["jump mark-for-masquerade".to_string(), format!("goto {}", n.service)]
        );
        let goto_ext = format!("goto {}", n.external);
        assert_eq!(
            web.elements,
            vec![
                Element {
                    map: SERVICE_IPS,
                    key: "10.96.0.10 . tcp . 80".into(),
                    verdict: format!("goto {}", n.service)
                },
                Element {
                    map: SERVICE_IPS,
                    key: "192.168.77.200 . tcp . 80".into(),
                    verdict: goto_ext.clone()
                },
                Element { map: SERVICE_NODEPORTS, key: "tcp . 30080".into(), verdict: goto_ext },
            ]
        );
        assert!(web.sets.is_empty() && web.udp_destinations.is_empty());

        // No endpoints: no chains, a reject element for the cluster IP.
        let dns = &set.services["kube-system/dns:dns"];
        assert!(dns.chains.is_empty());
        assert_eq!(
            dns.elements,
            vec![Element {
                map: NO_ENDPOINT_SERVICES,
                key: "10.96.0.11 . udp . 53".into(),
                verdict: "goto reject-chain".into()
            }]
        );
        assert_eq!(dns.udp_destinations, vec!["10.96.0.11".parse::<Ipv4Addr>().unwrap()]);

        // The full transaction: replaces the table, hooks in, every chain added before rules.
        let text = full(&set, &config());
        assert!(text.starts_with(
            "add table ip rkube-proxy\ndelete table ip rkube-proxy\nadd table ip rkube-proxy { comment \"rkube service proxy\"; }\n"
        ));
        for line in [
            "add chain ip rkube-proxy nat-prerouting { type nat hook prerouting priority -100; policy accept; }",
            "add chain ip rkube-proxy filter-input { type filter hook input priority -110; policy accept; }",
            "add rule ip rkube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip rkube-proxy masquerading meta mark & 0x4000 == 0 return",
            "add rule ip rkube-proxy masquerading meta mark set meta mark ^ 0x4000 masquerade fully-random",
            "add rule ip rkube-proxy mark-for-masquerade meta mark set meta mark | 0x4000",
            "add element ip rkube-proxy no-endpoint-services { 10.96.0.11 . udp . 53 : goto reject-chain }",
            "add element ip rkube-proxy service-nodeports { tcp . 30080 : goto external-",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        let first_rule = text.find(&format!("add rule ip rkube-proxy {}", n.service)).unwrap();
        let last_chain = text.rfind("add chain ").unwrap();
        assert!(last_chain < first_rule, "{text}");
        assert!(text.rfind("add rule ").unwrap() < text.find("add element ").unwrap());
    }

    #[test]
    fn no_endpoints_reject_external_paths_too_and_headless_is_skipped() {
        let set = build(&[web()], &[], &config());
        let keys: Vec<(&str, &str)> =
            set.services["default/web:http"].elements.iter().map(|e| (e.map, e.key.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (NO_ENDPOINT_SERVICES, "10.96.0.10 . tcp . 80"),
                (NO_ENDPOINT_SERVICES, "192.168.77.200 . tcp . 80"),
                (NO_ENDPOINT_NODEPORTS, "tcp . 30080"),
            ]
        );
        let headless = Service { cluster_ip: None, ..web() };
        assert!(build(&[headless], &[web_endpoints()], &config()).services.is_empty());
        // Deterministic whatever the input order.
        let one = full(&build(&[web(), dns()], &[web_endpoints()], &config()), &config());
        let two = full(&build(&[dns(), web()], &[web_endpoints()], &config()), &config());
        assert_eq!(one, two);
    }

    #[test]
    fn client_ip_affinity_uses_dynamic_sets_with_timeout() {
        let svc = Service { session_affinity_seconds: Some(10800), ..web() };
        let set = build(&[svc], &[web_endpoints()], &config());
        let block = &set.services["default/web:http"];
        let n = names();
        let (a, aff_a) = n.endpoint("10.244.1.2".parse().unwrap(), 8080);
        assert_eq!(block.sets.len(), 3);
        assert_eq!(block.sets.get(&aff_a), Some(&10800));
        let service = rules(block, &n.service);
        // The masquerade rule, one affinity check per endpoint, then the random pick.
        assert_eq!(service.len(), 7);
        assert_eq!(service[1], format!("ip saddr @{aff_a} goto {a}"));
        assert_eq!(service[4], format!("numgen random mod 3 == 0 goto {a}"));
        assert_eq!(rules(block, &a)[1], format!("update @{aff_a} {{ ip saddr }}"));
        assert!(rules(block, &a)[2].starts_with("meta l4proto tcp dnat"));
        let text = full(&set, &config());
        assert!(text.contains(&format!(
            "add set ip rkube-proxy {aff_a} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}"
        )));
    }

    #[test]
    fn a_full_sync_over_the_existing_table_keeps_wanted_affinity_sets() {
        let svc = Service { session_affinity_seconds: Some(10800), ..web() };
        let set = build(&[svc], &[web_endpoints()], &config());
        let n = names();
        let (a, aff_a) = n.endpoint("10.244.1.2".parse().unwrap(), 8080);
        let (_, aff_b) = n.endpoint("10.244.1.3".parse().unwrap(), 8080);
        let mut existing = Existing {
            chains: BASE_CHAINS.iter().map(|c| c.to_string()).collect(),
            sets: BTreeMap::from([
                (aff_a.clone(), Some(10800)),
                (aff_b.clone(), Some(60)),
                ("affinity-gone".to_string(), Some(10800)),
            ]),
        };
        existing.chains.extend([a.clone(), "endpoint-gone".to_string()]);
        let text = full_keeping(&set, &config(), &existing);
        assert!(text.starts_with("add table ip rkube-proxy\nflush table ip rkube-proxy\n"), "{text}");
        assert!(!text.contains("delete table"));
        for map in [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] {
            assert!(text.contains(&format!("flush map ip rkube-proxy {map}\n")), "{text}");
        }
        // Gone or changed objects are deleted; a's set, the same, is neither deleted nor changed.
        let deleted: Vec<&str> = text.lines().filter(|l| l.starts_with("delete ")).collect();
        assert_eq!(
            deleted,
            [
                format!("delete set ip rkube-proxy {aff_b}"),
                "delete set ip rkube-proxy affinity-gone".to_string(),
                "delete chain ip rkube-proxy endpoint-gone".to_string(),
            ]
        );
        assert!(text.contains(&format!(
            "add set ip rkube-proxy {aff_b} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}"
        )));
        // Deletions come before anything is added back; every chain before its rules.
        let first_add =
            text.find(&format!("add chain ip rkube-proxy {}", n.service)).expect("service chain added");
        assert!(text.rfind("delete ").unwrap() < first_add);
        assert!(text.contains(&format!("add rule ip rkube-proxy {a} ")));
    }

    #[test]
    fn external_traffic_policy_local() {
        let svc = Service { external_traffic_local: true, ..web() };
        let mut eps = web_endpoints();
        for e in &mut eps.endpoints {
            e.local = e.ip == "10.244.1.3".parse::<Ipv4Addr>().unwrap();
        }
        let set = build(std::slice::from_ref(&svc), std::slice::from_ref(&eps), &config());
        let block = &set.services["default/web:http"];
        let n = names();
        assert_eq!(
            rules(block, &n.external),
            vec![
                format!("ip saddr 10.244.0.0/16 goto {}", n.service),
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {}", n.service),
                format!("goto {}", n.local),
            ]
        );
        assert_eq!(rules(block, &n.local), vec![format!("goto {}", ep("10.244.1.3"))]);

        // No local endpoint: external clients fall through and are dropped, the cluster IP works.
        for e in &mut eps.endpoints {
            e.local = false;
        }
        let set = build(&[svc], &[eps], &config());
        let block = &set.services["default/web:http"];
        assert!(!block.chains.contains_key(&n.local));
        assert!(!rules(block, &n.external).iter().any(|r| r.contains("local-")));
        let dropped: Vec<&str> =
            block.elements.iter().filter(|e| e.verdict == "drop").map(|e| e.key.as_str()).collect();
        assert_eq!(dropped, vec!["192.168.77.200 . tcp . 80", "tcp . 30080"]);
        assert!(block.elements.iter().any(|e| e.map == SERVICE_IPS && e.key.starts_with("10.96.0.10 ")));
    }

    #[test]
    fn internal_traffic_policy_local() {
        let mut svc = Service { internal_traffic_local: true, load_balancer_ips: vec![], ..web() };
        svc.ports[0].node_port = None;
        let mut eps = web_endpoints();
        for e in &mut eps.endpoints {
            e.local = e.ip == "10.244.1.3".parse::<Ipv4Addr>().unwrap();
        }
        let set = build(std::slice::from_ref(&svc), std::slice::from_ref(&eps), &config());
        let block = &set.services["default/web:http"];
        let n = names();
        assert_eq!(block.elements[0].verdict, format!("goto {}", n.local));
        let local = rules(block, &n.local);
        assert_eq!(local.len(), 2, "masquerade + pick: {local:?}");
        assert!(local[0].contains("ip saddr != 10.244.0.0/16 jump mark-for-masquerade"));
        assert_eq!(local[1], format!("goto {}", ep("10.244.1.3")));

        for e in &mut eps.endpoints {
            e.local = false;
        }
        let block = &build(&[svc], &[eps], &config()).services["default/web:http"];
        assert_eq!(block.elements.len(), 1);
        assert_eq!(
            (block.elements[0].map, block.elements[0].verdict.as_str()),
            (NO_ENDPOINT_SERVICES, "drop")
        );
        assert!(!block.chains.contains_key(&n.local));
    }

    #[test]
    fn partial_touches_only_changed_ports() {
        let cfg = config();
        let other =
            Service { name: "other".into(), cluster_ip: Some("10.96.0.12".parse().unwrap()), ..web() };
        let other_eps = ServiceEndpoints { service: "other".into(), ..web_endpoints() };
        let before = build(&[web(), other.clone()], &[web_endpoints(), other_eps.clone()], &cfg);
        assert_eq!(partial(&before, &before, &cfg), "");

        // web loses 10.244.1.4 and gains 10.244.1.9.
        let mut moved = web_endpoints();
        moved.endpoints[0].ip = "10.244.1.9".parse().unwrap();
        let after = build(&[web(), other.clone()], &[moved, other_eps.clone()], &cfg);
        assert_eq!(changed(&before, &after).into_iter().collect::<Vec<_>>(), vec!["default/web:http"]);
        let text = partial(&before, &after, &cfg);
        assert!(!text.contains("default/other"), "unchanged service touched:\n{text}");
        let n = names();
        let (old, new) = (ep("10.244.1.4"), ep("10.244.1.9"));
        let pos = |line: &str| text.find(line).unwrap_or_else(|| panic!("missing {line}:\n{text}"));
        let del_elem = pos("delete element ip rkube-proxy service-ips { 10.96.0.10 . tcp . 80 }\n");
        let flush_old = pos(&format!("flush chain ip rkube-proxy {old}\n"));
        let add_new = pos(&format!("add chain ip rkube-proxy {new}\n"));
        let rule = pos(&format!("add rule ip rkube-proxy {} numgen", n.service));
        let add_elem = pos(&format!(
            "add element ip rkube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {} }}",
            n.service
        ));
        let del_old = pos(&format!("delete chain ip rkube-proxy {old}\n"));
        assert!(
            del_elem < flush_old
                && flush_old < add_new
                && add_new < rule
                && rule < add_elem
                && add_elem < del_old
        );
        assert!(!text.contains(&format!("delete chain ip rkube-proxy {}\n", n.service)));

        // Removing a service deletes its elements and chains; nothing is added.
        let gone = build(&[other], &[other_eps], &cfg);
        let text = partial(&before, &gone, &cfg);
        assert!(!text.contains("add "), "{text}");
        assert_eq!(text.matches("delete element").count(), 3);
        assert_eq!(text.matches("delete chain").count(), 5);
        assert_eq!(text.matches("flush chain").count(), 5);
    }

    #[test]
    fn partial_replaces_affinity_sets_only_when_they_change() {
        let cfg = config();
        let sticky = |s| Service { session_affinity_seconds: Some(s), ..web() };
        let a = build(&[sticky(60)], &[web_endpoints()], &cfg);
        let mut eps = web_endpoints();
        eps.endpoints[0].ip = "10.244.1.9".parse().unwrap();
        let b = build(&[sticky(60)], &[eps.clone()], &cfg);
        let text = partial(&a, &b, &cfg);
        // Only the moved endpoint's set goes and comes; the others keep their clients.
        assert_eq!(text.matches("delete set").count(), 1, "{text}");
        assert_eq!(text.matches("add set").count(), 1, "{text}");
        let c = build(&[sticky(120)], &[eps], &cfg);
        let text = partial(&b, &c, &cfg);
        assert_eq!((text.matches("delete set").count(), text.matches("add set").count()), (3, 3));
        // Affinity switched off: every set goes after the chains using it are flushed.
        let d = build(&[web()], &[web_endpoints()], &cfg);
        let text = partial(&a, &d, &cfg);
        assert!(text.rfind("flush chain").unwrap() < text.find("delete set").unwrap());
        assert!(!text.contains("add set"));
    }

    #[test]
    fn udp_services_losing_endpoints_need_conntrack_cleanup() {
        let cfg = config();
        let eps = |ip: &str| ServiceEndpoints {
            namespace: "kube-system".into(),
            service: "dns".into(),
            port_name: "dns".into(),
            endpoints: vec![Endpoint { ip: ip.parse().unwrap(), port: 53, ready: true, local: true }],
        };
        let before = build(&[dns(), web()], &[eps("10.244.1.2"), web_endpoints()], &cfg);
        assert!(stale_udp_destinations(&before, &before).is_empty());
        let after = build(&[dns(), web()], &[eps("10.244.1.3")], &cfg);
        assert_eq!(
            stale_udp_destinations(&before, &after).into_iter().collect::<Vec<_>>(),
            vec!["10.96.0.11".parse::<Ipv4Addr>().unwrap()]
        );
        let none = build(&[web()], &[], &cfg);
        assert_eq!(stale_udp_destinations(&before, &none).len(), 1);
    }
}
