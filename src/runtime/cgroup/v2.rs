//! cgroup v2: one directory in the unified hierarchy. Controllers are enabled in every
//! ancestor's `cgroup.subtree_control` (never the leaf: the no-internal-process rule).

use std::path::PathBuf;

use super::{
    CgroupError, CgroupManager, Resources, Stats, keyed_value, kill_procs, mkdir_recording, read_file,
    write_file,
};

/// A container cgroup in the unified hierarchy.
#[derive(Debug)]
pub struct V2Cgroup {
    root: PathBuf,
    path: PathBuf,
    created: Vec<PathBuf>,
}

/// cgroup v1 cpu shares (2..262144) to v2 cpu.weight (1..10000), as runc converts them.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

/// The (file, value) writes for `resources`, or the first field v2 cannot express. Pure.
pub fn writes(resources: &Resources) -> Result<Vec<(String, String)>, CgroupError> {
    let unsupported = |field: &'static str| CgroupError::Unsupported {
        field,
        reason: "has no cgroup v2 equivalent".into(),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |file: &str, value: String| out.push((file.to_string(), value));
    if let Some(limit) = resources.memory_limit {
        push("memory.max", limit.to_string());
    }
    if let Some(swap) = resources.memory_swap {
        // The spec's swap is memory plus swap; v2's swap.max is the swap alone.
        let value = match (swap, resources.memory_limit) {
            (-1, _) => "max".to_string(),
            (swap, Some(limit)) if swap >= limit => (swap - limit).to_string(),
            _ => return Err(unsupported("linux.resources.memory.swap")),
        };
        push("memory.swap.max", value);
    }
    if let Some(reservation) = resources.memory_reservation {
        push("memory.low", reservation.to_string());
    }
    if resources.memory_swappiness.is_some() {
        return Err(unsupported("linux.resources.memory.swappiness"));
    }
    if resources.disable_oom_killer {
        return Err(unsupported("linux.resources.memory.disableOOMKiller"));
    }
    if let Some(shares) = resources.cpu_shares {
        push("cpu.weight", shares_to_weight(shares).to_string());
    }
    if resources.cpu_quota.is_some() || resources.cpu_period.is_some() {
        let quota = match resources.cpu_quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        push("cpu.max", format!("{quota} {}", resources.cpu_period.unwrap_or(100000)));
    }
    if let Some(pids) = resources.pids_limit {
        push("pids.max", pids.to_string());
    }
    if let Some(cpus) = &resources.cpuset_cpus {
        push("cpuset.cpus", cpus.clone());
    }
    if let Some(mems) = &resources.cpuset_mems {
        push("cpuset.mems", mems.clone());
    }
    for (size, limit) in &resources.hugepage_limits {
        push(&format!("hugetlb.{size}.max"), limit.to_string());
    }
    let b = &resources.block_io;
    if let Some(w) = b.weight {
        // runc's conversion of the v1 range 10..1000 to io.weight's 1..10000.
        push("io.weight", (1 + (u64::from(w).saturating_sub(10)) * 9999 / 990).to_string());
    }
    if b.leaf_weight.is_some() || !b.weight_device.is_empty() {
        return Err(unsupported("linux.resources.blockIO.leafWeight/weightDevice"));
    }
    for (kind, dev, rate) in &b.throttle {
        let key = match kind.as_str() {
            "read_bps" => "rbps",
            "write_bps" => "wbps",
            "read_iops" => "riops",
            _ => "wiops",
        };
        push("io.max", format!("{dev} {key}={rate}"));
    }
    Ok(out)
}

/// The controllers `resources` needs enabled in the parents' `subtree_control`.
fn controllers_needed(resources: &Resources) -> Vec<&'static str> {
    let mut out = vec!["cpu", "memory", "pids"];
    if resources.cpuset_cpus.is_some() || resources.cpuset_mems.is_some() {
        out.push("cpuset");
    }
    if !resources.hugepage_limits.is_empty() {
        out.push("hugetlb");
    }
    if !resources.block_io.is_empty() {
        out.push("io");
    }
    out
}

