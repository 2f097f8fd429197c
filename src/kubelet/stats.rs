//! Resource usage of the node and its pods, for the kubelet server's `/stats/summary` (the
//! kubelet Summary API subset metrics-server-style readers need) and `/metrics/resource`: CPU
//! time and memory working set (usage minus inactive file pages, as cAdvisor computes it) of each
//! container's cgroup (v1 `cpuacct`/`memory`, v2 `cpu.stat`/`memory.*`), and of the host from
//! `/proc/stat` and `/proc/meminfo`. CPU rates are taken between two readings at least
//! [`MIN_WINDOW`] apart; the last reading is kept for the next request.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::node::NodeConfig;
use super::state;
use crate::runtime::cgroup::{self, Version};

/// The shortest interval a CPU rate is measured over.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// One reading of a cgroup or the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory working set, bytes.
    pub working_set: u64,
}

/// A value of a `key value` line file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Busy CPU time of the host from `/proc/stat` (user, nice, system, irq, softirq, steal), in
/// nanoseconds, given the clock ticks per second.
pub fn proc_stat_busy_ns(text: &str, ticks_per_sec: u64) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 4 || ticks_per_sec == 0 {
        return None;
    }
    let busy: u64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    Some(busy.saturating_mul(1_000_000_000 / ticks_per_sec))
}

/// The host's memory in use from `/proc/meminfo`: MemTotal − MemAvailable, bytes.
pub fn meminfo_used(text: &str) -> Option<u64> {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The usage of the cgroup `rel` (relative to the hierarchy root `root`).
pub fn cgroup_usage(root: &Path, version: Version, rel: &str) -> Option<Usage> {
    let rel = rel.trim_matches('/');
    match version {
        Version::V1 => {
            let cpu = ["cpuacct", "cpu,cpuacct"]
                .iter()
                .find_map(|c| read(&root.join(c).join(rel).join("cpuacct.usage")))?;
            let mem = root.join("memory").join(rel);
            let usage: u64 = read(&mem.join("memory.usage_in_bytes"))?.trim().parse().ok()?;
            let inactive =
                read(&mem.join("memory.stat")).and_then(|s| keyed(&s, "total_inactive_file")).unwrap_or(0);
            Some(Usage { cpu_ns: cpu.trim().parse().ok()?, working_set: usage.saturating_sub(inactive) })
        }
        Version::V2 => {
            let dir = root.join(rel);
            let cpu = keyed(&read(&dir.join("cpu.stat"))?, "usage_usec")?.saturating_mul(1000);
            let usage: u64 = read(&dir.join("memory.current"))?.trim().parse().ok()?;
            let inactive =
                read(&dir.join("memory.stat")).and_then(|s| keyed(&s, "inactive_file")).unwrap_or(0);
            Some(Usage { cpu_ns: cpu, working_set: usage.saturating_sub(inactive) })
        }
    }
}

/// The host's usage from `/proc`.
pub fn host_usage() -> Option<Usage> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Some(Usage {
        cpu_ns: proc_stat_busy_ns(&read(Path::new("/proc/stat"))?, ticks)?,
        working_set: meminfo_used(&read(Path::new("/proc/meminfo"))?)?,
    })
}

/// A pod in a snapshot.
#[derive(Debug, Clone)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Running containers by name.
    pub containers: BTreeMap<String, Usage>,
}

/// Everything read at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub wall: SystemTime,
    pub node: Option<Usage>,
    /// By pod key.
    pub pods: BTreeMap<String, PodUsage>,
}

