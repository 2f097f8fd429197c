//! cgroups v1 and v2 behind one interface. Every path is injected (the hierarchy root, normally
//! `/sys/fs/cgroup`, and the container's relative path), so tests can use temp dirs.
//! Only directories this runtime created are ever removed (they are recorded in the state).

use std::path::{Path, PathBuf};

pub mod v1;
pub mod v2;

/// Errors from cgroup operations, naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}: {source}")]
    Create {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a control file failed.
    #[error("write {value:?} to {path}: {source}")]
    Write {
        /// Control file.
        path: PathBuf,
        /// Value written.
        value: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading a control file failed.
    #[error("read {path}: {source}")]
    Read {
        /// Control file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Removing a cgroup failed (still busy after the deadline).
    #[error("remove cgroup {path}: {source}")]
    Remove {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A limit the host's controllers do not offer.
    #[error("{field}: {reason}")]
    Unsupported {
        /// The spec field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Freezing or thawing failed.
    #[error("freezer: {0}")]
    Freeze(String),
    /// The cgroup path is not acceptable.
    #[error("invalid cgroup path {0:?}: must be relative without '..'")]
    InvalidPath(String),
}

/// Limits to apply (the subset of OCI `linux.resources` this runtime supports).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// CPU shares (v1 semantics; converted to weight on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period (-1 = unlimited).
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
    /// Device access rules (v1 devices controller), in order: (allow, "c 1:3 rwm").
    pub devices: Vec<(bool, String)>,
    /// Soft memory limit (`memory.reservation`), bytes.
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    /// Memory + swap limit (`memory.swap`), bytes.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// `memory.swappiness` (v1).
    #[serde(default)]
    pub memory_swappiness: Option<u64>,
    /// `memory.disableOOMKiller`.
    #[serde(default)]
    pub disable_oom_killer: bool,
    /// `cpu.cpus` (cpuset).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    /// `cpu.mems` (cpuset).
    #[serde(default)]
    pub cpuset_mems: Option<String>,
    /// hugetlb limits: (page size as the controller names it, e.g. `2MB`; bytes).
    #[serde(default)]
    pub hugepage_limits: Vec<(String, u64)>,
    /// Block I/O.
    #[serde(default)]
    pub block_io: BlockIo,
}

/// `linux.resources.blockIO`: devices as `major:minor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockIo {
    /// Weight (10–1000).
    pub weight: Option<u16>,
    /// Leaf weight (v1 CFQ).
    pub leaf_weight: Option<u16>,
    /// Per-device (device, weight, leaf weight).
    pub weight_device: Vec<(String, Option<u16>, Option<u16>)>,
    /// Throttles: (kind `read_bps`, `write_bps`, `read_iops` or `write_iops`; device; rate).
    pub throttle: Vec<(String, String, u64)>,
}

impl BlockIo {
    /// Whether anything is asked.
    pub fn is_empty(&self) -> bool {
        *self == BlockIo::default()
    }
}

/// Checks a hugetlb page size as the spec writes it (`<size><unit>B`, base 1024: `64KB`, `2MB`,
/// `1GB`); the host may still not offer it.
pub fn valid_page_size(size: &str) -> bool {
    let Some(number) =
        size.strip_suffix("KB").or_else(|| size.strip_suffix("MB")).or_else(|| size.strip_suffix("GB"))
    else {
        return false;
    };
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && !number.starts_with('0')
}

impl Resources {
    /// Takes the supported values from the OCI spec.
    pub fn from_oci(r: &oci_spec::runtime::LinuxResources) -> Self {
        use oci_spec::runtime::LinuxDeviceType;
        let devices = r
            .devices()
            .iter()
            .flatten()
            .map(|d| {
                let typ = match d.typ().unwrap_or_default() {
                    LinuxDeviceType::A => "a",
                    LinuxDeviceType::B => "b",
                    LinuxDeviceType::C | LinuxDeviceType::U => "c",
                    LinuxDeviceType::P => "p",
                };
                let num = |n: Option<i64>| n.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
                let rule = if typ == "a" && d.major().is_none() && d.minor().is_none() {
                    "a".to_string()
                } else {
                    format!(
                        "{typ} {}:{} {}",
                        num(d.major()),
                        num(d.minor()),
                        d.access().clone().unwrap_or("rwm".into())
                    )
                };
                (d.allow(), rule)
            })
            .collect();
        let memory = r.memory().as_ref();
        let cpu = r.cpu().as_ref();
        let mut block_io = BlockIo::default();
        if let Some(b) = r.block_io() {
            block_io.weight = b.weight().filter(|w| *w > 0);
            block_io.leaf_weight = b.leaf_weight().filter(|w| *w > 0);
            block_io.weight_device = b
                .weight_device()
                .iter()
                .flatten()
                .map(|d| (format!("{}:{}", d.major(), d.minor()), d.weight(), d.leaf_weight()))
                .collect();
            for (kind, list) in [
                ("read_bps", b.throttle_read_bps_device()),
                ("write_bps", b.throttle_write_bps_device()),
                ("read_iops", b.throttle_read_iops_device()),
                ("write_iops", b.throttle_write_iops_device()),
            ] {
                for d in list.iter().flatten() {
                    block_io.throttle.push((kind.into(), format!("{}:{}", d.major(), d.minor()), d.rate()));
                }
            }
        }
        Resources {
            memory_reservation: memory.and_then(|m| m.reservation()).filter(|l| *l > 0),
            memory_swap: memory.and_then(|m| m.swap()).filter(|l| *l != 0),
            memory_swappiness: memory.and_then(|m| m.swappiness()),
            disable_oom_killer: memory.and_then(|m| m.disable_oom_killer()).unwrap_or(false),
            cpuset_cpus: cpu.and_then(|c| c.cpus().clone()).filter(|s| !s.is_empty()),
            cpuset_mems: cpu.and_then(|c| c.mems().clone()).filter(|s| !s.is_empty()),
            hugepage_limits: r
                .hugepage_limits()
                .iter()
                .flatten()
                .map(|h| (h.page_size().clone(), u64::try_from(h.limit()).unwrap_or(u64::MAX)))
                .collect(),
            block_io,
            memory_limit: r.memory().as_ref().and_then(|m| m.limit()).filter(|l| *l > 0),
            cpu_shares: r.cpu().as_ref().and_then(|c| c.shares()),
            cpu_quota: r.cpu().as_ref().and_then(|c| c.quota()),
            cpu_period: r.cpu().as_ref().and_then(|c| c.period()),
            pids_limit: r.pids().as_ref().map(|p| p.limit()).filter(|l| *l > 0),
            devices,
        }
    }
}

/// Usage statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Number of tasks.
    pub pids: u64,
    /// Number of OOM kills in this cgroup.
    pub oom_kills: u64,
}

/// Which hierarchy layout a cgroup lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// Legacy per-controller hierarchies (`<root>/<controller>/…`), also the hybrid layout.
    V1,
    /// The unified hierarchy (`<root>/…`).
    V2,
}

