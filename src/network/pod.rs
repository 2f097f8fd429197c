//! `PodNetwork`: the whole network sandbox of a pod (netns, veth to the node bridge, IP, NAT),
//! set up and torn down as one idempotent operation.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ipam::{Ipam, IpamError};
use super::iptables::IptablesError;
use super::link::{self, LinkError};
use super::nat::{self, HostPort, HostPortConflict, NatConfig, PodPorts};
use super::netns::{NetnsError, NetnsStore, run_in_netns};
use super::sysctl::{self, SysctlError};

/// Name of the pod-side interface.
pub const POD_IFNAME: &str = "eth0";

/// Errors from setting up or tearing down a pod's network.
#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    #[error("pod network {pod}: {source}")]
    Netns { pod: String, source: NetnsError },
    #[error("pod network {pod}: {source}")]
    Link { pod: String, source: LinkError },
    #[error("pod network {pod}: {source}")]
    Ipam { pod: String, source: IpamError },
    #[error("pod network {pod}: {source}")]
    Iptables { pod: String, source: IptablesError },
    #[error("pod network {pod}: {source}")]
    Sysctl { pod: String, source: SysctlError },
    #[error("pod network {pod}: {source}")]
    HostPort { pod: String, source: HostPortConflict },
    #[error("pod network state {path}: {step}: {source}")]
    State { path: PathBuf, step: &'static str, source: io::Error },
    #[error("pod network config: {reason}")]
    Config { reason: String },
    #[error(
        "pod CIDR {cidr} overlaps {network} on {link}, which this host already uses; choose another with --pod-cidr"
    )]
    CidrOverlap { cidr: Ipv4Net, network: Ipv4Net, link: String },
    #[error("pod CIDR {cidr}: reading the host's addresses and routes: {source}")]
    CidrCheck { cidr: Ipv4Net, source: LinkError },
}

/// The first of `networks` (link name, network) that overlaps `cidr`, ignoring the node's own
/// bridge `bridge` (it carries the pod CIDR itself once a pod ran).
pub fn overlapping_network<'a>(
    cidr: Ipv4Net,
    bridge: &str,
    networks: &'a [(String, Ipv4Net)],
) -> Option<&'a (String, Ipv4Net)> {
    networks.iter().find(|(link, net)| {
        link != bridge && (cidr.contains(&net.network()) || net.contains(&cidr.network()))
    })
}

/// Whether the node whose network state is under `state_dir` has no pod network yet (so nothing
/// of ours carries the pod CIDR). Reads only.
pub fn node_has_no_pods(state_dir: &Path) -> bool {
    fs::read_dir(state_dir.join("pods")).map_or(true, |mut entries| entries.next().is_none())
}

/// The first network of another link than `ignore` in the namespace at `netns` (`None`: ours)
/// that overlaps `cidr`, as `(link, network)`. Reads only.
pub fn host_network_overlapping(
    cidr: Ipv4Net,
    ignore: &str,
    netns: Option<&Path>,
) -> Result<Option<(String, Ipv4Net)>, LinkError> {
    let networks = link::with_netlink(netns, |handle| async move { link::ipv4_networks(&handle).await })?;
    Ok(overlapping_network(cidr, ignore, &networks).cloned())
}

/// Refuses a pod CIDR that overlaps a network the node's namespace already has (another bridge such
/// as podman's `cni-podman0` on 10.88.0.0/16, docker's, a LAN): pods there would be unreachable.
/// Reads only; call it before creating anything.
pub fn check_pod_cidr(config: &PodNetworkConfig) -> Result<(), PodNetworkError> {
    let cidr = config.pod_cidr;
    match host_network_overlapping(cidr, &config.bridge, config.node_netns.as_deref()) {
        Ok(Some((link, network))) => Err(PodNetworkError::CidrOverlap { cidr, network, link }),
        Ok(None) => Ok(()),
        Err(source) => Err(PodNetworkError::CidrCheck { cidr, source }),
    }
}

