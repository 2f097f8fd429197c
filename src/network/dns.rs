//! `/etc/hosts` and `/etc/resolv.conf` contents for a pod (pure).

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// DNS settings written into every pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// `/etc/hosts` for a pod: localhost entries plus `pod_ip [fqdn] hostname` (hostname = pod name;
/// `fqdn` for a pod with a `subdomain`: `<hostname>.<subdomain>.<ns>.svc.<domain>`).
pub fn hosts_file(
    hostname: &str,
    fqdn: Option<&str>,
    pod_ip: Option<IpAddr>,
    extra: &[(IpAddr, Vec<String>)],
) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (rkube).\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str(
        "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match (pod_ip, fqdn) {
        (Some(ip), Some(fqdn)) => {
            let _ = writeln!(out, "{ip}\t{fqdn}\t{hostname}");
        }
        (Some(ip), None) => {
            let _ = writeln!(out, "{ip}\t{hostname}");
        }
        (None, _) => {}
    }
    push_aliases(&mut out, extra);
    out
}

fn push_aliases(out: &mut String, extra: &[(IpAddr, Vec<String>)]) {
    for (ip, names) in extra {
        if !names.is_empty() {
            let _ = writeln!(out, "\n# Entries added by HostAliases.\n{ip}\t{}", names.join("\t"));
        }
    }
}

/// Where the node's own hosts file is.
pub const NODE_HOSTS: &str = "/etc/hosts";

/// `/etc/hosts` for a pod in the node's network namespace: the node's file, plus HostAliases.
pub fn node_hosts_file(node_hosts: &str, extra: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = node_hosts.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    push_aliases(&mut out, extra);
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

/// How a pod's DNS is set up (`spec.dnsPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsPolicy {
    /// The cluster DNS, unless the pod uses the host's network (then as `Default`).
    #[default]
    ClusterFirst,
    /// The cluster DNS, also for a pod on the host's network.
    ClusterFirstWithHostNet,
    /// The node's own resolv.conf.
    Default,
    /// Only what the pod's `dnsConfig` gives.
    None,
}

impl DnsPolicy {
    /// From `spec.dnsPolicy` (`None`: unset, the default).
    pub fn parse(value: Option<&str>) -> Option<DnsPolicy> {
        Some(match value {
            None | Some("ClusterFirst") => DnsPolicy::ClusterFirst,
            Some("ClusterFirstWithHostNet") => DnsPolicy::ClusterFirstWithHostNet,
            Some("Default") => DnsPolicy::Default,
            Some("None") => DnsPolicy::None,
            Some(_) => return None,
        })
    }
}

/// The node's side of pod DNS, as the kubelet's `clusterDNS`, `clusterDomain` and `resolvConf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDns {
    /// The cluster DNS Service's address (empty: no cluster DNS, pods get the node's resolvers).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// The node's own resolvers and search list.
    pub host: DnsConfig,
}

/// At most this many search domains, as the kubelet (and glibc since 2.26) allows.
const MAX_SEARCHES: usize = 32;

fn push_unique<T: PartialEq + Clone>(to: &mut Vec<T>, from: &[T]) {
    for x in from {
        if !to.contains(x) {
            to.push(x.clone());
        }
    }
}

/// A pod's resolv.conf settings (pure), as the kubelet computes them: by policy the cluster DNS
/// (`search <ns>.svc.<domain> svc.<domain> <domain> <host searches>`, `options ndots:5`), the
/// node's, or none; then the pod's own `dnsConfig` (nameservers and searches appended without
/// duplicates, options merged by name, the pod's value winning).
pub fn pod_dns(
    policy: DnsPolicy,
    host_network: bool,
    namespace: &str,
    pod: &DnsConfig,
    node: &NodeDns,
) -> DnsConfig {
    let cluster = match policy {
        DnsPolicy::ClusterFirst => !host_network,
        DnsPolicy::ClusterFirstWithHostNet => true,
        DnsPolicy::Default | DnsPolicy::None => false,
    } && !node.cluster_dns.is_empty();
    let mut out = match policy {
        DnsPolicy::None => DnsConfig::default(),
        _ if cluster => {
            let d = &node.cluster_domain;
            let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.clone()];
            push_unique(&mut searches, &node.host.searches);
            DnsConfig { nameservers: node.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
        _ => node.host.clone(),
    };
    push_unique(&mut out.nameservers, &pod.nameservers);
    push_unique(&mut out.searches, &pod.searches);
    out.searches.truncate(MAX_SEARCHES);
    let key = |o: &String| o.split(':').next().unwrap_or_default().to_string();
    for o in &pod.options {
        match out.options.iter_mut().find(|have| key(have) == key(o)) {
            Some(have) => *have = o.clone(),
            None => out.options.push(o.clone()),
        }
    }
    out
}

/// The nameservers, search domains and options of a resolv.conf text (loopback nameservers left
/// out: they would be the pod's own loopback).
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok())
                    && !ip.is_loopback()
                {
                    out.nameservers.push(ip);
                }
            }
            // The last search or domain line wins, as in glibc.
            Some("search") | Some("domain") => out.searches = words.map(String::from).collect(),
            Some("options") => out.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    out
}

