//! `/etc/hosts` and `/etc/resolv.conf` contents for a pod (pure).

use std::fmt::Write as _;
use std::net::IpAddr;

/// DNS settings written into every pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// `/etc/hosts` for a pod: localhost entries plus `pod_ip hostname` (hostname = pod name).
pub fn hosts_file(hostname: &str, pod_ip: Option<IpAddr>, extra: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (rkube).\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str(
        "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    for (ip, names) in extra {
        if !names.is_empty() {
            let _ = writeln!(out, "\n# Entries added by HostAliases.\n{ip}\t{}", names.join("\t"));
        }
    }
    out
}

/// `/etc/resolv.conf` from `config` (at most 3 nameservers, as glibc reads).
pub fn resolv_conf(config: &DnsConfig) -> String {
    let mut out = String::new();
    if !config.searches.is_empty() {
        let _ = writeln!(out, "search {}", config.searches.join(" "));
    }
    for ns in config.nameservers.iter().take(3) {
        let _ = writeln!(out, "nameserver {ns}");
    }
    if !config.options.is_empty() {
        let _ = writeln!(out, "options {}", config.options.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_localhost_and_pod_name() {
        let text = hosts_file("web-0", Some("10.244.0.5".parse().unwrap()), &[]);
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.244.0.5\tweb-0\n"));
        let aliased = hosts_file("x", None, &[("1.2.3.4".parse().unwrap(), vec!["a".into(), "b".into()])]);
        assert!(aliased.contains("1.2.3.4\ta\tb\n"));
        assert!(!aliased.contains("\tx\n"));
    }

    #[test]
    fn resolv_conf_lines() {
        let config = DnsConfig {
            nameservers: ["10.96.0.10", "1.1.1.1", "8.8.8.8", "9.9.9.9"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&config),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n\
             nameserver 8.8.8.8\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
    }
}
