//! cgroup v1: one directory per controller hierarchy at `<root>/<controller>/<path>`.

use std::path::{Path, PathBuf};

use super::{
    CgroupError, CgroupManager, Resources, Stats, keyed_value, kill_procs, mkdir_recording, read_file,
    write_file,
};

/// Controllers this runtime joins and configures.
pub const CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// A container cgroup in the v1 hierarchies.
#[derive(Debug)]
pub struct V1Cgroup {
    root: PathBuf,
    path: PathBuf,
    created: Vec<PathBuf>,
}

impl V1Cgroup {
    /// A cgroup at `<root>/<controller>/<path>`; `created` lists directories made earlier.
    pub fn new(root: PathBuf, path: PathBuf, created: Vec<PathBuf>) -> Self {
        V1Cgroup { root, path, created }
    }

    /// Controllers mounted under the root (a missing hierarchy is skipped).
    fn controllers(&self) -> Vec<&'static str> {
        CONTROLLERS.iter().copied().filter(|c| self.root.join(c).is_dir()).collect()
    }

    /// The directory of a controller.
    pub fn dir(&self, controller: &str) -> PathBuf {
        self.root.join(controller).join(&self.path)
    }

    fn read_u64(&self, controller: &str, file: &str) -> u64 {
        read_file(&self.dir(controller).join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

/// The (file, value) writes for `resources`, per controller. Pure.
pub fn writes(resources: &Resources) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(limit) = resources.memory_limit {
        out.push(("memory", "memory.limit_in_bytes", limit.to_string()));
    }
    if let Some(shares) = resources.cpu_shares {
        out.push(("cpu", "cpu.shares", shares.to_string()));
    }
    if let Some(period) = resources.cpu_period {
        out.push(("cpu", "cpu.cfs_period_us", period.to_string()));
    }
    if let Some(quota) = resources.cpu_quota {
        out.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
    }
    if let Some(pids) = resources.pids_limit {
        out.push(("pids", "pids.max", pids.to_string()));
    }
    for (allow, rule) in &resources.devices {
        out.push(("devices", if *allow { "devices.allow" } else { "devices.deny" }, rule.clone()));
    }
    out
}

impl CgroupManager for V1Cgroup {
    fn create(&mut self, resources: &Resources) -> Result<(), CgroupError> {
        for ctrl in self.controllers() {
            let base = self.root.join(ctrl);
            let mut created = std::mem::take(&mut self.created);
            let result = mkdir_recording(&base, &self.path, &mut created);
            self.created = created;
            result?;
        }
        let present = self.controllers();
        for (ctrl, file, value) in writes(resources) {
            if present.contains(&ctrl) {
                write_file(&self.dir(ctrl).join(file), &value)?;
            }
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.controllers().into_iter().map(|c| self.dir(c).join("cgroup.procs")).collect()
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let oom = read_file(&self.dir("memory").join("memory.oom_control")).unwrap_or_default();
        Ok(Stats {
            memory_usage: self.read_u64("memory", "memory.usage_in_bytes"),
            cpu_usage_ns: self.read_u64("cpuacct", "cpuacct.usage"),
            pids: self.read_u64("pids", "pids.current"),
            oom_kills: keyed_value(&oom, "oom_kill").unwrap_or(0),
        })
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let content = read_file(&self.dir("pids").join("cgroup.procs"))?;
        Ok(content.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let leaves: Vec<PathBuf> = CONTROLLERS.iter().map(|c| self.dir(c)).collect();
        super::rmdir_created(&self.created, &leaves, kill_procs)
    }

    fn created(&self) -> &[PathBuf] {
        &self.created
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        self.controllers().into_iter().map(|c| (c.to_string(), self.dir(c))).collect()
    }
}

/// True when `root` looks like a v1 layout with at least the memory controller.
pub fn available(root: &Path) -> bool {
    root.join("memory").join("memory.limit_in_bytes").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_v1_writes() {
        let r = Resources {
            memory_limit: Some(1 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50000),
            cpu_period: Some(100000),
            pids_limit: Some(10),
            devices: vec![(false, "a".into())],
        };
        let w = writes(&r);
        assert!(w.contains(&("memory", "memory.limit_in_bytes", "1048576".into())));
        assert!(w.contains(&("pids", "pids.max", "10".into())));
        assert!(w.contains(&("devices", "devices.deny", "a".into())));
        let period = w.iter().position(|x| x.1 == "cpu.cfs_period_us").unwrap();
        let quota = w.iter().position(|x| x.1 == "cpu.cfs_quota_us").unwrap();
        assert!(period < quota);
    }

    #[test]
    fn fake_hierarchy_records_created_dirs() {
        let dir = tempfile::tempdir().unwrap();
        for c in CONTROLLERS {
            std::fs::create_dir(dir.path().join(c)).unwrap();
        }
        let mut cg = V1Cgroup::new(dir.path().into(), "rkube-x/c1".into(), vec![]);
        cg.create(&Resources { pids_limit: Some(5), ..Default::default() }).unwrap();
        assert_eq!(cg.created().len(), 10);
        assert_eq!(std::fs::read_to_string(dir.path().join("pids/rkube-x/c1/pids.max")).unwrap(), "5");
        cg.remove().unwrap_err(); // a plain directory with files cannot be rmdir'ed: reports the path
    }
}