/// Settings of a node's pod network. Every host path and name is a parameter.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// Node bridge name (`rkube0`).
    pub bridge: String,
    /// The node's pod CIDR; its first host address is the bridge gateway.
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod range (all nodes); traffic to it is not masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Directory of pinned pod network namespaces (`/run/rkube/netns`).
    pub netns_dir: PathBuf,
    /// Directory for IPAM and pod records (`/var/lib/rkube/network`).
    pub state_dir: PathBuf,
    /// The node's network namespace (`None`: the caller's). Bridge, host veths and rules live there.
    pub node_netns: Option<PathBuf>,
    /// Chain-name prefix (`RKUBE`).
    pub chain_prefix: String,
    /// Host veth name prefix (`rkv`), at most 7 bytes.
    pub veth_prefix: String,
    /// Hairpin mode on bridge ports (a pod reaching itself through a Service or hostPort).
    pub hairpin: bool,
    /// Forward hostPorts reached via 127.0.0.1 (sets `route_localnet=1`; off by default).
    pub localhost_hostports: bool,
}

impl PodNetworkConfig {
    /// Production defaults for `pod_cidr`: bridge `rkube0`, `/run/rkube/netns`, `/var/lib/rkube/network`.
    pub fn new(pod_cidr: Ipv4Net) -> Self {
        Self {
            bridge: "rkube0".into(),
            pod_cidr,
            cluster_cidr: None,
            mtu: 1500,
            netns_dir: "/run/rkube/netns".into(),
            state_dir: "/var/lib/rkube/network".into(),
            node_netns: None,
            chain_prefix: "RKUBE".into(),
            veth_prefix: "rkv".into(),
            hairpin: true,
            localhost_hostports: false,
        }
    }

    fn nat(&self) -> NatConfig {
        NatConfig {
            prefix: self.chain_prefix.clone(),
            pod_cidr: self.pod_cidr.trunc(),
            cluster_cidr: self.cluster_cidr,
            localhost_hostports: self.localhost_hostports,
        }
    }
}

/// What the pod runtime needs to know about a set-up pod network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkInfo {
    /// Pinned netns to put in the OCI spec (`linux.namespaces[{type: network, path}]`).
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Host-side veth name.
    pub veth: String,
}

/// What is stored per pod so teardown and rule rendering survive restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub pod_id: String,
    pub pod_name: String,
    pub info: PodNetworkInfo,
    pub host_ports: Vec<HostPort>,
}

/// Host veth name for a pod: `prefix` + 8 hex digits of sha256(pod id) (stable, so GC can find it).
pub fn veth_name(prefix: &str, pod_id: &str) -> String {
    let digest = Sha256::digest(pod_id.as_bytes());
    format!("{prefix}{}", &hex::encode(digest)[..8])
}

/// A node's pod network manager.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    config: PodNetworkConfig,
    netns: NetnsStore,
    ipam: Ipam,
}

impl PodNetwork {
    /// Validates `config` and opens the state directory.
    pub fn new(config: PodNetworkConfig) -> Result<Self, PodNetworkError> {
        if config.veth_prefix.is_empty() || config.veth_prefix.len() > 7 {
            return Err(PodNetworkError::Config { reason: "veth prefix must be 1..=7 bytes".into() });
        }
        if config.bridge.is_empty() || config.bridge.len() > 15 {
            return Err(PodNetworkError::Config {
                reason: format!("bridge name {:?} must be 1..=15 bytes", config.bridge),
            });
        }
        let ipam = Ipam::new(config.state_dir.join("ipam"), config.pod_cidr)
            .map_err(|source| PodNetworkError::Ipam { pod: "-".into(), source })?;
        let pods_dir = config.state_dir.join("pods");
        fs::create_dir_all(&pods_dir).map_err(|source| PodNetworkError::State {
            path: pods_dir,
            step: "create dir",
            source,
        })?;
        Ok(Self { netns: NetnsStore::new(&config.netns_dir), ipam, config })
    }

    /// The configuration.
    pub fn config(&self) -> &PodNetworkConfig {
        &self.config
    }

    /// The IP allocator (read access for status and tests).
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Path where the netns of `pod_id` is (or would be) pinned.
    pub fn netns_path(&self, pod_id: &str) -> Result<PathBuf, PodNetworkError> {
        self.netns.path(pod_id).map_err(|source| PodNetworkError::Netns { pod: pod_id.into(), source })
    }

