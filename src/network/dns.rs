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
        (dir.join("hosts"), hosts_file(hostname, pod_ip, &[])),
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
        let text = hosts_file("web-0", Some("10.244.0.5".parse().unwrap()), &[]);
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.244.0.5\tweb-0\n"));
        let node = node_hosts_file("127.0.0.1 localhost", &[("1.2.3.4".parse().unwrap(), vec!["a".into()])]);
        assert_eq!(node, "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n");
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
