//! `rkubelet join`: join a master and run the node agent in the foreground (see
//! `kubelet::joined` for the design and `client::join` for the protocol).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::pod::NodeArgs;
use crate::client::join::{JoinRequest, JoinToken};
use crate::kubelet::agent::{self, Agent, AgentConfig};
use crate::kubelet::backoff::BackoffPolicy;
use crate::kubelet::joined::disk::DiskPods;
use crate::kubelet::joined::nodeinfo::NodeIdentity;
use crate::kubelet::joined::{self, JoinedConfig, PodSync, announce, routes, services};
use crate::proxy::{ProxyConfig, ProxyMode};

/// The cluster's pod range when `--cluster-cidr` is not given (rkube-master's default).
const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
use crate::kubelet::server::{self, KubeletServerConfig};

/// Arguments of `rkubelet join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// The master's API server, `https://HOST:PORT`.
    pub server: String,
    /// The join token rkube-master printed (`RK1<CA hash>::<id>.<secret>`); it pins the
    /// master's CA. Not needed to restart a node that joined before.
    #[arg(long, env = "RKUBE_JOIN_TOKEN")]
    pub token: Option<String>,
    /// The node's name [default: the host name].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP [default: the address the route to the master leaves from].
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// Port of the node's HTTPS endpoint (logs, exec, port-forward through the master).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// The cluster DNS address written into pods' resolv.conf [default: the ClusterIP of the
    /// master's `kube-system/kube-dns` Service]. The node answers it for its own pods.
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// First CrashLoopBackOff delay in milliseconds (doubles up to 5 minutes).
    #[arg(long, default_value_t = 10_000)]
    pub backoff_initial_ms: u64,
    /// How the node programs Services: `iptables` (kube-proxy's iptables layout through
    /// iptables-restore) or `nftables` (kube-proxy's nftables layout in the node's own
    /// `rkube-proxy` table; much faster with many Services). Switching removes the other mode's rules.
    #[arg(long, default_value_t = ProxyMode::Nftables)]
    pub proxy_mode: ProxyMode,
    #[command(flatten)]
    pub node: NodeArgs,
}

fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// Joins (if a token is given) and runs the node until SIGTERM or SIGINT.
pub fn run(args: &JoinArgs) -> anyhow::Result<i32> {
    let creds = args.node.credentials();
    let name = args.node_name.clone().unwrap_or_else(host_name).to_lowercase();
    let server = args.server.trim_end_matches('/').to_string();
    let ip = match args.node_ip {
        Some(ip) => ip,
        None => joined::source_address_towards(&server)
            .with_context(|| format!("no route to {server} to take the node's IP from; pass --node-ip"))?,
    };
    let mut node = args.node.node();
    let cluster_cidr =
        *node.cluster_cidr.get_or_insert(DEFAULT_CLUSTER_CIDR.parse().expect("valid default CIDR"));
    // One agent per node: the lock is held from before the join to the end.
    let Some(_lock) = agent::try_lock(&node)? else {
        bail!("an agent is already running for {}; stop it first", node.run_dir.display());
    };
    // Recorded with the lock, so `rkubelet reset` signals this process even while it still joins
    // (a SIGTERM before the handlers below are in place ends it at once).
    agent::write_pid(&node)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match &args.token {
        Some(token) => {
            let token: JoinToken = token.parse()?;
            let addresses = [IpAddr::V4(ip)];
            let req = JoinRequest { server: &server, token: &token, node_name: &name, addresses: &addresses };
            rt.block_on(crate::client::join::join(&req, &creds))?;
            eprintln!("node {name} joined {server}");
        }
        None if creds.exist() => {}
        None => bail!(
            "this node has not joined a master yet: pass --token (rkube-master prints the join command)"
        ),
    }
    let identity =
        NodeIdentity { name: name.clone(), internal_ip: IpAddr::V4(ip), kubelet_port: args.kubelet_port };
    let cfg = Arc::new(JoinedConfig::new(identity));
    // The node's HTTPS API (logs, exec, port-forward for the master): bound before registering,
    // so a port in use fails the start with one line.
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], args.kubelet_port));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("listening on {listen} (--kubelet-port)"))?;
    let master_cn = std::fs::read_to_string(creds.master_client_cn())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| server::APISERVER_CLIENT_CN.into());
    let client = rt.block_on(joined::client(&creds.kubeconfig()))?;
    let cidr = rt.block_on(joined::register(&client, &cfg, &node.root))?;
    if args.node.pod_cidr.is_some_and(|c| c != cidr) {
        bail!(
            "--pod-cidr {} differs from the pod CIDR {cidr} the master assigned to node {name}",
            node.pod_cidr
        );
    }
    if !cluster_cidr.contains(&cidr) {
        bail!(
            "the pod CIDR {cidr} of node {name} is outside --cluster-cidr {cluster_cidr}: pass rkube-master's --cluster-cidr"
        );
    }
    node.pod_cidr = cidr;
    std::fs::write(creds.pod_cidr(), format!("{cidr}\n")).context("recording the pod CIDR")?;
    // Cluster DNS: this node answers the kube-dns Service's address for its pods (the master sends
    // the Service's traffic to each node's own InternalIP:53), bound now so a taken port fails here.
    let cluster_dns = match args.cluster_dns {
        Some(ip) => Some(ip),
        None => rt.block_on(joined::cluster_dns_address(&client))?,
    };
    let zone = crate::dns::ZoneConfig { domain: args.cluster_domain.clone(), ..Default::default() };
    let empty =
        crate::dns::Zone::build::<Service, EndpointSlice>(&[], &[], &zone, 0).context("--cluster-domain")?;
    let dns = match cluster_dns {
        Some(_) => {
            let upstream = node.dns.host.nameservers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
            let handler = crate::dns::ClusterDns::new(empty, upstream);
            let server = rt.block_on(handler.clone().serve(SocketAddr::new(IpAddr::V4(ip), 53)))?;
            Some((handler, server))
        }
        None => {
            eprintln!(
                "no kube-system/kube-dns Service on the master and no --cluster-dns: pods get this node's resolvers"
            );
            None
        }
    };
    node.dns.cluster_dns = cluster_dns.map(IpAddr::V4).into_iter().collect();
    node.dns.cluster_domain = args.cluster_domain.clone();
    eprintln!("node {name} registered (InternalIP {ip}, pod CIDR {cidr}); running its pods");

    let stop = Arc::new(AtomicBool::new(false));
    let signals = super::pod::stop_on_signals(stop.clone());
    let sync = {
        let (node, stop) = (node.clone(), stop.clone());
        let backoff = BackoffPolicy {
            initial: Duration::from_millis(args.backoff_initial_ms),
            ..BackoffPolicy::default()
        };
        std::thread::spawn(move || {
            Agent::new(node, AgentConfig { backoff, ..AgentConfig::default() }).run(&stop)
        })
    };
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let root = node.root.clone();
        let pods = DiskPods { node: node.clone(), registries_config: args.node.registries_config.clone() };
        let api = KubeletServerConfig {
            listen,
            serving_cert: creds.serving_cert(),
            serving_key: creds.serving_key(),
            client_ca: creds.ca(),
            allowed_client_cn: master_cn,
            node: node.clone(),
        };
        let proxy = ProxyConfig {
            prefix: node.chain_prefix.clone(),
            cluster_cidr: Some(cluster_cidr),
            ..ProxyConfig::default()
        };
        let watch = services::ServiceWatch::start(&client);
        let mut api_stop = stop_rx.clone();
        let api = tokio::spawn(async move {
            let stopped = async move {
                let _ = api_stop.changed().await;
            };
            if let Err(e) = server::serve_listener(listener, api, stopped).await {
                tracing::error!("the node API stopped: {e}");
            }
        });
        let tasks = [
            api,
            tokio::spawn(joined::lease_loop(client.clone(), cfg.clone(), stop_rx.clone())),
            tokio::spawn(joined::node_status_loop(client.clone(), cfg.clone(), root, stop_rx.clone())),
            tokio::spawn(PodSync::new(pods, cfg.clone(), client.clone()).run(stop_rx.clone())),
            tokio::spawn(services::proxy_loop(
                watch.clone(),
                name.clone(),
                args.proxy_mode,
                proxy,
                stop_rx.clone(),
            )),
            tokio::spawn(routes::route_loop(client.clone(), name.clone(), creds.routes(), stop_rx.clone())),
            tokio::spawn(announce::announce_loop(
                client.clone(),
                watch.clone(),
                name.clone(),
                ip,
                creds.announced(),
                stop_rx.clone(),
            )),
        ];
        let dns_task = dns.map(|(handler, server)| {
            let task = tokio::spawn(services::dns_loop(watch.clone(), handler, zone, stop_rx));
            (task, server)
        });
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        if let Some((task, mut server)) = dns_task {
            let _ = task.await;
            let _ = server.shutdown_gracefully().await;
        }
    });
    let _ = sync.join();
    drop(signals);
    agent::remove_pid(&node);
    Ok(0)
}