    /// Checks that `host_ports` are free on this node (for validating a pod before creating anything).
    pub fn check_host_ports(&self, pod_id: &str, host_ports: &[HostPort]) -> Result<(), PodNetworkError> {
        let records = self.records()?;
        let existing: Vec<PodPorts> = records.iter().filter(|r| r.pod_id != pod_id).map(pod_ports).collect();
        nat::check_host_ports(&existing, pod_id, host_ports)
            .map_err(|source| PodNetworkError::HostPort { pod: pod_id.into(), source })
    }

    /// Reserves the pod's IP and pins its network namespace, so its containers can be created
    /// while [`PodNetwork::setup`] wires it. A hostPort clash fails before anything is reserved,
    /// and a failure leaves nothing of a new pod. Idempotent.
    #[tracing::instrument(level = "debug", name = "pod address", skip(self, host_ports))]
    pub fn reserve(&self, pod_id: &str, host_ports: &[HostPort]) -> Result<PodNetworkInfo, PodNetworkError> {
        self.netns_path(pod_id)?;
        let _lock = self.lock()?;
        self.check_host_ports(pod_id, host_ports)?;
        let existed = self.records()?.iter().any(|r| r.pod_id == pod_id);
        let reserved = self.reserve_locked(pod_id);
        if reserved.is_err() && !existed {
            let _ = self.teardown_locked(pod_id);
        }
        reserved
    }

    fn reserve_locked(&self, pod_id: &str) -> Result<PodNetworkInfo, PodNetworkError> {
        let pod = || pod_id.to_string();
        let ip = self.ipam.allocate(pod_id).map_err(|source| PodNetworkError::Ipam { pod: pod(), source })?;
        let netns_path =
            self.netns.create(pod_id).map_err(|source| PodNetworkError::Netns { pod: pod(), source })?;
        Ok(PodNetworkInfo {
            netns_path,
            ip,
            gateway: self.ipam.gateway(),
            prefix_len: self.config.pod_cidr.prefix_len(),
            veth: veth_name(&self.config.veth_prefix, pod_id),
        })
    }

    /// Creates the pod's network (netns, veth on the bridge, IP, routes, hostPorts), or brings an
    /// existing one back in line (idempotent). If a first setup fails, everything it created is
    /// removed again.
    #[tracing::instrument(level = "debug", name = "pod network", skip(self, pod_name, host_ports))]
    pub fn setup(
        &self,
        pod_id: &str,
        pod_name: &str,
        host_ports: &[HostPort],
    ) -> Result<PodNetworkInfo, PodNetworkError> {
        self.netns_path(pod_id)?; // the id names files: reject bad ones before creating anything
        let _lock = self.lock()?;
        self.check_host_ports(pod_id, host_ports)?;
        let records = self.records()?;
        let existed = records.iter().any(|r| r.pod_id == pod_id);
        match self.setup_locked(pod_id, pod_name, host_ports, records) {
            Ok(info) => Ok(info),
            // A first setup that fails leaves nothing; a failed re-setup keeps the running pod's network.
            Err(err) if existed => Err(err),
            Err(err) => {
                let _ = self.teardown_locked(pod_id);
                Err(err)
            }
        }
    }

