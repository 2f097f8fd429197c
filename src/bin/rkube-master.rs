//! `rkube-master`: the thin control plane (API server + store; controllers when built in).

use anyhow::{Context, Result, bail};
use clap::Parser;
use rkube::master::apiserver::alloc::AllocConfig;
use rkube::master::apiserver::cluster::InProcessCluster;
use rkube::master::apiserver::nodecert::NodeJoin;
use rkube::master::apiserver::registry::Registry;
use rkube::master::apiserver::satoken::TokenIssuer;
use rkube::master::apiserver::{ApiServer, Auth, builtin, router, serve};
use rkube::master::controllers::clusterdns;
use rkube::master::controllers::manager::{self, ManagerConfig};
use rkube::master::controllers::nodeipam::{CidrAllocator, NodeIpamConfig};
use rkube::master::controllers::nodelifecycle::NodeLifecycleConfig;
use rkube::master::fakenodes::FakeNodeConfig;
use rkube::master::store::Store;
use rkube::master::store::embedded::EmbeddedStore;
use rkube::master::store::etcd::EtcdStore;
use rkube::master::tls;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Kubernetes-compatible control plane: API server, store, scheduler and controllers.
#[derive(Debug, Parser)]
#[command(name = "rkube-master", version)]
struct Args {
    /// State directory: the embedded store, certificates, tokens, kubeconfig.
    #[arg(long, default_value = "/var/lib/rkube-master")]
    data_dir: PathBuf,
    /// Address to serve the API on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Use etcd instead of the embedded store (comma-separated client URLs).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Serve plain HTTP without authentication (only allowed on a loopback address).
    #[arg(long)]
    insecure_http: bool,
    /// Where to write the admin kubeconfig (default <data-dir>/admin.kubeconfig).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Extra names or IPs for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnet::Ipv4Net,
    /// The cluster DNS Service's ClusterIP (`kube-system/kube-dns`, answered by every node for its
    /// own pods) [default: the tenth address of --service-cidr]. `none`: no cluster DNS Service.
    #[arg(long)]
    cluster_dns: Option<String>,
    /// NodePort range, `first-last`.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// The address pods reach the API server at, behind the `kubernetes` Service [default: the
    /// --listen address when it is a specific, non-loopback one].
    #[arg(long)]
    advertise_address: Option<Ipv4Addr>,
    /// LoadBalancer ingress IPs: a CIDR, a range `a-b` or a comma list. The nodes' network must
    /// route them to the nodes (every node forwards them). Without a pool, a LoadBalancer Service's
    /// ingress is the InternalIP of every Ready node, as k3s's ServiceLB does.
    #[arg(long, default_value = "")]
    lb_pool: String,
    /// Register this many KWOK-like fake nodes that run bound pods (for tests and benchmarks).
    #[arg(long, default_value_t = 0)]
    fake_nodes: usize,
    /// Pod network of the cluster: every Node gets a subnet of it as spec.podCIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// Prefix length of each Node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Silence after which a node is marked Ready=Unknown and tainted unreachable (e.g. 40s, 2m).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long pods stay on an unreachable or not-ready node before they are evicted.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pod_eviction_timeout: Duration,
    /// How often watches that allow bookmarks get one (tests shorten it).
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    watch_bookmark_interval: Duration,
    /// Revisions of history kept by the periodic compaction.
    #[arg(long, default_value_t = 10_000)]
    keep_revisions: i64,
    /// How often the store is compacted (tests shorten it).
    #[arg(long, default_value = "5m", value_parser = parse_duration, hide = true)]
    compaction_interval: Duration,
    /// Changes per resource the watch cache keeps for watches that start in the past (tests
    /// shrink it to reach the store's compacted history).
    #[arg(long, default_value_t = rkube::master::apiserver::watchcache::WINDOW, hide = true)]
    watch_cache_window: usize,
}

fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>> {
    let (a, b) =
        s.split_once('-').with_context(|| format!("--node-port-range {s:?}: expected first-last"))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a > b {
        bail!("--node-port-range {s:?}: first is after last");
    }
    Ok(a..=b)
}

/// `500ms`, `40s`, `5m`, `1h` (or plain seconds).
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 40s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

