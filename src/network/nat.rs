//! Node NAT: outbound masquerade for the pod CIDR and hostPort → pod DNAT (CNI portmap semantics),
//! in our own chains, rendered as `iptables-restore` input and loaded atomically.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::iptables::{self, IptablesError};

/// Mark set on hostPort traffic that must be masqueraded (hairpin, localhost), as portmap uses.
pub const HOSTPORT_MASQ_MARK: &str = "0x2000/0x2000";

/// A transport protocol for ports and service rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The lower-case name iptables uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A hostPort mapping of one pod port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only traffic to this node address is forwarded; `None` = any local address.
    pub host_ip: Option<Ipv4Addr>,
}

/// One pod's address and hostPort mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPorts {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<HostPort>,
}

/// Node NAT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Chain-name prefix, `RKUBE` in production.
    pub prefix: String,
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod range: traffic to it keeps the pod source IP (no masquerade),
    /// so pods on other nodes see the real client. `None`: only this node's pod CIDR.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Also forward hostPorts reached via 127.0.0.1 (needs `route_localnet=1`; off by default).
    pub localhost_hostports: bool,
}

/// The names of the chains the node NAT owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatChains {
    pub pod_masq: String,
    pub hostports: String,
    pub hostport_setmark: String,
    pub hostport_masq: String,
    pub pod_forward: String,
}

impl NatChains {
    /// Chain names for `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            pod_masq: format!("{prefix}-POD-MASQ"),
            hostports: format!("{prefix}-HOSTPORTS"),
            hostport_setmark: format!("{prefix}-HP-SETMARK"),
            hostport_masq: format!("{prefix}-HP-MASQ"),
            pod_forward: format!("{prefix}-POD-FORWARD"),
        }
    }
}

/// A clash between two hostPort mappings on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hostPort {protocol}/{port} is already used by pod {other}")]
pub struct HostPortConflict {
    pub port: u16,
    pub protocol: &'static str,
    pub other: String,
}