/// Error writing a pod's DNS files.
#[derive(Debug, thiserror::Error)]
#[error("write {path}: {source}")]
pub struct DnsFileError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Writes `hosts`, `resolv.conf` and `hostname` for a pod into `dir` (bind-mounted into its
/// containers at `/etc/...` by the runtime); returns the three paths.
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    pod_ip: Option<IpAddr>,
    dns: &DnsConfig,
) -> Result<[PathBuf; 3], DnsFileError> {
    let files = [
        (dir.join("hosts"), hosts_file(hostname, None, pod_ip, &[])),
        (dir.join("resolv.conf"), resolv_conf(dns)),
        (dir.join("hostname"), format!("{hostname}\n")),
    ];
    std::fs::create_dir_all(dir).map_err(|source| DnsFileError { path: dir.into(), source })?;
    for (path, text) in &files {
        std::fs::write(path, text).map_err(|source| DnsFileError { path: path.clone(), source })?;
    }
    let [(a, _), (b, _), (c, _)] = files;
    Ok([a, b, c])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsConfig { nameservers: vec!["10.96.0.10".parse().unwrap()], ..DnsConfig::default() };
        let [hosts, resolv, hostname] =
            write_pod_files(&dir.path().join("etc"), "web", Some("10.1.0.2".parse().unwrap()), &dns).unwrap();
        assert!(std::fs::read_to_string(hosts).unwrap().ends_with("10.1.0.2\tweb\n"));
        assert_eq!(std::fs::read_to_string(resolv).unwrap(), "nameserver 10.96.0.10\n");
        assert_eq!(std::fs::read_to_string(hostname).unwrap(), "web\n");
    }

    #[test]
    fn hosts_has_localhost_and_pod_name() {
        let text = hosts_file("web-0", None, Some("10.244.0.5".parse().unwrap()), &[]);
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.244.0.5\tweb-0\n"));
        let node = node_hosts_file("127.0.0.1 localhost", &[("1.2.3.4".parse().unwrap(), vec!["a".into()])]);
        assert_eq!(node, "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n");
        let fqdn = hosts_file(
            "web-0",
            Some("web-0.web.db.svc.cluster.local"),
            Some("10.244.0.5".parse().unwrap()),
            &[],
        );
        assert!(fqdn.ends_with("10.244.0.5\tweb-0.web.db.svc.cluster.local\tweb-0\n"), "{fqdn}");
        let aliased =
            hosts_file("x", None, None, &[("1.2.3.4".parse().unwrap(), vec!["a".into(), "b".into()])]);
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

    #[test]
    fn pod_dns_follows_the_policy_and_the_pods_own_config() {
        let node = NodeDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf(
                "# host\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp.example svc.cluster.local\noptions edns0\n",
            ),
        };
        assert_eq!(node.host.nameservers, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        let none = DnsConfig::default();
        let cluster = pod_dns(DnsPolicy::ClusterFirst, false, "web", &none, &node);
        assert_eq!(
            resolv_conf(&cluster),
            "search web.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
        // On the host's network ClusterFirst means the node's resolvers; WithHostNet keeps the cluster's.
        assert_eq!(pod_dns(DnsPolicy::ClusterFirst, true, "web", &none, &node), node.host);
        assert_eq!(pod_dns(DnsPolicy::ClusterFirstWithHostNet, true, "web", &none, &node), cluster);
        assert_eq!(pod_dns(DnsPolicy::Default, false, "web", &none, &node), node.host);
        // No cluster DNS: the node's resolvers.
        let lone = NodeDns { cluster_dns: vec![], ..node.clone() };
        assert_eq!(pod_dns(DnsPolicy::ClusterFirst, false, "web", &none, &lone), node.host);
        // The pod's dnsConfig: appended without duplicates, options merged by name.
        let own = DnsConfig {
            nameservers: vec!["10.96.0.10".parse().unwrap(), "192.0.2.53".parse().unwrap()],
            searches: vec!["svc.cluster.local".into(), "mine.example".into()],
            options: vec!["ndots:2".into(), "edns0".into()],
        };
        let merged = pod_dns(DnsPolicy::ClusterFirst, false, "web", &own, &node);
        assert_eq!(merged.nameservers.len(), 2);
        assert_eq!(merged.searches.last().map(String::as_str), Some("mine.example"));
        assert_eq!(merged.searches.len(), 5);
        assert_eq!(merged.options, ["ndots:2", "edns0"]);
        assert_eq!(pod_dns(DnsPolicy::None, false, "web", &own, &node), own);
        assert_eq!(DnsPolicy::parse(Some("None")), Some(DnsPolicy::None));
        assert_eq!(DnsPolicy::parse(None), Some(DnsPolicy::ClusterFirst));
        assert_eq!(DnsPolicy::parse(Some("Bogus")), None);
    }
}
