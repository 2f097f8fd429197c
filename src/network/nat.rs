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
    let mut out = String::new();
    let _ = writeln!(out, "*filter");
    let _ = writeln!(out, ":{} - [0:0]", c.pod_forward);
    let _ = writeln!(out, "-A {} -s {cidr} -j ACCEPT", c.pod_forward);
    let _ = writeln!(out, "-A {} -d {cidr} -j ACCEPT", c.pod_forward);
    let _ = writeln!(out, "COMMIT");
    let _ = writeln!(out, "*nat");
    for chain in [&c.pod_masq, &c.hostports, &c.hostport_setmark, &c.hostport_masq] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let _ = writeln!(out, "-A {} -d {cidr} -j RETURN", c.pod_masq);
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

/// Loads the node NAT rules (atomic rewrite of our chains), then makes sure the jumps exist.
/// Acts in the calling thread's network namespace.
pub fn apply(config: &NatConfig, pods: &[PodPorts]) -> Result<(), IptablesError> {
    iptables::restore(&render(config, pods))?;
    for (table, chain, rule) in jump_rules(config) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::ensure_rule(table, chain, &rule)?;
    }
    Ok(())
}

/// Removes the jumps and our chains, leaving nothing behind. Idempotent.
pub fn remove(config: &NatConfig) -> Result<(), IptablesError> {
    for (table, chain, rule) in jump_rules(config) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::delete_rule(table, chain, &rule)?;
    }
    let c = NatChains::new(&config.prefix);
    let ours: BTreeSet<&str> =
        [&c.pod_masq, &c.hostports, &c.hostport_setmark, &c.hostport_masq, &c.pod_forward]
            .map(String::as_str)
            .into();
    let mut input = String::new();
    for table in ["filter", "nat"] {
        let existing: Vec<String> = iptables::chains_with_prefix(table, &config.prefix)?
            .into_iter()
            .filter(|name| ours.contains(name.as_str()))
            .collect();
        input.push_str(&iptables::render_delete_chains(table, &existing));
    }
    if input.is_empty() { Ok(()) } else { iptables::restore(&input) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NatConfig {
        NatConfig {
            prefix: "RKUBE".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
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