fn parse_pool(s: &str) -> Result<Vec<Ipv4Addr>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(net) = s.parse::<ipnet::Ipv4Net>() {
        return Ok(net.hosts().collect());
    }
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse()?, b.trim().parse()?);
        return Ok((u32::from(a)..=u32::from(b)).map(Ipv4Addr::from).collect());
    }
    s.split(',')
        .map(|p| {
            p.trim().parse::<Ipv4Addr>().with_context(|| format!("--lb-pool: {p:?} is not an IPv4 address"))
        })
        .collect()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    if args.insecure_http && !args.listen.ip().is_loopback() {
        bail!("--insecure-http is only allowed on a loopback address (got {})", args.listen);
    }
    CidrAllocator::new(args.cluster_cidr, args.node_cidr_mask_size)
        .with_context(|| format!("--cluster-cidr {} --node-cidr-mask-size", args.cluster_cidr))?;
    let alloc = AllocConfig {
        service_cidr: args.service_cidr,
        node_ports: parse_range(&args.node_port_range)?,
        lb_pool: parse_pool(&args.lb_pool)?,
    };
    let lb_pool = !alloc.lb_pool.is_empty();
    let cluster_dns = match args.cluster_dns.as_deref() {
        Some("none") => None,
        Some(ip) => {
            let ip: Ipv4Addr =
                ip.parse().with_context(|| format!("--cluster-dns {ip:?} is not an IPv4 address"))?;
            if !args.service_cidr.contains(&ip) {
                bail!("--cluster-dns {ip} is outside --service-cidr {}", args.service_cidr);
            }
            Some(ip)
        }
        None => clusterdns::default_address(args.service_cidr),
    };
    let (store, store_desc): (Arc<dyn Store>, String) = if args.etcd_servers.is_empty() {
        let path = args.data_dir.join("state.redb");
        let s = EmbeddedStore::open(&path)?;
        (Arc::new(s), format!("embedded {}", path.display()))
    } else {
        let s = EtcdStore::connect(&args.etcd_servers).await?;
        (Arc::new(s), format!("etcd {}", args.etcd_servers.join(",")))
    };
    // Every store call is timed in etcd_request_duration_seconds, whichever the backend.
    let store: Arc<dyn Store> = Arc::new(rkube::master::metrics::MeasuredStore::new(store));
    let registry = Arc::new(Registry::new(store.clone(), alloc).with_watch_window(args.watch_cache_window));
    registry.ensure_namespaces().await.context("creating the built-in namespaces")?;
    registry.ensure_bootstrap_policy().await.context("creating the default RBAC roles and bindings")?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let advertise = args.advertise_address.or(match addr.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
        _ => None,
    });
    if advertise.is_none() {
        eprintln!(
            "warning: no --advertise-address: pods cannot reach the API server through the kubernetes Service"
        );
    }
    builtin::ensure_kubernetes_service(&registry, args.service_cidr, advertise, addr.port())
        .await
        .map_err(|e| anyhow::anyhow!("creating the kubernetes Service: {}", e.message))?;
    let host = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
    let kubeconfig_path =
        args.kubeconfig_out.clone().unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));

    let pki = tls::Pki::at(&args.data_dir);
    let tokens = Arc::new(TokenIssuer::load_or_create(&pki)?);
    let (auth, url, tls_cfg, node_join) = if args.insecure_http {
        let url = format!("http://{}", SocketAddr::new(host, addr.port()));
        tls::write_kubeconfig(&kubeconfig_path, &tls::kubeconfig(&url, None, None))?;
        (Auth { allow_anonymous: true, tokens: Some(tokens), ..Default::default() }, url, None, None)
    } else {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if let Ok(h) = nix::unistd::gethostname() {
            hosts.push(h.to_string_lossy().into_owned());
        }
        if !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
        hosts.extend(args.tls_san.iter().cloned());
        hosts.extend(advertise.map(|a| a.to_string()));
        hosts.extend(builtin::kubernetes_sans(args.service_cidr));
        hosts.dedup();
        let access = tls::ensure(&pki, &hosts)?;
        let url = format!("https://{}", SocketAddr::new(host, addr.port()));
        let ca = tls::read_pem(&pki.ca_cert)?;
        tls::write_kubeconfig(
            &kubeconfig_path,
            &tls::kubeconfig(&url, Some(&ca), Some(&access.admin_token)),
        )?;
        let auth = Auth {
            admin_tokens: vec![access.admin_token.clone()],
            join_credential: Some(access.join.credential()),
            allow_anonymous: false,
            tokens: Some(tokens),
        };
        let join =
            NodeJoin { ca: tls::ClusterCa::load(&pki)?, kubelet_client_cn: tls::KUBELET_CLIENT_CN.into() };
        let join_host = args.tls_san.first().cloned().unwrap_or_else(|| {
            if addr.ip().is_unspecified() { host.to_string() } else { addr.ip().to_string() }
        });
        eprintln!(
            "Join nodes with: rkubelet join https://{}:{} --token {}",
            join_host,
            addr.port(),
            access.join.full()
        );
        (auth, url, Some(tls::server_config(&pki)?), Some(join))
    };
    // Pods' log, exec and port-forward reach their node with the API server's client certificate.
    let kubelet_tls = if args.insecure_http {
        None
    } else {
        tls::kubelet_client_config(&pki)
            .map_err(|e| tracing::warn!("pods' log, exec and port-forward are unavailable: {e}"))
            .ok()
    };

    // Periodic compaction keeps the newest revisions only.
    let compact_store = store.clone();
    let keep = args.keep_revisions;
    let every = args.compaction_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Ok(rev) = compact_store.current_revision().await
                && rev > keep
                && let Err(e) = compact_store.compact(rev - keep).await
            {
                tracing::warn!("compaction failed: {e}");
            }
        }
    });

    // Namespace deletion (the namespace controller's job), over the registry.
    tokio::spawn(rkube::master::apiserver::namespaces::run(registry.clone()));
    let root_ca = node_join.as_ref().map(|j| j.ca.pem().to_string());
    // Scheduler, controllers (and fake nodes) in process, over the same admission path as HTTP.
    let cluster = Arc::new(InProcessCluster::new(registry.clone()));
    let fake_nodes =
        (args.fake_nodes > 0).then(|| FakeNodeConfig { count: args.fake_nodes, ..Default::default() });
    let node_lifecycle = NodeLifecycleConfig {
        grace_period: args.node_monitor_grace_period,
        eviction_timeout: args.pod_eviction_timeout,
        // Check at least twice per grace period (5 s by default, never busier than every 100 ms).
        monitor_period: NodeLifecycleConfig::default()
            .monitor_period
            .min(args.node_monitor_grace_period / 2)
            .max(Duration::from_millis(100)),
    };
    let node_ipam = Some(NodeIpamConfig { cluster_cidr: args.cluster_cidr, mask: args.node_cidr_mask_size });
    if let Some(ip) = cluster_dns {
        clusterdns::ensure_service(&*cluster, ip).await.context("creating the cluster DNS Service")?;
    }
    let _control_plane = manager::spawn_all(
        cluster,
        ManagerConfig {
            fake_nodes,
            node_lifecycle,
            node_ipam,
            lb_pool,
            root_ca,
            cluster_dns,
            ..Default::default()
        },
    );

    let app = router(Arc::new(ApiServer {
        registry: registry.clone(),
        auth,
        node_join,
        kubelet_tls,
        bookmark_interval: args.watch_bookmark_interval,
    }));
    println!("rkube-master serving {url} (store: {store_desc}); kubeconfig: {}", kubeconfig_path.display());
    match tls_cfg {
        Some(cfg) => serve::serve_tls(listener, app, cfg, shutdown_signal()).await,
        None => serve::serve_http(listener, app, shutdown_signal()).await,
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.cluster_cidr.contains(&args.service_cidr.network())
        || args.service_cidr.contains(&args.cluster_cidr.network())
    {
        eprintln!(
            "rkube-master: --cluster-cidr {} overlaps --service-cidr {}; pod and service addresses must not mix",
            args.cluster_cidr, args.service_cidr
        );
        std::process::exit(1);
    }
    // ClusterIPs inside a range the host already routes would be unreachable from it.
    match rkube::network::pod::host_network_overlapping(args.service_cidr, "", None) {
        Ok(Some((link, network))) => {
            eprintln!(
                "rkube-master: service CIDR {} overlaps {network} on {link}, which this host already uses; \
                 choose another with --service-cidr",
                args.service_cidr
            );
            std::process::exit(1);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("could not check --service-cidr against the host's networks: {e}"),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rkube-master: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("rkube-master: {e:#}");
        std::process::exit(1);
    }
}
