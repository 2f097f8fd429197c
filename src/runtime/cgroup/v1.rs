//! cgroup v1: one directory per controller hierarchy at `<root>/<controller>/<path>`.

use std::path::{Path, PathBuf};

use super::{
    CgroupError, CgroupManager, Resources, Stats, keyed_value, kill_procs, mkdir_recording, read_file,
    write_file,
};

/// Controllers this runtime always joins and configures.
pub const CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// Controllers joined only when the container asks for one of their limits (or when their
/// directory already exists at the container's path).
pub const OPTIONAL: [&str; 4] = ["cpuset", "hugetlb", "blkio", "freezer"];

/// A container cgroup in the v1 hierarchies.
#[derive(Debug)]
pub struct V1Cgroup {
    root: PathBuf,
    path: PathBuf,
    created: Vec<PathBuf>,
    bases: std::collections::BTreeMap<String, PathBuf>,
}

impl V1Cgroup {
    /// A cgroup at `<root>/<controller>/<path>`; `created` lists directories made earlier.
    pub fn new(root: PathBuf, path: PathBuf, created: Vec<PathBuf>) -> Self {
        V1Cgroup { root, path, created, bases: Default::default() }
    }

    /// Places `path` under `bases[controller]` in each hierarchy (see `CgroupConfig::bases`).
    pub fn with_bases(mut self, bases: std::collections::BTreeMap<String, PathBuf>) -> Self {
        self.bases = bases;
        self
    }

    /// The directory of a controller that `path` is relative to.
    fn base(&self, controller: &str) -> PathBuf {
        let hierarchy = self.root.join(controller);
        match self.bases.get(controller) {
            Some(base) => hierarchy.join(base),
            None => hierarchy,
        }
    }

    /// Controllers mounted under the root (a missing hierarchy is skipped), plus the optional
    /// ones the container has a directory in.
    fn controllers(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = CONTROLLERS.iter().copied().filter(|c| self.mounted(c)).collect();
        out.extend(OPTIONAL.iter().copied().filter(|c| self.dir(c).is_dir()));
        out
    }

    /// Whether `controller`'s hierarchy is mounted under the root: its root has `cgroup.procs`
    /// (an empty directory of that name, left by an unmount, is not one).
    fn mounted(&self, controller: &str) -> bool {
        self.root.join(controller).join("cgroup.procs").exists()
    }

    /// The directory of a controller.
    pub fn dir(&self, controller: &str) -> PathBuf {
        self.base(controller).join(&self.path)
    }

    fn read_u64(&self, controller: &str, file: &str) -> u64 {
        read_file(&self.dir(controller).join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// runc's `cpusetEnsureParent`: a new cpuset cgroup starts with no cpus and mems, and no
    /// task can join it; give every level on the path that is empty its parent's.
    fn cpuset_inherit(&self) -> Result<(), CgroupError> {
        let mut parent = self.base("cpuset");
        for comp in self.path.components() {
            let dir = parent.join(comp);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if read_file(&dir.join(file))?.trim().is_empty() {
                    let value = read_file(&parent.join(file))?;
                    write_file(&dir.join(file), value.trim())?;
                }
            }
            parent = dir;
        }
        Ok(())
    }
}

/// The spec field a v1 control file implements (for errors).
fn field_of(file: &str) -> &'static str {
    match file.split('.').next() {
        Some("hugetlb") => "linux.resources.hugepageLimits",
        Some("cpuset") => "linux.resources.cpu.cpus/mems",
        Some("blkio") => "linux.resources.blockIO",
        Some("memory") => "linux.resources.memory",
        Some("cpu") => "linux.resources.cpu",
        _ => "linux.resources",
    }
}

/// The optional controllers `resources` needs.
pub fn optional_needed(resources: &Resources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if resources.cpuset_cpus.is_some() || resources.cpuset_mems.is_some() {
        out.push("cpuset");
    }
    if !resources.hugepage_limits.is_empty() {
        out.push("hugetlb");
    }
    if !resources.block_io.is_empty() {
        out.push("blkio");
    }
    out
}