    fn setup_locked(
        &self,
        pod_id: &str,
        pod_name: &str,
        host_ports: &[HostPort],
        mut records: Vec<PodRecord>,
    ) -> Result<PodNetworkInfo, PodNetworkError> {
        let pod = || pod_id.to_string();
        let info = self.reserve_locked(pod_id)?;
        let (ip, netns_path) = (info.ip, info.netns_path.clone());
        self.prepare_node(pod_id)?;

        let (bridge, mtu, hairpin) = (self.config.bridge.clone(), self.config.mtu, self.config.hairpin);
        let (gateway, prefix, veth) = (info.gateway, info.prefix_len, info.veth.clone());
        let pod_ns = File::open(&netns_path).map_err(|source| PodNetworkError::State {
            path: netns_path.clone(),
            step: "open netns",
            source,
        })?;
        // An existing pair is kept (re-creating it would change the pod's MAC under live peers).
        let pod_has_iface = link::with_netlink(Some(&netns_path), |handle| async move {
            link::link_index(&handle, POD_IFNAME).await
        })
        .map_err(|source| PodNetworkError::Link { pod: pod(), source })?
        .is_some();
        link::with_netlink(self.config.node_netns.as_deref(), |handle| async move {
            link::ensure_bridge(&handle, &bridge, gateway, prefix).await?;
            if !(pod_has_iface && link::link_index(&handle, &veth).await?.is_some()) {
                link::create_veth_into(&handle, &veth, POD_IFNAME, pod_ns.as_raw_fd(), mtu).await?;
            }
            link::attach_to_bridge(&handle, &veth, &bridge, hairpin).await
        })
        .map_err(|source| PodNetworkError::Link { pod: pod(), source })?;
        // Announce the pod's MAC when eth0 comes up (as CNI's bridge plugin does), so peers
        // never keep a stale neighbour entry for a re-used IP.
        run_in_netns(Some(&netns_path), || {
            sysctl::set(&format!("net.ipv4.conf.{POD_IFNAME}.arp_notify"), "1")
        })
        .map_err(|source| PodNetworkError::Netns { pod: pod(), source })?
        .map_err(|source| PodNetworkError::Sysctl { pod: pod(), source })?;
        link::with_netlink(Some(&netns_path), |handle| async move {
            link::configure_pod_interface(&handle, POD_IFNAME, ip, prefix, gateway).await
        })
        .map_err(|source| PodNetworkError::Link { pod: pod(), source })?;

        let record = PodRecord {
            pod_id: pod_id.into(),
            pod_name: pod_name.into(),
            info: info.clone(),
            host_ports: host_ports.to_vec(),
        };
        self.write_record(&record)?;
        records.retain(|r| r.pod_id != pod_id);
        records.push(record);
        self.sync_rules(pod_id, &records)?;
        Ok(info)
    }

    /// Node sysctls: forwarding on, bridged traffic through iptables, optional route_localnet.
    #[tracing::instrument(level = "debug", name = "node sysctls", skip_all)]
    fn prepare_node(&self, pod_id: &str) -> Result<(), PodNetworkError> {
        let localhost = self.config.localhost_hostports;
        run_in_netns(self.config.node_netns.as_deref(), || -> Result<(), SysctlError> {
            sysctl::set("net.ipv4.ip_forward", "1")?;
            sysctl::set_if_present("net.bridge.bridge-nf-call-iptables", "1")?;
            if localhost {
                sysctl::set("net.ipv4.conf.all.route_localnet", "1")?;
            }
            Ok(())
        })
        .map_err(|source| PodNetworkError::Netns { pod: pod_id.into(), source })?
        .map_err(|source| PodNetworkError::Sysctl { pod: pod_id.into(), source })
    }

    /// Renders and loads the node NAT rules for `records`; with no pods left, removes them.
    /// What was last loaded is remembered in `<state>/nat.rules`, so an unchanged ruleset (a pod
    /// without hostPorts joining a node) costs one `iptables-save` and no nf_tables commit.
    #[tracing::instrument(level = "debug", name = "node NAT rules", skip_all)]
    fn sync_rules(&self, pod_id: &str, records: &[PodRecord]) -> Result<(), PodNetworkError> {
        let nat_config = self.config.nat();
        let ports: Vec<PodPorts> = records.iter().map(pod_ports).collect();
        let remembered = self.config.state_dir.join("nat.rules");
        let last = fs::read_to_string(&remembered).ok();
        // Forgotten first: if loading fails half-way, the next call loads everything again.
        let _ = fs::remove_file(&remembered);
        let loaded = run_in_netns(self.config.node_netns.as_deref(), || {
            if ports.is_empty() {
                nat::remove(&nat_config).map(|()| None)
            } else {
                nat::apply(&nat_config, &ports, last.as_deref()).map(Some)
            }
        })
        .map_err(|source| PodNetworkError::Netns { pod: pod_id.into(), source })?
        .map_err(|source| PodNetworkError::Iptables { pod: pod_id.into(), source })?;
        if let Some(rules) = loaded {
            let tmp = remembered.with_extension("tmp");
            let _ = fs::write(&tmp, rules).and_then(|()| fs::rename(&tmp, &remembered));
        }
        Ok(())
    }

