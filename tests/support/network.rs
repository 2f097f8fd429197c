//! Shared helpers for network integration tests: a simulated node (its own network namespace
//! with a pod bridge) plus an "external" client namespace on a LAN link, TCP servers inside
//! namespaces, and leak checks. Everything lives in namespaces the test creates; Drop cleans up.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rkube::network::iptables;
use rkube::network::link;
use rkube::network::netns::{self, NetnsStore, run_in_netns};
use rkube::network::{PodNetwork, PodNetworkConfig};

/// A simulated node: netns `node` (bridge `rkt<n>`, pod CIDR 10.77.<n>.0/24, LAN 10.78.<n>.1/24)
/// and netns `ext` (LAN 10.78.<n>.2/24), connected by a veth pair.
pub struct TestNode {
    pub n: u8,
    pub dir: tempfile::TempDir,
    pub nodes: NetnsStore,
    pub node_ns: PathBuf,
    pub ext_ns: PathBuf,
    pub net: PodNetwork,
    pub config: PodNetworkConfig,
}

impl TestNode {
    pub fn new(n: u8) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = NetnsStore::new(dir.path().join("nodes"));
        let node_ns = nodes.create("node").expect("create node netns");
        let ext_ns = nodes.create("ext").expect("create ext netns");
        let mut config = PodNetworkConfig::new(format!("10.77.{n}.0/24").parse().unwrap());
        config.bridge = format!("rkt{n}");
        config.netns_dir = dir.path().join("pods");
        config.state_dir = dir.path().join("state");
        config.node_netns = Some(node_ns.clone());
        let mut node = TestNode {
            n,
            net: PodNetwork::new(config.clone()).expect("pod network"),
            dir,
            nodes,
            node_ns,
            ext_ns,
            config,
        };
        node.wire_lan();
        node
    }

    fn wire_lan(&mut self) {
        let ext = std::fs::File::open(&self.ext_ns).unwrap();
        let (lan, node_ip) = (format!("rktl{}", self.n), self.lan_node_ip());
        link::with_netlink(Some(&self.node_ns), |h| async move {
            link::create_veth_into(&h, &lan, "eth0", ext.as_raw_fd(), 1500).await?;
            link::add_address(&h, &lan, node_ip, 24).await?;
            link::set_up(&h, &lan).await?;
            link::set_up(&h, "lo").await.map(drop)
        })
        .expect("wire node LAN side");
        let ext_ip = self.lan_ext_ip();
        link::with_netlink(Some(&self.ext_ns), |h| async move {
            link::configure_pod_interface(&h, "eth0", ext_ip, 24, node_ip).await
        })
        .expect("wire ext LAN side");
    }

    pub fn lan_node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.n, 1)
    }

    pub fn lan_ext_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.n, 2)
    }

    /// Chains starting with `prefix` in the node's filter and nat tables.
    pub fn chains(&self, prefix: &str) -> Vec<String> {
        run_in_netns(Some(&self.node_ns), || {
            let mut all = iptables::chains_with_prefix("filter", prefix).unwrap();
            all.extend(iptables::chains_with_prefix("nat", prefix).unwrap());
            all
        })
        .unwrap()
    }

    /// `iptables-save` of the node namespace, both tables.
    pub fn saved_rules(&self) -> String {
        run_in_netns(Some(&self.node_ns), || {
            let out = std::process::Command::new("iptables-save").output().expect("iptables-save");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .unwrap()
    }

    pub fn link_exists(&self, name: &str) -> bool {
        let name = name.to_string();
        link::with_netlink(Some(&self.node_ns), |h| async move { link::link_index(&h, &name).await })
            .unwrap()
            .is_some()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Ok(records) = self.net.records() {
            for r in records {
                let _ = self.net.teardown(&r.pod_id);
            }
        }
        let _ = self.net.reset_node();
        // Whatever a failed test left: unmount every pin we created.
        for sub in ["pods", "nodes"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.path().join(sub)) {
                for e in entries.flatten() {
                    let _ = netns::delete_pinned(&e.path());
                }
            }
        }
    }
}

/// A TCP server inside a namespace answering every connection with "<name> <peer ip>\n".
pub struct Server {
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Server {
    pub fn start(netns: &Path, port: u16, name: &str) -> Self {
        let listener = run_in_netns(Some(netns), || TcpListener::bind(("0.0.0.0", port)))
            .unwrap()
            .expect("bind server in netns");
        let listener = Arc::new(listener);
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (l, p, name) = (listener.clone(), peers.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while let Ok((mut stream, peer)) = l.accept() {
                p.lock().unwrap().push(peer);
                let _ = stream.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
            }
        });
        Server { listener, thread: Some(thread), peers }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // shutdown() on a listening socket wakes the blocked accept() with an error.
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `netns` to `addr` and returns the server's one-line answer.
pub fn request(netns: &Path, addr: SocketAddrV4) -> std::io::Result<String> {
    run_in_netns(Some(netns), || {
        let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.trim().to_string())
    })
    .expect("enter netns")
}
