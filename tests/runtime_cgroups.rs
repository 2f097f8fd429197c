//! cgroup limits for real: v1 controllers on this machine's hybrid layout (memory OOM kill →
//! OOMKilled, pids limit stops a fork bomb, cpu values and stats), and v2 on the real unified
//! hierarchy (no controllers here: membership, kill and removal).

#[path = "support/runtime.rs"]
mod runtime;

use std::path::Path;
use std::time::{Duration, Instant};

use runtime::TestRuntime;

fn wait_for_log(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(path).unwrap_or_default().contains(needle) {
        assert!(Instant::now() < deadline, "log never showed {needle:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn memory_limit_oom_kills_an_allocator_and_reports_oomkilled() {
    let rt = TestRuntime::new();
    let id = runtime::unique("oom");
    // dd allocates a 256 MiB buffer and fills it: far above the 32 MiB limit.
    let mut bundle = rt.bundle(&id, &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    bundle.spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 * 1024 * 1024});
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert!(exit.oom_killed, "expected OOMKilled, got {exit:?}: {log}");
    assert_eq!(exit.signal, Some(9));

    // Under the limit nothing is killed.
    let id = runtime::unique("oom");
    let mut bundle = rt.bundle(&id, &["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4"]);
    bundle.spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 * 1024 * 1024});
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!((exit.code, exit.oom_killed), (0, false), "{log}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let rt = TestRuntime::new();
    let id = runtime::unique("pids");
    let script = "i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done; wait";
    let mut bundle = rt.bundle(&id, &["sh", "-c", script]);
    bundle.spec["linux"]["resources"]["pids"] = serde_json::json!({"limit": 16});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let log = bundle.path().join("ctr.log");
    // The shell reports the failed fork; by then the kernel has counted the refusal.
    wait_for_log(&log, "can't fork");
    let dir = format!("/sys/fs/cgroup/pids/{}", rt.cgroup_path(&id));
    let events = std::fs::read_to_string(format!("{dir}/pids.events")).unwrap();
    assert!(events.trim() != "max 0", "the limit was never hit: {events}");
    let current: u32 =
        std::fs::read_to_string(format!("{dir}/pids.current")).unwrap().trim().parse().unwrap();
    assert!(current <= 16, "pids.current {current} exceeds the limit");
    rt.runtime.delete(&id, true).unwrap();
    assert!(!Path::new(&dir).exists());
}

#[test]
fn cpu_values_and_stats_are_applied() {
    let rt = TestRuntime::new();
    let id = runtime::unique("cpu");
    let mut bundle = rt.bundle(&id, &["sh", "-c", "echo ready; sleep 30"]);
    bundle.spec["linux"]["resources"]["cpu"] =
        serde_json::json!({"shares": 512, "quota": 50000, "period": 100000});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    wait_for_log(&bundle.path().join("ctr.log"), "ready");
    let cpu = format!("/sys/fs/cgroup/cpu/{}", rt.cgroup_path(&id));
    assert_eq!(std::fs::read_to_string(format!("{cpu}/cpu.shares")).unwrap().trim(), "512");
    assert_eq!(std::fs::read_to_string(format!("{cpu}/cpu.cfs_quota_us")).unwrap().trim(), "50000");
    let record = rt.runtime.record(&id).unwrap();
    let stats = record.cgroup.manager().stats().unwrap();
    assert!(stats.memory_usage > 0 && stats.pids >= 1 && stats.cpu_usage_ns > 0, "{stats:?}");
    rt.runtime.delete(&id, true).unwrap();
}

#[test]
fn v2_on_the_real_unified_hierarchy() {
    use rkube::runtime::cgroup::{CgroupConfig, Resources, Version};
    let root = Path::new("/sys/fs/cgroup/unified");
    if !root.join("cgroup.controllers").exists() {
        eprintln!("no unified hierarchy mounted; v2 is covered by the temp-dir fake unit tests");
        return;
    }
    let parent = runtime::unique("rkube-test");
    let _guard = scopeguard(parent.clone());
    let mut config = CgroupConfig::new(root, &format!("{parent}/c1")).unwrap();
    assert_eq!(config.version, Version::V2);
    let mut manager = config.manager();
    manager.create(&Resources::default()).unwrap();
    config.created = manager.created().to_vec();
    assert_eq!(config.created.len(), 2);
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    manager.add_process(child.id() as i32).unwrap();
    assert_eq!(config.manager().pids().unwrap(), vec![child.id() as i32]);
    config.manager().remove().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "remove kills what is left in the cgroup");
    assert!(!root.join(&parent).exists());
}

struct CgroupGuard(String);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        runtime::remove_cgroup_tree(&self.0);
    }
}

fn scopeguard(name: String) -> CgroupGuard {
    CgroupGuard(name)
}