    /// Removes everything of the pod: veth, netns pin, IP, hostPort rules. Idempotent.
    pub fn teardown(&self, pod_id: &str) -> Result<(), PodNetworkError> {
        let _lock = self.lock()?;
        self.teardown_locked(pod_id)
    }

    fn teardown_locked(&self, pod_id: &str) -> Result<(), PodNetworkError> {
        let pod = || pod_id.to_string();
        let veth = veth_name(&self.config.veth_prefix, pod_id);
        link::with_netlink(self.config.node_netns.as_deref(), |handle| async move {
            link::delete_link(&handle, &veth).await
        })
        .map_err(|source| PodNetworkError::Link { pod: pod(), source })?;
        self.netns.delete(pod_id).map_err(|source| PodNetworkError::Netns { pod: pod(), source })?;
        self.ipam.release(pod_id).map_err(|source| PodNetworkError::Ipam { pod: pod(), source })?;
        let path = self.record_path(pod_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PodNetworkError::State { path, step: "remove record", source }),
        }
        let remaining: Vec<PodRecord> = self.records()?.into_iter().filter(|r| r.pod_id != pod_id).collect();
        self.sync_rules(pod_id, &remaining)
    }

    /// Removes the network of every pod not in `keep`: recorded pods, and also orphans left by a
    /// crash (netns pins, IP allocations, host veths). Returns the pod ids (or veths) removed.
    pub fn garbage_collect(&self, keep: &[&str]) -> Result<Vec<String>, PodNetworkError> {
        let _lock = self.lock()?;
        let mut stale: BTreeSet<String> = BTreeSet::new();
        stale.extend(self.records()?.into_iter().map(|r| r.pod_id));
        let ipam_err = |source| PodNetworkError::Ipam { pod: "-".into(), source };
        stale.extend(self.ipam.allocations().map_err(ipam_err)?.into_values());
        if let Ok(entries) = fs::read_dir(self.netns.dir()) {
            stale.extend(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)));
        }
        stale.retain(|id| !keep.contains(&id.as_str()));
        for pod_id in &stale {
            self.teardown_locked(pod_id)?;
        }
        // Host veths with our prefix that belong to no kept pod (e.g. records lost with a crash).
        let wanted: BTreeSet<String> =
            keep.iter().map(|id| veth_name(&self.config.veth_prefix, id)).collect();
        let prefix = self.config.veth_prefix.clone();
        let orphans = link::with_netlink(self.config.node_netns.as_deref(), |handle| async move {
            let mut removed = Vec::new();
            for name in link::link_names_with_prefix(&handle, &prefix).await? {
                if !wanted.contains(&name) {
                    link::delete_link(&handle, &name).await?;
                    removed.push(name);
                }
            }
            Ok(removed)
        })
        .map_err(|source| PodNetworkError::Link { pod: "-".into(), source })?;
        Ok(stale.into_iter().chain(orphans).collect())
    }

    /// Removes the node-level objects (rules and bridge); only allowed once no pod is set up.
    pub fn reset_node(&self) -> Result<(), PodNetworkError> {
        let _lock = self.lock()?;
        let records = self.records()?;
        if let Some(r) = records.first() {
            return Err(PodNetworkError::Config { reason: format!("pod {} still has a network", r.pod_id) });
        }
        self.sync_rules("-", &[])?;
        let bridge = self.config.bridge.clone();
        link::with_netlink(self.config.node_netns.as_deref(), |handle| async move {
            link::delete_link(&handle, &bridge).await
        })
        .map_err(|source| PodNetworkError::Link { pod: "-".into(), source })
    }

    /// Removes the on-disk state (IPAM, pod records, lock) and the pin directory, once
    /// [`Self::reset_node`] succeeded. The manager must not be used afterwards.
    pub fn remove_state(&self) -> Result<(), PodNetworkError> {
        self.netns.unshare_dir().map_err(|source| PodNetworkError::Netns { pod: "-".into(), source })?;
        for (dir, step) in [(self.netns.dir(), "remove pin dir"), (self.config.state_dir.as_path(), "remove")]
        {
            let removed = if dir == self.netns.dir() { fs::remove_dir(dir) } else { fs::remove_dir_all(dir) };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(PodNetworkError::State { path: dir.to_path_buf(), step, source }),
            }
        }
        Ok(())
    }

    /// Every pod with a network on this node, read from disk.
    pub fn records(&self) -> Result<Vec<PodRecord>, PodNetworkError> {
        let dir = self.config.state_dir.join("pods");
        let err = |step| {
            let path = dir.clone();
            move |source| PodNetworkError::State { path, step, source }
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(err("list"))? {
            let path = entry.map_err(err("list"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = fs::read(&path).map_err(err("read record"))?;
                let record: PodRecord = serde_json::from_slice(&text).map_err(|e| {
                    PodNetworkError::State { path: path.clone(), step: "parse record", source: e.into() }
                })?;
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.pod_id.cmp(&b.pod_id));
        Ok(out)
    }

    fn record_path(&self, pod_id: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(format!("{pod_id}.json"))
    }

    fn write_record(&self, record: &PodRecord) -> Result<(), PodNetworkError> {
        let path = self.record_path(&record.pod_id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(|e| PodNetworkError::State {
            path: path.clone(),
            step: "encode record",
            source: e.into(),
        })?;
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| PodNetworkError::State { path, step: "write record", source })
    }

    fn lock(&self) -> Result<Flock<File>, PodNetworkError> {
        let path = self.config.state_dir.join("lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| PodNetworkError::State { path: path.clone(), step: "open lock", source })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| PodNetworkError::State {
            path,
            step: "lock",
            source: e.into(),
        })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

fn pod_ports(record: &PodRecord) -> PodPorts {
    PodPorts { pod: record.pod_name.clone(), ip: record.info.ip, ports: record.host_ports.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_cidr_overlapping_another_links_network_is_found() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let host = vec![
            ("eth0".to_string(), net("192.0.2.0/24")),
            ("cni-podman0".to_string(), net("10.88.0.0/16")),
            ("rkube0".to_string(), net("10.244.0.0/16")),
        ];
        let found = overlapping_network(net("10.88.0.0/16"), "rkube0", &host);
        assert_eq!(found, Some(&("cni-podman0".to_string(), net("10.88.0.0/16"))));
        // Either side may be the larger network.
        assert!(overlapping_network(net("10.88.5.0/24"), "rkube0", &host).is_some());
        assert!(overlapping_network(net("10.0.0.0/8"), "rkube0", &host).is_some());
        // Our own bridge carries the CIDR; neighbours that do not overlap are fine.
        assert_eq!(overlapping_network(net("10.244.0.0/16"), "rkube0", &host), None);
        assert_eq!(overlapping_network(net("10.89.0.0/16"), "rkube0", &host), None);
        let err = PodNetworkError::CidrOverlap {
            cidr: net("10.88.0.0/16"),
            network: net("10.88.0.0/16"),
            link: "cni-podman0".into(),
        };
        assert_eq!(
            err.to_string(),
            "pod CIDR 10.88.0.0/16 overlaps 10.88.0.0/16 on cni-podman0, which this host already uses; \
             choose another with --pod-cidr"
        );
    }

    #[test]
    fn veth_names_are_stable_and_short() {
        let a = veth_name("rkv", "pod-uid-1");
        assert_eq!(a, veth_name("rkv", "pod-uid-1"));
        assert_ne!(a, veth_name("rkv", "pod-uid-2"));
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("rkv"));
    }

    #[test]
    fn config_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PodNetworkConfig::new("10.244.9.0/24".parse().unwrap());
        config.state_dir = dir.path().into();
        config.veth_prefix = "toolongprefix".into();
        assert!(matches!(PodNetwork::new(config.clone()), Err(PodNetworkError::Config { .. })));
        config.veth_prefix = "rkv".into();
        let net = PodNetwork::new(config).unwrap();
        assert!(net.records().unwrap().is_empty());
        assert!(net.netns_path("../x").is_err());
        assert!(matches!(net.setup("../x", "x", &[]), Err(PodNetworkError::Netns { .. })));
        assert!(net.ipam().allocations().unwrap().is_empty());
    }
}