/// The (file, value) writes for `resources`, per controller. Pure.
pub fn writes(resources: &Resources) -> Vec<(&'static str, String, String)> {
    let mut out: Vec<(&'static str, String, String)> = Vec::new();
    let mut push = |ctrl: &'static str, file: &str, value: String| out.push((ctrl, file.to_string(), value));
    if let Some(limit) = resources.memory_limit {
        push("memory", "memory.limit_in_bytes", limit.to_string());
    }
    if let Some(swap) = resources.memory_swap {
        // v1 and the spec agree: memory plus swap.
        push("memory", "memory.memsw.limit_in_bytes", swap.to_string());
    }
    if let Some(reservation) = resources.memory_reservation {
        push("memory", "memory.soft_limit_in_bytes", reservation.to_string());
    }
    if let Some(swappiness) = resources.memory_swappiness {
        push("memory", "memory.swappiness", swappiness.to_string());
    }
    if resources.disable_oom_killer {
        push("memory", "memory.oom_control", "1".into());
    }
    if let Some(shares) = resources.cpu_shares {
        push("cpu", "cpu.shares", shares.to_string());
    }
    if let Some(period) = resources.cpu_period {
        push("cpu", "cpu.cfs_period_us", period.to_string());
    }
    if let Some(quota) = resources.cpu_quota {
        push("cpu", "cpu.cfs_quota_us", quota.to_string());
    }
    if let Some(pids) = resources.pids_limit {
        push("pids", "pids.max", pids.to_string());
    }
    if let Some(mems) = &resources.cpuset_mems {
        push("cpuset", "cpuset.mems", mems.clone());
    }
    if let Some(cpus) = &resources.cpuset_cpus {
        push("cpuset", "cpuset.cpus", cpus.clone());
    }
    for (size, limit) in &resources.hugepage_limits {
        push("hugetlb", &format!("hugetlb.{size}.limit_in_bytes"), limit.to_string());
    }
    let b = &resources.block_io;
    if let Some(w) = b.weight {
        push("blkio", "blkio.weight", w.to_string());
    }
    if let Some(w) = b.leaf_weight {
        push("blkio", "blkio.leaf_weight", w.to_string());
    }
    for (dev, weight, leaf) in &b.weight_device {
        if let Some(w) = weight.filter(|w| *w > 0) {
            push("blkio", "blkio.weight_device", format!("{dev} {w}"));
        }
        if let Some(w) = leaf.filter(|w| *w > 0) {
            push("blkio", "blkio.leaf_weight_device", format!("{dev} {w}"));
        }
    }
    for (kind, dev, rate) in &b.throttle {
        push("blkio", &format!("blkio.throttle.{kind}_device"), format!("{dev} {rate}"));
    }
    for (allow, rule) in &resources.devices {
        push("devices", if *allow { "devices.allow" } else { "devices.deny" }, rule.clone());
    }
    out
}

impl CgroupManager for V1Cgroup {
    fn create(&mut self, resources: &Resources) -> Result<(), CgroupError> {
        let optional = optional_needed(resources);
        for ctrl in &optional {
            if !self.mounted(ctrl) {
                return Err(CgroupError::Unsupported {
                    field: field_of(ctrl),
                    reason: format!("the {ctrl} controller is not mounted at {}", self.root.display()),
                });
            }
        }
        let mut wanted: Vec<&'static str> = CONTROLLERS.iter().copied().filter(|c| self.mounted(c)).collect();
        wanted.extend(optional.iter().copied());
        for ctrl in wanted {
            let base = self.base(ctrl);
            let mut created = std::mem::take(&mut self.created);
            let result = mkdir_recording(&base, &self.path, &mut created);
            self.created = created;
            result?;
        }
        if optional.contains(&"cpuset") {
            self.cpuset_inherit()?;
        }
        let present = self.controllers();
        for (ctrl, file, value) in writes(resources) {
            if !present.contains(&ctrl) {
                continue;
            }
            let dir = self.dir(ctrl);
            let mut path = dir.join(&file);
            // Without CFQ the weights are BFQ's.
            if file.starts_with("blkio.") && file.contains("weight") && !path.exists() {
                path = dir.join(file.replacen("blkio.", "blkio.bfq.", 1));
            }
            let may_be_absent = OPTIONAL.contains(&ctrl) || file == "memory.memsw.limit_in_bytes";
            if may_be_absent && !path.exists() {
                let reason = if ctrl == "hugetlb" {
                    let size = file.trim_start_matches("hugetlb.").trim_end_matches(".limit_in_bytes");
                    format!("page size {size} is not offered by this host's hugetlb controller")
                } else {
                    format!("{file} is not offered by this host")
                };
                return Err(CgroupError::Unsupported { field: field_of(&file), reason });
            }
            write_file(&path, &value)?;
            if ctrl == "hugetlb" {
                // The reservation limit too, where the kernel has it (runc ≥ 1.1.10).
                let rsvd = dir.join(file.replace(".limit_in_bytes", ".rsvd.limit_in_bytes"));
                if rsvd.exists() {
                    write_file(&rsvd, &value)?;
                }
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
        let leaves: Vec<PathBuf> = CONTROLLERS.iter().chain(OPTIONAL.iter()).map(|c| self.dir(c)).collect();
        super::rmdir_created(&self.created, &leaves, kill_procs)
    }

    fn created(&self) -> &[PathBuf] {
        &self.created
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        self.controllers().into_iter().map(|c| (c.to_string(), self.dir(c))).collect()
    }

    /// The freezer directory is made at the first `pause` (a plain start makes none), the
    /// container's processes moved in and frozen; one that forked meanwhile is moved after
    /// (a task that enters a frozen cgroup freezes) until every process is in.
    fn freeze(&mut self, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.dir("freezer");
        let state = dir.join("freezer.state");
        if !frozen {
            if dir.is_dir() {
                write_file(&state, "THAWED")?;
                super::wait_until("thawing", || read_file(&state).is_ok_and(|s| s.trim() == "THAWED"))?;
            }
            return Ok(());
        }
        if !self.mounted("freezer") {
            return Err(CgroupError::Freeze(format!(
                "the freezer controller is not mounted at {}",
                self.root.display()
            )));
        }
        let mut created = std::mem::take(&mut self.created);
        let result = mkdir_recording(&self.base("freezer"), &self.path, &mut created);
        self.created = created;
        result?;
        let procs = dir.join("cgroup.procs");
        for _ in 0..100 {
            let inside = read_file(&procs)?;
            let inside: Vec<i32> = inside.lines().filter_map(|l| l.trim().parse().ok()).collect();
            let missing: Vec<i32> = self.pids()?.into_iter().filter(|p| !inside.contains(p)).collect();
            for pid in &missing {
                // It may have exited meanwhile.
                let _ = write_file(&procs, &pid.to_string());
            }
            write_file(&state, "FROZEN")?;
            super::wait_until("freezing", || read_file(&state).is_ok_and(|s| s.trim() == "FROZEN"))?;
            if missing.is_empty() {
                return Ok(());
            }
        }
        Err(CgroupError::Freeze("the container's processes kept forking".into()))
    }

    fn frozen(&self) -> bool {
        read_file(&self.dir("freezer").join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
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
            ..Default::default()
        };
        let w = writes(&r);
        assert!(w.contains(&("memory", "memory.limit_in_bytes".into(), "1048576".into())));
        assert!(w.contains(&("pids", "pids.max".into(), "10".into())));
        assert!(w.contains(&("devices", "devices.deny".into(), "a".into())));
        let period = w.iter().position(|x| x.1 == "cpu.cfs_period_us").unwrap();
        let quota = w.iter().position(|x| x.1 == "cpu.cfs_quota_us").unwrap();
        assert!(period < quota);
    }

    #[test]
    fn fake_hierarchy_records_created_dirs() {
        let dir = tempfile::tempdir().unwrap();
        for c in CONTROLLERS {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        // An empty directory is no hierarchy: nothing is made in it.
        std::fs::create_dir(dir.path().join("hugetlb")).unwrap();
        let mut cg = V1Cgroup::new(dir.path().into(), "rkube-x/c1".into(), vec![]);
        cg.create(&Resources { pids_limit: Some(5), ..Default::default() }).unwrap();
        assert_eq!(cg.created().len(), 10);
        assert_eq!(std::fs::read_to_string(dir.path().join("pids/rkube-x/c1/pids.max")).unwrap(), "5");
        assert!(!dir.path().join("hugetlb/rkube-x").exists());
        cg.remove().unwrap_err(); // a plain directory with files cannot be rmdir'ed: reports the path
    }
}