/// Detects the layout at `root`: a `cgroup.controllers` file there means unified (v2).
pub fn detect(root: &Path) -> Version {
    if root.join("cgroup.controllers").exists() { Version::V2 } else { Version::V1 }
}

/// One container's cgroup, independent of the version.
pub trait CgroupManager {
    /// Creates the directories (recording those it made) and applies `resources`.
    fn create(&mut self, resources: &Resources) -> Result<(), CgroupError>;
    /// Files to write `0` into for a process to join (one per hierarchy).
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Moves a process in.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for file in self.procs_files() {
            write_file(&file, &pid.to_string())?;
        }
        Ok(())
    }
    /// Usage counters.
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// Pids inside the cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Removes the directories this manager created, killing leftover tasks first.
    fn remove(&self) -> Result<(), CgroupError>;
    /// Directories created by `create`, outermost first (persisted so another process can remove them).
    fn created(&self) -> &[PathBuf];
    /// Where the v1 controller directories or the v2 directory are, for the container's /sys/fs/cgroup.
    fn mount_sources(&self) -> Vec<(String, PathBuf)>;
    /// Freezes (`true`) or thaws every process of the cgroup, returning once the kernel reports
    /// it done (`pause`, `resume`). May create a directory (v1's freezer), recorded in `created`.
    fn freeze(&mut self, frozen: bool) -> Result<(), CgroupError>;
    /// Whether the cgroup is frozen.
    fn frozen(&self) -> bool;
}

/// Polls `done` every millisecond for up to a second (a freeze waits for every task to stop).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), CgroupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !done() {
        if std::time::Instant::now() > deadline {
            return Err(CgroupError::Freeze(format!("{what} did not finish within 1s")));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Persistable description of a container cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupConfig {
    /// Layout.
    pub version: Version,
    /// Hierarchy root (`/sys/fs/cgroup` for v1, the cgroup2 mount for v2).
    pub root: PathBuf,
    /// Path relative to the root (e.g. `rkube/<id>`), or to the v1 controller's entry in
    /// `bases`.
    pub path: PathBuf,
    /// Directories created by us (removed on delete).
    pub created: Vec<PathBuf>,
    /// v1: a directory per controller (relative to its hierarchy) that `path` is under, for
    /// runc's relative placement (the caller's own cgroup of each controller); empty = the roots.
    #[serde(default)]
    pub bases: std::collections::BTreeMap<String, PathBuf>,
}

impl CgroupConfig {
    /// A config for `path` under `root`, detecting the version.
    pub fn new(root: &Path, path: &str) -> Result<Self, CgroupError> {
        let rel = Path::new(path.trim_start_matches('/'));
        if path.trim_matches('/').is_empty()
            || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(CgroupError::InvalidPath(path.to_string()));
        }
        Ok(CgroupConfig {
            version: detect(root),
            root: root.to_path_buf(),
            path: rel.to_path_buf(),
            created: vec![],
            bases: Default::default(),
        })
    }

    /// runc's placement of a relative path: under the caller's own cgroup (`own`, the lines of
    /// `/proc/self/cgroup`): v1 per controller; v2 under the parent of the caller's cgroup (its
    /// own holds processes, so it can have no child with controllers).
    pub fn relative_to(mut self, own: &str) -> Self {
        let own = parse_proc_cgroup(own);
        match self.version {
            Version::V1 => {
                self.bases = own
                    .into_iter()
                    .filter(|(ctrl, _)| !ctrl.is_empty())
                    .flat_map(|(ctrls, path)| {
                        let rel = PathBuf::from(path.trim_start_matches('/'));
                        ctrls.split(',').map(move |c| (c.to_string(), rel.clone())).collect::<Vec<_>>()
                    })
                    .collect();
            }
            Version::V2 => {
                if let Some((_, path)) = own.iter().find(|(ctrl, _)| ctrl.is_empty()) {
                    let parent = Path::new(path.trim_start_matches('/')).parent().unwrap_or(Path::new(""));
                    self.path = parent.join(&self.path);
                }
            }
        }
        self
    }

    /// The manager for this config.
    pub fn manager(&self) -> Box<dyn CgroupManager> {
        match self.version {
            Version::V1 => Box::new(
                v1::V1Cgroup::new(self.root.clone(), self.path.clone(), self.created.clone())
                    .with_bases(self.bases.clone()),
            ),
            Version::V2 => {
                Box::new(v2::V2Cgroup::new(self.root.clone(), self.path.clone(), self.created.clone()))
            }
        }
    }
}

