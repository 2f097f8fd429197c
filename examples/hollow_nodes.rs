//! Hollow nodes (as kubemark's): many node agents in one process, each joined with its own
//! credentials and running the real API side of `rkubelet join` (registration, Lease, node
//! status, pod watch, status reports) over a fake in-memory pod runtime. Then a Deployment of
//! `--pods-per-node` pods per node, and the figures: schedule → Running-reported latency, watch
//! fan-out (bound → the node's agent starting the pod), master RSS and CPU.
//!
//! `hollow_nodes --server https://127.0.0.1:PORT --token TOKEN --admin-kubeconfig FILE
//!   --master-pid PID --state DIR [--nodes 1000] [--pods-per-node 30]`

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use rkube::client::join::{JoinRequest, JoinToken, NodeCredentials, join};
use rkube::kubelet::joined::fake::{FakePods, StartLog};
use rkube::kubelet::joined::nodeinfo::NodeIdentity;
use rkube::kubelet::joined::{self, JoinedConfig, PodSync};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn need(name: &str) -> anyhow::Result<String> {
    arg(name).with_context(|| format!("{name} is required"))
}

/// CPU seconds (user + system) and resident set (current, peak) in MiB of process `pid`.
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (cpu, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn start_node(
    i: usize,
    server: &str,
    token: &JoinToken,
    state: &Path,
    log: StartLog,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let name = format!("hollow-{i:04}");
    let creds = NodeCredentials::at(&state.join(&name));
    // Loopback addresses of their own (127.1.x.y): every hollow node looks like its own host.
    let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    let addresses = [IpAddr::V4(ip)];
    join(&JoinRequest { server, token, node_name: &name, addresses: &addresses }, &creds).await?;
    let identity = NodeIdentity { name, internal_ip: IpAddr::V4(ip), kubelet_port: 10250 };
    let mut cfg = JoinedConfig::new(identity);
    // Fake pods never change after they start (whose status is sent at once): a slow resync
    // keeps a thousand agents from competing with the master for the CPU.
    cfg.pod_status_period = Duration::from_secs(10);
    let cfg = Arc::new(cfg);
    let client = joined::client(&creds.kubeconfig()).await?;
    let cidr = joined::register(&client, &cfg, state).await?;
    let mut pods = FakePods::new(cidr);
    pods.start_log = Some(log);
    tokio::spawn(joined::lease_loop(client.clone(), cfg.clone(), stop.clone()));
    tokio::spawn(joined::node_status_loop(client.clone(), cfg.clone(), state.to_path_buf(), stop.clone()));
    tokio::spawn(PodSync::new(pods, cfg, client).run(stop));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let server = need("--server")?;
    let token: JoinToken = need("--token")?.parse()?;
    let admin = PathBuf::from(need("--admin-kubeconfig")?);
    let master_pid: u32 = need("--master-pid")?.parse()?;
    let state = PathBuf::from(need("--state")?);
    let nodes: usize = arg("--nodes").map(|v| v.parse()).transpose()?.unwrap_or(1000);
    let per_node: usize = arg("--pods-per-node").map(|v| v.parse()).transpose()?.unwrap_or(30);
    let admin = joined::client(&admin).await?;
    let log: StartLog = Arc::new(Mutex::new(HashMap::new()));
    // The hollow nodes run until the figures are printed.
    let (_stop, stop) = tokio::sync::watch::channel(false);

    let t0 = Instant::now();
    let mut joins = futures_util::stream::iter(0..nodes)
        .map(|i| {
            let (server, token, state, log, stop) =
                (server.clone(), token.clone(), state.clone(), log.clone(), stop.clone());
            async move {
                start_node(i, &server, &token, &state, log, stop)
                    .await
                    .with_context(|| format!("hollow node {i}"))
            }
        })
        .buffer_unordered(32);
    while let Some(r) = joins.next().await {
        r?;
    }
    let node_api: Api<Node> = Api::all(admin.clone());
    loop {
        let ready = node_api
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| n.metadata.name.as_deref().is_some_and(|n| n.starts_with("hollow-")))
            .filter(|n| {
                n.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count();
        if ready == nodes {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("only {ready} of {nodes} hollow nodes are Ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let joined_in = t0.elapsed();
    let (cpu0, _, _) = usage(master_pid);

    // Watch every pod: when it is first seen bound, and first seen Running.
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let (bound, running) = (bound.clone(), running.clone());
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let cfg = watcher::Config::default().labels("app=hollow");
        tokio::spawn(async move {
            let mut events = watcher(pods, cfg).boxed();
            while let Some(Ok(event)) = events.next().await {
                let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event else { continue };
                let Some(uid) = p.metadata.uid.clone() else { continue };
                let now = Instant::now();
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    bound.lock().unwrap().entry(uid.clone()).or_insert(now);
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    running.lock().unwrap().entry(uid).or_insert(now);
                }
            }
        });
    }
    let total = nodes * per_node;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hollow"},
        "spec": {"replicas": total, "selector": {"matchLabels": {"app": "hollow"}},
                 "template": {"metadata": {"labels": {"app": "hollow"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.10"}]}}}
    }))?;
    let started = Instant::now();
    Api::<Deployment>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await?;
    let mut peak_rss = 0f64;
    loop {
        let done = running.lock().unwrap().len();
        let (_, rss, _) = usage(master_pid);
        peak_rss = peak_rss.max(rss);
        if done >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("only {done} of {total} pods Running after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let (cpu1, rss, hwm) = usage(master_pid);
    let (bound, running, log) = (bound.lock().unwrap(), running.lock().unwrap(), log.lock().unwrap());
    let mut e2e: Vec<Duration> =
        running.iter().filter_map(|(u, r)| Some(r.saturating_duration_since(*bound.get(u)?))).collect();
    let mut fanout: Vec<Duration> =
        log.iter().filter_map(|(u, s)| Some(s.saturating_duration_since(*bound.get(u)?))).collect();
    e2e.sort();
    fanout.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("hollow nodes: {nodes} joined and Ready in {:.1}s", joined_in.as_secs_f64());
    println!(
        "pods: {total} Running in {:.1}s ({:.0} pods/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "schedule -> Running reported: p50 {:.0} ms, p99 {:.0} ms (Kubernetes SLO p99 <= 5000 ms: {:.2}x of it)",
        ms(percentile(&e2e, 0.5)),
        ms(percentile(&e2e, 0.99)),
        ms(percentile(&e2e, 0.99)) / 5000.0
    );
    println!(
        "watch fan-out (bound -> node agent starts the pod): p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&fanout, 0.5)),
        ms(percentile(&fanout, 0.99))
    );
    println!(
        "master: RSS {:.0} MiB now, peak {:.0} MiB (target <= 2048 MiB: {:.2}x); CPU {:.1} s over the {:.1} s run",
        rss,
        hwm.max(peak_rss),
        hwm.max(peak_rss) / 2048.0,
        cpu1 - cpu0,
        elapsed.as_secs_f64()
    );
    Ok(())
}