/// Reads the host and every container of the node's pods.
pub fn snapshot(node: &NodeConfig) -> Snapshot {
    let version = cgroup::detect(&node.cgroup_root);
    let dir = node.pods_dir();
    let mut pods = BTreeMap::new();
    for key in state::list(&dir) {
        let Ok(st) = state::load(&dir.join(&key)) else { continue };
        if st.stopping {
            continue;
        }
        let pod_cgroup = super::pod::pod_cgroup(node, &key);
        let containers = st
            .containers
            .iter()
            .filter_map(|c| {
                let u = cgroup_usage(&node.cgroup_root, version, &format!("{pod_cgroup}/{}", c.name))?;
                Some((c.name.clone(), u))
            })
            .collect();
        let md = &st.pod.metadata;
        pods.insert(
            key,
            PodUsage {
                namespace: md.namespace.clone().unwrap_or_else(|| "default".into()),
                name: md.name.clone().unwrap_or_default(),
                uid: md.uid.clone().unwrap_or(st.uid.clone()),
                containers,
            },
        );
    }
    Snapshot { at: Instant::now(), wall: SystemTime::now(), node: host_usage(), pods }
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// CPU rate in nanocores between two readings `secs` apart.
fn nano_cores(before: u64, after: u64, secs: f64) -> u64 {
    if secs <= 0.0 {
        return 0;
    }
    (after.saturating_sub(before) as f64 / secs) as u64
}

fn stats(time: &str, before: Option<&Usage>, now: &Usage, secs: f64) -> (Value, Value) {
    let mut cpu = json!({"time": time, "usageCoreNanoSeconds": now.cpu_ns});
    if let Some(b) = before {
        cpu["usageNanoCores"] = json!(nano_cores(b.cpu_ns, now.cpu_ns, secs));
    }
    (cpu, json!({"time": time, "workingSetBytes": now.working_set}))
}

/// The Summary API document from two snapshots (`windowSeconds` is ours: the rate interval).
/// Containers new since `before` have no `usageNanoCores` yet.
pub fn summary(node_name: &str, before: &Snapshot, now: &Snapshot) -> Value {
    let secs = now.at.saturating_duration_since(before.at).as_secs_f64();
    let time = rfc3339(now.wall);
    let mut node = json!({"nodeName": node_name});
    if let Some(u) = &now.node {
        let (cpu, memory) = stats(&time, before.node.as_ref(), u, secs);
        node["cpu"] = cpu;
        node["memory"] = memory;
    }
    let pods: Vec<Value> = now
        .pods
        .iter()
        .map(|(key, p)| {
            let prev = before.pods.get(key);
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|(name, u)| {
                    let (cpu, memory) = stats(&time, prev.and_then(|p| p.containers.get(name)), u, secs);
                    json!({"name": name, "cpu": cpu, "memory": memory})
                })
                .collect();
            json!({"podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid}, "containers": containers})
        })
        .collect();
    json!({"node": node, "pods": pods, "windowSeconds": secs})
}

/// The resource metrics (`/metrics/resource`, what metrics-server scrapes) of a snapshot, in the
/// Prometheus text format 0.0.4.
pub fn resource_metrics(now: &Snapshot) -> String {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::atomic::AtomicU64;
    type FloatGauge = Gauge<f64, AtomicU64>;
    let mut reg = prometheus_client::registry::Registry::default();
    let node_cpu = FloatGauge::default();
    let node_mem = FloatGauge::default();
    let c_cpu = Family::<Vec<(&'static str, String)>, FloatGauge>::default();
    let c_mem = Family::<Vec<(&'static str, String)>, FloatGauge>::default();
    if let Some(u) = &now.node {
        node_cpu.set(u.cpu_ns as f64 / 1e9);
        node_mem.set(u.working_set as f64);
    }
    for p in now.pods.values() {
        for (name, u) in &p.containers {
            let labels = vec![
                ("container", name.clone()),
                ("namespace", p.namespace.clone()),
                ("pod", p.name.clone()),
            ];
            c_cpu.get_or_create(&labels).set(u.cpu_ns as f64 / 1e9);
            c_mem.get_or_create(&labels).set(u.working_set as f64);
        }
    }
    // Cumulative CPU seconds are counters upstream; gauges keep the names without a `_total` added.
    reg.register(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        node_cpu,
    );
    reg.register("node_memory_working_set_bytes", "Current working set of the node in bytes", node_mem);
    reg.register(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        c_cpu,
    );
    reg.register(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        c_mem,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

/// The last snapshot, the base of the next rate.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<Option<Snapshot>>,
}

impl Sampler {
    /// Two snapshots at least [`MIN_WINDOW`] apart, waiting when the last one is too recent.
    pub async fn pair(&self, node: &NodeConfig) -> (Snapshot, Snapshot) {
        let take =
            |node: NodeConfig| async move { tokio::task::spawn_blocking(move || snapshot(&node)).await.ok() };
        let last = self.last.lock().map(|l| l.clone()).unwrap_or(None);
        let before = match last {
            Some(b) => b,
            None => match take(node.clone()).await {
                Some(b) => b,
                None => Snapshot {
                    at: Instant::now(),
                    wall: SystemTime::now(),
                    node: None,
                    pods: BTreeMap::new(),
                },
            },
        };
        let age = before.at.elapsed();
        if age < MIN_WINDOW {
            tokio::time::sleep(MIN_WINDOW - age).await;
        }
        let now = take(node.clone()).await.unwrap_or_else(|| before.clone());
        if let Ok(mut l) = self.last.lock() {
            *l = Some(now.clone());
        }
        (before, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_cgroup_files() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(proc_stat_busy_ns(stat, 100), Some((100 + 5 + 50 + 3 + 2 + 1) * 10_000_000));
        let meminfo = "MemTotal:        2000 kB\nMemFree:          100 kB\nMemAvailable:     500 kB\n";
        assert_eq!(meminfo_used(meminfo), Some(1500 * 1024));
        assert_eq!(keyed("cache 1\ntotal_inactive_file 4096\n", "total_inactive_file"), Some(4096));
        assert_eq!(keyed("usage_usec 12\n", "user_usec"), None);
    }

    #[test]
    fn cgroup_usage_of_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1");
        std::fs::create_dir_all(v1.join("cpu,cpuacct/rkube/pod-x/c")).unwrap();
        std::fs::create_dir_all(v1.join("memory/rkube/pod-x/c")).unwrap();
        std::fs::write(v1.join("cpu,cpuacct/rkube/pod-x/c/cpuacct.usage"), "5000\n").unwrap();
        std::fs::write(v1.join("memory/rkube/pod-x/c/memory.usage_in_bytes"), "10000\n").unwrap();
        std::fs::write(v1.join("memory/rkube/pod-x/c/memory.stat"), "total_inactive_file 4000\n").unwrap();
        assert_eq!(
            cgroup_usage(&v1, Version::V1, "rkube/pod-x/c"),
            Some(Usage { cpu_ns: 5000, working_set: 6000 })
        );
        let v2 = dir.path().join("v2/rkube/pod-x/c");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        std::fs::write(v2.join("memory.current"), "9000\n").unwrap();
        std::fs::write(v2.join("memory.stat"), "anon 1\ninactive_file 1000\n").unwrap();
        assert_eq!(
            cgroup_usage(&dir.path().join("v2"), Version::V2, "/rkube/pod-x/c/"),
            Some(Usage { cpu_ns: 7000, working_set: 8000 })
        );
        assert_eq!(cgroup_usage(&v1, Version::V1, "rkube/none"), None);
    }

    #[test]
    fn rates_between_snapshots() {
        let t0 = Instant::now();
        let pod = |cpu: u64| PodUsage {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            containers: [("c".to_string(), Usage { cpu_ns: cpu, working_set: 2048 })].into(),
        };
        let before = Snapshot {
            at: t0,
            wall: SystemTime::UNIX_EPOCH,
            node: Some(Usage { cpu_ns: 0, working_set: 1 }),
            pods: [("k".to_string(), pod(1_000_000_000))].into(),
        };
        let now = Snapshot {
            at: t0 + Duration::from_secs(2),
            wall: SystemTime::UNIX_EPOCH,
            node: Some(Usage { cpu_ns: 3_000_000_000, working_set: 4096 }),
            pods: [("k".to_string(), pod(1_500_000_000))].into(),
        };
        let s = summary("n1", &before, &now);
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 1_500_000_000u64);
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 4096);
        assert_eq!(s["pods"][0]["containers"][0]["cpu"]["usageNanoCores"], 250_000_000u64);
        assert_eq!(s["pods"][0]["podRef"]["namespace"], "ns");
        assert_eq!(s["windowSeconds"], 2.0);
        let text = resource_metrics(&now);
        assert!(
            text.contains(r#"container_memory_working_set_bytes{container="c",namespace="ns",pod="p"} 2048"#),
            "{text}"
        );
        assert!(text.contains("node_cpu_usage_seconds_total 3"), "{text}");
    }
}