/// `/proc/<pid>/cgroup` as (controllers, path) pairs: `"cpu,cpuacct"`, `"name=systemd"`, or
/// `""` for the v2 hierarchy.
pub fn parse_proc_cgroup(content: &str) -> Vec<(String, String)> {
    content
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrls.to_string(), path.to_string()))
        })
        .collect()
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

/// Reads a `key value` line from a flat-keyed file such as `memory.events`.
pub(crate) fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// Creates `rel` under `base` component by component, appending each directory made to `created`.
pub(crate) fn mkdir_recording(
    base: &Path,
    rel: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let mut cur = base.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => created.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: cur, source }),
        }
    }
    Ok(())
}

/// Removes created directories innermost first. A leaf still holding dying tasks is retried
/// (killing leftovers) until a deadline; an ancestor still used by another container is kept.
pub(crate) fn rmdir_created(
    created: &[PathBuf],
    leaves: &[PathBuf],
    kill: impl Fn(&Path),
) -> Result<(), CgroupError> {
    for dir in created.iter().rev() {
        let is_leaf = leaves.contains(dir);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e)
                    if !is_leaf && matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) =>
                {
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                    kill(dir);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(source) => return Err(CgroupError::Remove { path: dir.clone(), source }),
            }
        }
    }
    Ok(())
}

/// Kills every pid listed in `<dir>/cgroup.procs` (best effort).
pub(crate) fn kill_procs(dir: &Path) {
    if let Ok(content) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in content.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_go_under_the_callers_own_cgroups_as_in_runc() {
        let own = "10:hugetlb:/\n4:memory:/svc/a\n2:cpu,cpuacct:/svc\n1:name=systemd:/svc\n0::/svc/a\n";
        let config = |version| CgroupConfig {
            version,
            root: "/sys/fs/cgroup".into(),
            path: "c1".into(),
            created: vec![],
            bases: Default::default(),
        };
        let v1 = config(Version::V1).relative_to(own);
        let v1m = v1::V1Cgroup::new(v1.root.clone(), v1.path.clone(), vec![]).with_bases(v1.bases.clone());
        assert_eq!(v1m.dir("hugetlb"), Path::new("/sys/fs/cgroup/hugetlb/c1"));
        assert_eq!(v1m.dir("memory"), Path::new("/sys/fs/cgroup/memory/svc/a/c1"));
        assert_eq!(v1m.dir("cpuacct"), Path::new("/sys/fs/cgroup/cpuacct/svc/c1"));
        assert_eq!(v1m.dir("pids"), Path::new("/sys/fs/cgroup/pids/c1"), "not listed: the root");
        // v2: beside the caller's own (leaf) cgroup.
        assert_eq!(config(Version::V2).relative_to(own).path, Path::new("svc/c1"));
        assert_eq!(config(Version::V2).relative_to("0::/\n").path, Path::new("c1"));
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CgroupConfig::new(dir.path(), "../etc").is_err());
        assert!(CgroupConfig::new(dir.path(), "/").is_err());
        let c = CgroupConfig::new(dir.path(), "/rkube/abc").unwrap();
        assert_eq!(c.path, Path::new("rkube/abc"));
        assert_eq!(c.version, Version::V1);
    }

    #[test]
    fn parses_keyed_files() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(2));
        assert_eq!(keyed_value(events, "oom_group_kill"), None);
    }

    #[test]
    fn converts_oci_resources() {
        let r: oci_spec::runtime::LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":1048576},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":20},
                "devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
        )
        .unwrap();
        let res = Resources::from_oci(&r);
        assert_eq!(res.memory_limit, Some(1048576));
        assert_eq!(res.pids_limit, Some(20));
        assert_eq!(res.devices, vec![(false, "a".to_string()), (true, "c 1:3 rwm".to_string())]);
    }
}