/// Checks that `wanted` does not reuse a (protocol, port, hostIP) already mapped by another pod.
pub fn check_host_ports(
    existing: &[PodPorts],
    pod: &str,
    wanted: &[HostPort],
) -> Result<(), HostPortConflict> {
    let overlaps = |a: &HostPort, b: &HostPort| {
        a.protocol == b.protocol
            && a.host_port == b.host_port
            && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
    };
    let mut seen: Vec<&HostPort> = Vec::new();
    for want in wanted {
        if seen.iter().any(|s| overlaps(s, want)) {
            return Err(HostPortConflict {
                port: want.host_port,
                protocol: want.protocol.as_str(),
                other: pod.into(),
            });
        }
        seen.push(want);
        for other in existing.iter().filter(|p| p.pod != pod) {
            if other.ports.iter().any(|o| overlaps(o, want)) {
                return Err(HostPortConflict {
                    port: want.host_port,
                    protocol: want.protocol.as_str(),
                    other: other.pod.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Renders the whole node NAT state as `iptables-restore --noflush` input (chains rewritten atomically).
pub fn render(config: &NatConfig, pods: &[PodPorts]) -> String {
    let c = NatChains::new(&config.prefix);
    let cidr = config.pod_cidr.trunc();
    // Forwarding is accepted for the whole cluster's pod range when there is one, whatever the
    // FORWARD policy (docker sets DROP): a Service's DNAT to a pod on another node (NodePort,
    // LoadBalancer) is forwarded here to that pod, and the nftables proxy, unlike the iptables
    // one, cannot accept in the iptables filter table.
    let forward = config.cluster_cidr.map_or(cidr, |c| c.trunc());
    let mut out = String::new();
    let _ = writeln!(out, "*filter");
    let _ = writeln!(out, ":{} - [0:0]", c.pod_forward);
    let _ = writeln!(out, "-A {} -s {forward} -j ACCEPT", c.pod_forward);
    let _ = writeln!(out, "-A {} -d {forward} -j ACCEPT", c.pod_forward);
    let _ = writeln!(out, "COMMIT");
    let _ = writeln!(out, "*nat");
    for chain in [&c.pod_masq, &c.hostports, &c.hostport_setmark, &c.hostport_masq] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let _ = writeln!(out, "-A {} -d {cidr} -j RETURN", c.pod_masq);
    if let Some(cluster) = config.cluster_cidr.map(|c| c.trunc()).filter(|c| *c != cidr) {
        let _ = writeln!(out, "-A {} -d {cluster} -j RETURN", c.pod_masq);
    }
    let _ = writeln!(out, "-A {} -d 224.0.0.0/4 -j RETURN", c.pod_masq);
    let _ = writeln!(out, "-A {} -j MASQUERADE", c.pod_masq);
    let _ = writeln!(out, "-A {} -j MARK --set-xmark {HOSTPORT_MASQ_MARK}", c.hostport_setmark);
    let _ = writeln!(out, "-A {} -m mark --mark {HOSTPORT_MASQ_MARK} -j MASQUERADE", c.hostport_masq);
    let mut sorted: Vec<&PodPorts> = pods.iter().collect();
    sorted.sort_by(|a, b| a.pod.cmp(&b.pod));
    for pod in sorted {
        for hp in &pod.ports {
            let proto = hp.protocol.as_str();
            let dst = hp.host_ip.map(|ip| format!(" -d {ip}/32")).unwrap_or_default();
            let head = format!(
                "-A {} -m comment --comment \"{} hostPort {}\"{dst} -p {proto} -m {proto} --dport {}",
                c.hostports, pod.pod, hp.host_port, hp.host_port
            );
            let _ = writeln!(out, "{head} -s {}/32 -j {}", pod.ip, c.hostport_setmark);
            if config.localhost_hostports {
                let _ = writeln!(out, "{head} -s 127.0.0.1/32 -j {}", c.hostport_setmark);
            }
            let _ = writeln!(out, "{head} -j DNAT --to-destination {}:{}", pod.ip, hp.container_port);
        }
    }
    let _ = writeln!(out, "COMMIT");
    out
}

/// The jump rules from built-in chains into ours: (table, chain, rule).
pub fn jump_rules(config: &NatConfig) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let c = NatChains::new(&config.prefix);
    let cidr = config.pod_cidr.trunc().to_string();
    let local = |target: &str| -> Vec<String> {
        ["-m", "addrtype", "--dst-type", "LOCAL", "-j", target].map(str::to_string).to_vec()
    };
    vec![
        ("filter", "FORWARD", vec!["-j".into(), c.pod_forward.clone()]),
        ("nat", "POSTROUTING", vec!["-s".into(), cidr, "-j".into(), c.pod_masq.clone()]),
        ("nat", "POSTROUTING", vec!["-j".into(), c.hostport_masq.clone()]),
        ("nat", "PREROUTING", local(&c.hostports)),
        ("nat", "OUTPUT", local(&c.hostports)),
    ]
}

/// Loads the node NAT rules and the missing jumps into them in one `iptables-restore` (our chains
/// are rewritten atomically), after one `iptables-save` to see which jumps exist: two processes in
/// all, whatever the number of pods. Acts in the calling thread's network namespace.
/// When `last_applied` (what the previous call loaded) equals what would be loaded now and the
/// ruleset still holds it, nothing is loaded: rewriting chains is a slow nf_tables commit. Returns
/// the rendered rules to remember for the next call.
pub fn apply(
    config: &NatConfig,
    pods: &[PodPorts],
    last_applied: Option<&str>,
) -> Result<String, IptablesError> {
    let saved = iptables::save_all()?;
    let rendered = render(config, pods);
    if last_applied == Some(rendered.as_str()) && is_loaded(config, &rendered, &saved) {
        return Ok(rendered);
    }
    iptables::restore(&render_apply(config, pods, &saved))?;
    Ok(rendered)
}

/// Whether `saved` holds every jump and, in each chain `rendered` declares, as many rules as it
/// renders (iptables-save reorders match options, so lines are not compared one by one).
pub fn is_loaded(config: &NatConfig, rendered: &str, saved: &str) -> bool {
    let jumps_present = jump_rules(config).iter().all(|(table, chain, rule)| {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::count_rule(saved, table, chain, &rule) > 0
    });
    jumps_present
        && ["filter", "nat"].iter().all(|table| {
            let ours = table_text(rendered, table);
            let theirs = table_text(saved, table);
            iptables::parse_chain_names(&ours, &config.prefix).iter().all(|chain| {
                let head = format!("-A {chain} ");
                let count = |text: &str| text.lines().filter(|l| l.starts_with(&head)).count();
                theirs.lines().any(|l| l.split_whitespace().next() == Some(&format!(":{chain}")))
                    && count(&ours) == count(&theirs)
            })
        })
}

/// [`render`] plus, per table, an `-I` line for every jump rule missing from `saved`.
pub fn render_apply(config: &NatConfig, pods: &[PodPorts], saved: &str) -> String {
    let jumps = jump_rules(config);
    let mut out = String::new();
    for section in render(config, pods).split_inclusive("COMMIT\n") {
        let table = section.lines().next().and_then(|l| l.strip_prefix('*')).unwrap_or_default();
        out.push_str(section.strip_suffix("COMMIT\n").unwrap_or(section));
        for (_, chain, rule) in jumps.iter().filter(|(t, _, _)| *t == table) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            if iptables::count_rule(saved, table, chain, &rule) == 0 {
                let _ = writeln!(out, "-I {chain} {}", rule.join(" "));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Removes the jumps and our chains, leaving nothing behind, with one `iptables-save` and (if
/// anything is left) one `iptables-restore`. Idempotent.
pub fn remove(config: &NatConfig) -> Result<(), IptablesError> {
    let input = render_remove(config, &iptables::save_all()?);
    if input.is_empty() { Ok(()) } else { iptables::restore(&input) }
}

/// Restore input deleting every copy of our jumps and our chains present in `saved`.
pub fn render_remove(config: &NatConfig, saved: &str) -> String {
    let c = NatChains::new(&config.prefix);
    let ours: BTreeSet<&str> =
        [&c.pod_masq, &c.hostports, &c.hostport_setmark, &c.hostport_masq, &c.pod_forward]
            .map(String::as_str)
            .into();
    let jumps = jump_rules(config);
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let mut body = String::new();
        for (_, chain, rule) in jumps.iter().filter(|(t, _, _)| *t == table) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            for _ in 0..iptables::count_rule(saved, table, chain, &rule) {
                let _ = writeln!(body, "-D {chain} {}", rule.join(" "));
            }
        }
        let section = table_text(saved, table);
        let existing: Vec<String> = iptables::parse_chain_names(&section, &config.prefix)
            .into_iter()
            .filter(|name| ours.contains(name.as_str()))
            .collect();
        let chains = iptables::render_delete_chains(table, &existing);
        let chains_body =
            chains.strip_prefix(&format!("*{table}\n")).and_then(|b| b.strip_suffix("COMMIT\n"));
        body.push_str(chains_body.unwrap_or_default());
        if !body.is_empty() {
            let _ = write!(out, "*{table}\n{body}COMMIT\n");
        }
    }
    out
}

fn table_text(saved: &str, table: &str) -> String {
    iptables::table_section(saved, table).iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NatConfig {
        NatConfig {
            prefix: "RKUBE".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            cluster_cidr: None,
            localhost_hostports: false,
        }
    }

    fn web() -> PodPorts {
        PodPorts {
            pod: "web".into(),
            ip: "10.244.1.2".parse().unwrap(),
            ports: vec![HostPort {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
        }
    }

    #[test]
    fn golden_node_rules() {
        let expected = "\
*filter
:RKUBE-POD-FORWARD - [0:0]
-A RKUBE-POD-FORWARD -s 10.244.1.0/24 -j ACCEPT
-A RKUBE-POD-FORWARD -d 10.244.1.0/24 -j ACCEPT
COMMIT
*nat
:RKUBE-POD-MASQ - [0:0]
:RKUBE-HOSTPORTS - [0:0]
:RKUBE-HP-SETMARK - [0:0]
:RKUBE-HP-MASQ - [0:0]
-A RKUBE-POD-MASQ -d 10.244.1.0/24 -j RETURN
-A RKUBE-POD-MASQ -d 224.0.0.0/4 -j RETURN
-A RKUBE-POD-MASQ -j MASQUERADE
-A RKUBE-HP-SETMARK -j MARK --set-xmark 0x2000/0x2000
-A RKUBE-HP-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A RKUBE-HOSTPORTS -m comment --comment \"web hostPort 8080\" -p tcp -m tcp --dport 8080 -s 10.244.1.2/32 -j RKUBE-HP-SETMARK
-A RKUBE-HOSTPORTS -m comment --comment \"web hostPort 8080\" -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.2:80
COMMIT
";
        assert_eq!(render(&config(), &[web()]), expected);
    }

    #[test]
    fn host_ip_and_localhost_are_rendered() {
        let mut cfg = config();
        cfg.localhost_hostports = true;
        let mut pod = web();
        pod.ports[0].host_ip = Some("192.168.1.5".parse().unwrap());
        pod.ports[0].protocol = Protocol::Udp;
        let text = render(&cfg, &[pod]);
        assert!(
            text.contains("-d 192.168.1.5/32 -p udp -m udp --dport 8080 -s 127.0.0.1/32 -j RKUBE-HP-SETMARK")
        );
        assert!(
            text.contains(
                "-d 192.168.1.5/32 -p udp -m udp --dport 8080 -j DNAT --to-destination 10.244.1.2:80"
            )
        );
    }

    #[test]
    fn cluster_cidr_is_not_masqueraded() {
        let cfg = NatConfig { cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), ..config() };
        let text = render(&cfg, &[]);
        assert!(text.contains(
            "-A RKUBE-POD-MASQ -d 10.244.1.0/24 -j RETURN\n-A RKUBE-POD-MASQ -d 10.244.0.0/16 -j RETURN\n"
        ));
        // Forwarding to and from pods on other nodes is accepted too.
        assert!(text.contains(
            "-A RKUBE-POD-FORWARD -s 10.244.0.0/16 -j ACCEPT\n-A RKUBE-POD-FORWARD -d 10.244.0.0/16 -j ACCEPT\n"
        ));
    }

    #[test]
    fn no_pods_means_only_masquerade() {
        let text = render(&config(), &[]);
        assert!(!text.contains("DNAT"));
        assert!(text.contains("-A RKUBE-POD-MASQ -j MASQUERADE"));
    }

    #[test]
    fn jumps_reference_our_chains() {
        let jumps = jump_rules(&config());
        assert_eq!(jumps.len(), 5);
        assert!(jumps.iter().all(|(_, _, rule)| rule.last().unwrap().starts_with("RKUBE-")));
        assert_eq!(jumps[1].2, vec!["-s", "10.244.1.0/24", "-j", "RKUBE-POD-MASQ"]);
    }

    const SAVED_WITH_JUMPS: &str = "\
*filter
:FORWARD ACCEPT [0:0]
:RKUBE-POD-FORWARD - [0:0]
-A FORWARD -j RKUBE-POD-FORWARD
-A RKUBE-POD-FORWARD -s 10.244.1.0/24 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:RKUBE-POD-MASQ - [0:0]
:RKUBE-HOSTPORTS - [0:0]
:RKUBE-OTHER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS
-A POSTROUTING -s 10.244.1.0/24 -j RKUBE-POD-MASQ
-A POSTROUTING -s 10.244.1.0/24 -j RKUBE-POD-MASQ
COMMIT
";

    #[test]
    fn apply_inserts_only_missing_jumps() {
        let all = render_apply(&config(), &[web()], "");
        assert_eq!(all.matches("\n-I ").count(), 5, "{all}");
        assert!(all.contains("-I FORWARD -j RKUBE-POD-FORWARD\nCOMMIT\n*nat\n"), "{all}");
        assert!(
            all.ends_with("-I OUTPUT -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS\nCOMMIT\n"),
            "{all}"
        );
        let rest = render_apply(&config(), &[web()], SAVED_WITH_JUMPS);
        let inserted: Vec<&str> = rest.lines().filter(|l| l.starts_with("-I ")).collect();
        assert_eq!(
            inserted,
            ["-I POSTROUTING -j RKUBE-HP-MASQ", "-I OUTPUT -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS"]
        );
        // Without the jumps it is exactly the chain contents.
        let plain: String =
            rest.lines().filter(|l| !l.starts_with("-I ")).map(|l| format!("{l}\n")).collect();
        assert_eq!(plain, render(&config(), &[web()]));
    }

    #[test]
    fn loaded_rules_are_recognised_by_jumps_and_rule_counts() {
        let rendered = render(&config(), &[]);
        let jumps = "-A FORWARD -j RKUBE-POD-FORWARD\n-A POSTROUTING -s 10.244.1.0/24 -j RKUBE-POD-MASQ\n-A POSTROUTING -j RKUBE-HP-MASQ\n-A PREROUTING -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS\n-A OUTPUT -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS\n";
        // What iptables-save prints after loading `rendered` plus the jumps (built-ins first).
        let mut saved = String::new();
        for table in ["filter", "nat"] {
            saved.push_str(&format!("*{table}\n"));
            for l in jumps.lines().filter(|l| (table == "filter") == l.contains("FORWARD")) {
                saved.push_str(&format!("{l}\n"));
            }
            saved.push_str(&table_text(&rendered, table));
            saved.push_str("COMMIT\n");
        }
        assert!(is_loaded(&config(), &rendered, &saved));
        // A missing jump, a flushed chain or an extra rule all mean: load again.
        assert!(!is_loaded(&config(), &rendered, &saved.replace("-A FORWARD -j RKUBE-POD-FORWARD\n", "")));
        assert!(!is_loaded(&config(), &rendered, &saved.replace("-A RKUBE-POD-MASQ -j MASQUERADE\n", "")));
        let with_port = render(&config(), &[web()]);
        assert!(!is_loaded(&config(), &with_port, &saved));
    }

    #[test]
    fn remove_deletes_every_copy_of_our_jumps_and_only_our_chains() {
        let text = render_remove(&config(), SAVED_WITH_JUMPS);
        let expected = "\
*filter
-D FORWARD -j RKUBE-POD-FORWARD
:RKUBE-POD-FORWARD - [0:0]
-X RKUBE-POD-FORWARD
COMMIT
*nat
-D POSTROUTING -s 10.244.1.0/24 -j RKUBE-POD-MASQ
-D POSTROUTING -s 10.244.1.0/24 -j RKUBE-POD-MASQ
-D PREROUTING -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS
:RKUBE-POD-MASQ - [0:0]
:RKUBE-HOSTPORTS - [0:0]
-X RKUBE-POD-MASQ
-X RKUBE-HOSTPORTS
COMMIT
";
        assert_eq!(text, expected);
        assert_eq!(render_remove(&config(), "*filter\nCOMMIT\n*nat\nCOMMIT\n"), "");
    }

    #[test]
    fn host_port_conflicts_are_detected() {
        let existing = [web()];
        let same = HostPort { host_port: 8080, container_port: 81, protocol: Protocol::Tcp, host_ip: None };
        let err = check_host_ports(&existing, "other", &[same]).unwrap_err();
        assert_eq!(err.other, "web");
        // Same pod re-applying its own ports is fine; another protocol is fine.
        assert!(check_host_ports(&existing, "web", &[same]).is_ok());
        let udp = HostPort { protocol: Protocol::Udp, ..same };
        assert!(check_host_ports(&existing, "other", &[udp]).is_ok());
        // Two distinct host IPs do not clash.
        let a = HostPort { host_ip: Some("10.0.0.1".parse().unwrap()), ..same };
        let b = HostPort { host_ip: Some("10.0.0.2".parse().unwrap()), ..same };
        assert!(check_host_ports(&[], "p", &[a, b]).is_ok());
        assert!(check_host_ports(&[], "p", &[a, a]).is_err());
    }
}