impl V2Cgroup {
    /// A cgroup at `<root>/<path>`; `created` lists directories made earlier.
    pub fn new(root: PathBuf, path: PathBuf, created: Vec<PathBuf>) -> Self {
        V2Cgroup { root, path, created }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.path)
    }

    fn read_u64(&self, file: &str) -> u64 {
        read_file(&self.dir().join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Enables the wanted controllers (those the root offers) from the root down to the parent.
    fn enable_controllers(&self, needed: &[&'static str]) -> Result<(), CgroupError> {
        let offered = read_file(&self.root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = needed
            .iter()
            .filter(|c| offered.split_whitespace().any(|o| o == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut cur = self.root.clone();
        let comps: Vec<_> = self.path.components().collect();
        for comp in &comps[..comps.len().saturating_sub(1)] {
            write_file(&cur.join("cgroup.subtree_control"), &wanted.join(" "))?;
            cur.push(comp);
        }
        write_file(&cur.join("cgroup.subtree_control"), &wanted.join(" "))
    }
}

impl CgroupManager for V2Cgroup {
    fn create(&mut self, resources: &Resources) -> Result<(), CgroupError> {
        let mut created = std::mem::take(&mut self.created);
        let result = mkdir_recording(&self.root, &self.path, &mut created);
        self.created = created;
        result?;
        let writes = writes(resources)?;
        self.enable_controllers(&controllers_needed(resources))?;
        for (file, value) in writes {
            let path = self.dir().join(&file);
            let optional = matches!(file.split('.').next(), Some("hugetlb" | "cpuset" | "io"));
            if optional && !path.exists() {
                let field = match file.split('.').next() {
                    Some("hugetlb") => "linux.resources.hugepageLimits",
                    Some("cpuset") => "linux.resources.cpu.cpus/mems",
                    Some("io") => "linux.resources.blockIO",
                    _ => "linux.resources",
                };
                return Err(CgroupError::Unsupported {
                    field,
                    reason: format!("{file} is not offered by this host"),
                });
            }
            write_file(&path, &value)?;
            if file.starts_with("hugetlb.") {
                let rsvd = self.dir().join(file.replace(".max", ".rsvd.max"));
                if rsvd.exists() {
                    write_file(&rsvd, &value)?;
                }
            }
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir().join("cgroup.procs")]
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let events = read_file(&self.dir().join("memory.events")).unwrap_or_default();
        let cpu = read_file(&self.dir().join("cpu.stat")).unwrap_or_default();
        Ok(Stats {
            memory_usage: self.read_u64("memory.current"),
            cpu_usage_ns: keyed_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
            pids: self.read_u64("pids.current"),
            oom_kills: keyed_value(&events, "oom_kill").unwrap_or(0),
        })
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let content = read_file(&self.dir().join("cgroup.procs"))?;
        Ok(content.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let kill_file = self.dir().join("cgroup.kill");
        if self.created.iter().any(|c| *c == self.dir()) && kill_file.exists() {
            let _ = write_file(&kill_file, "1");
        }
        super::rmdir_created(&self.created, &[self.dir()], kill_procs)
    }

    fn created(&self) -> &[PathBuf] {
        &self.created
    }

    fn freeze(&mut self, frozen: bool) -> Result<(), CgroupError> {
        write_file(&self.dir().join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let events = self.dir().join("cgroup.events");
        super::wait_until(if frozen { "freezing" } else { "thawing" }, || {
            read_file(&events).is_ok_and(|e| e.lines().any(|l| l.trim() == want))
        })
    }

    fn frozen(&self) -> bool {
        read_file(&self.dir().join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        vec![(String::new(), self.dir())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_shares_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn plans_v2_writes() {
        let r = Resources {
            cpu_quota: Some(-1),
            cpu_period: Some(50000),
            memory_limit: Some(4096),
            ..Default::default()
        };
        let w = writes(&r).unwrap();
        assert_eq!(
            w,
            vec![
                ("memory.max".to_string(), "4096".to_string()),
                ("cpu.max".to_string(), "max 50000".to_string())
            ]
        );
    }

    #[test]
    fn fake_unified_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let config = super::super::CgroupConfig::new(dir.path(), "rkube/test/c1").unwrap();
        assert_eq!(config.version, super::super::Version::V2);
        let mut cg = V2Cgroup::new(dir.path().into(), config.path.clone(), vec![]);
        cg.create(&Resources { pids_limit: Some(7), memory_limit: Some(1 << 20), ..Default::default() })
            .unwrap();
        assert_eq!(cg.created().len(), 3);
        for level in ["", "rkube", "rkube/test"] {
            let sc = std::fs::read_to_string(dir.path().join(level).join("cgroup.subtree_control")).unwrap();
            assert_eq!(sc, "+cpu +memory +pids");
        }
        assert!(!dir.path().join("rkube/test/c1/cgroup.subtree_control").exists());
        assert_eq!(std::fs::read_to_string(dir.path().join("rkube/test/c1/pids.max")).unwrap(), "7");
        std::fs::write(dir.path().join("rkube/test/c1/memory.events"), "oom 1\noom_kill 1\n").unwrap();
        std::fs::write(dir.path().join("rkube/test/c1/memory.current"), "12345\n").unwrap();
        let stats = cg.stats().unwrap();
        assert_eq!((stats.oom_kills, stats.memory_usage), (1, 12345));
    }
}
