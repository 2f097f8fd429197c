//! The container configuration: an OCI runtime spec validated and turned into a plan (pure logic,
//! no syscalls) that the init process, the monitor and `exec` carry out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::runtime::caps::{CapPlan, CapsError};
use crate::runtime::cgroup::Resources;
use crate::runtime::mounts::MountSpec;
use crate::runtime::rlimits::Rlimit;
use crate::runtime::rootfs::{DeviceNode, RootfsSource, default_devices};
use crate::runtime::seccomp::{self, Profile, SeccompError};

/// Annotation selecting a seccomp profile when the spec has none: `runtime/default` (Docker's).
pub const SECCOMP_ANNOTATION: &str = "io.rkube.seccomp";
/// Annotation `deny` writes `setgroups=deny` for a new user namespace before its gid map.
pub const SETGROUPS_ANNOTATION: &str = "io.rkube.userns.setgroups";
/// Most lines a uid_map or gid_map may have (the kernel's `UID_GID_MAP_MAX_EXTENTS`).
pub const MAX_ID_MAP_LINES: usize = 340;
/// Annotation naming the user by name (`user[:group]`), resolved in the image's /etc files.
pub const USER_ANNOTATION: &str = "io.rkube.user";

/// Errors in the spec, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required field is missing.
    #[error("config: missing {0}")]
    Missing(&'static str),
    /// A field has an unsupported or invalid value.
    #[error("config: {field}: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A field this runtime does not implement is set.
    #[error("config: {field}: {reason}")]
    Unsupported {
        /// The field's path in the spec.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// The root filesystem does not exist.
    #[error("rootfs {0} does not exist or is not a directory")]
    MissingRootfs(PathBuf),
    /// Capabilities.
    #[error("config: capabilities: {0}")]
    Caps(#[from] CapsError),
    /// Seccomp.
    #[error("config: seccomp: {0}")]
    Seccomp(#[from] SeccompError),
    /// Hooks.
    #[error("config: {0}")]
    Hooks(#[from] crate::runtime::hooks::HookError),
}

/// A Linux namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum NamespaceKind {
    /// PID.
    Pid,
    /// Network.
    Net,
    /// Mount.
    Mount,
    /// IPC.
    Ipc,
    /// UTS (hostname).
    Uts,
    /// cgroup.
    Cgroup,
    /// User (uid/gid maps).
    User,
    /// Time (`CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` offsets).
    Time,
}

impl NamespaceKind {
    /// The `CLONE_NEW*` flag.
    pub fn flag(self) -> libc::c_int {
        match self {
            NamespaceKind::Pid => libc::CLONE_NEWPID,
            NamespaceKind::Net => libc::CLONE_NEWNET,
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
            NamespaceKind::User => libc::CLONE_NEWUSER,
            NamespaceKind::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The file name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Net => "net",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
            NamespaceKind::Time => "time",
        }
    }
}

/// A namespace to create (no path) or join (path).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Namespace {
    /// Kind.
    pub kind: NamespaceKind,
    /// Existing namespace to join.
    pub path: Option<PathBuf>,
}

/// One line of a uid or gid map: `size` ids from `container_id` inside are `host_id`… outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    /// First id inside the user namespace.
    pub container_id: u32,
    /// First id outside (on the host).
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// A new user namespace and how its ids map to the host's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserNamespace {
    /// uid map lines.
    pub uid_map: Vec<IdMap>,
    /// gid map lines.
    pub gid_map: Vec<IdMap>,
    /// Write `deny` to `/proc/<pid>/setgroups` before the gid map.
    pub deny_setgroups: bool,
}

impl UserNamespace {
    /// The host uid that container uid `id` maps to.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        to_host(&self.uid_map, id)
    }

    /// The host gid that container gid `id` maps to.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        to_host(&self.gid_map, id)
    }
}

fn to_host(map: &[IdMap], id: u32) -> Option<u32> {
    map.iter()
        .find(|m| id >= m.container_id && u64::from(id) < u64::from(m.container_id) + u64::from(m.size))
        .map(|m| m.host_id + (id - m.container_id))
}

/// The text written to `/proc/<pid>/uid_map` or `gid_map` (one write, one line per range).
pub fn id_map_text(map: &[IdMap]) -> String {
    map.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect()
}

/// Checks a uid or gid map as the kernel would: 1..=340 lines, sizes > 0, no range past 2^32,
/// no two ranges overlapping inside or outside. `field` names the spec field in the error.
pub fn validate_id_map(field: &'static str, map: &[IdMap]) -> Result<(), ConfigError> {
    if map.is_empty() {
        return Err(invalid(field, "required with a new user namespace"));
    }
    if map.len() > MAX_ID_MAP_LINES {
        return Err(invalid(field, format!("{} lines, at most {MAX_ID_MAP_LINES} allowed", map.len())));
    }
    let end = |first: u32, size: u32| u64::from(first) + u64::from(size);
    for (i, m) in map.iter().enumerate() {
        if m.size == 0 {
            return Err(invalid(field, format!("line {i}: size must be greater than 0")));
        }
        if end(m.container_id, m.size) > 1 << 32 || end(m.host_id, m.size) > 1 << 32 {
            return Err(invalid(field, format!("line {i}: range goes past the largest id")));
        }
        for (j, other) in map.iter().enumerate().take(i) {
            let overlaps =
                |a: u32, b: u32| u64::from(a) < end(b, other.size) && u64::from(b) < end(a, m.size);
            if overlaps(m.container_id, other.container_id) {
                return Err(invalid(field, format!("line {i}: container ids overlap line {j}")));
            }
            if overlaps(m.host_id, other.host_id) {
                return Err(invalid(field, format!("line {i}: host ids overlap line {j}")));
            }
        }
    }
    Ok(())
}

/// Who the process runs as, before resolution against the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserSpec {
    /// `uid[:gid]` or `name[:group]`.
    pub user: String,
    /// Extra supplementary groups from the spec.
    pub additional_gids: Vec<u32>,
    /// Also the groups the container's `/etc/group` lists the user in (Kubernetes and image
    /// users); a plain OCI spec's user has exactly `additionalGids`, as runc gives it.
    #[serde(default)]
    pub group_file: bool,
}

/// The process to run and its security settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessConfig {
    /// argv.
    pub args: Vec<String>,
    /// Environment (`KEY=value`).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// User.
    pub user: UserSpec,
    /// Capabilities.
    pub caps: CapPlan,
    /// rlimits.
    pub rlimits: Vec<Rlimit>,
    /// no_new_privs.
    pub no_new_privileges: bool,
    /// Seccomp profile.
    pub seccomp: Option<Profile>,
    /// umask.
    pub umask: u32,
    /// oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// AppArmor profile to exec into (only accepted when AppArmor is enabled).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// SELinux label to exec into (only accepted when SELinux is enabled).
    #[serde(default)]
    pub selinux_label: Option<String>,
    /// I/O priority `(class, level)` (`ioprio_set`).
    #[serde(default)]
    pub io_priority: Option<(u32, u32)>,
    /// Scheduling policy and parameters (`sched_setattr`).
    #[serde(default)]
    pub scheduler: Option<Scheduling>,
    /// CPU affinity before and after joining the cgroups.
    #[serde(default)]
    pub cpu_affinity: Option<CpuAffinity>,
}

/// `process.scheduler` as `sched_setattr` takes it (checked as runc checks it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scheduling {
    /// `SCHED_*` policy number.
    pub policy: u32,
    /// `SCHED_FLAG_*` bits.
    pub flags: u64,
    /// Nice value.
    pub nice: i32,
    /// Static priority.
    pub priority: u32,
    /// DEADLINE runtime (ns).
    pub runtime: u64,
    /// DEADLINE deadline (ns).
    pub deadline: u64,
    /// DEADLINE period (ns).
    pub period: u64,
}

/// `process.ioPriority` → `(class, level)`: RT 1, BE 2, IDLE 3; level 0–7.
fn io_priority_from(p: &oci_spec::runtime::LinuxIOPriority) -> Result<(u32, u32), ConfigError> {
    use oci_spec::runtime::IOPriorityClass as C;
    let class = match p.class() {
        C::IoprioClassRt => 1,
        C::IoprioClassBe => 2,
        C::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        return Err(invalid("process.ioPriority.priority", format!("{} is outside 0..7", p.priority())));
    }
    Ok((class, p.priority() as u32))
}

/// `process.scheduler` → [`Scheduling`], with runc's checks of which fields each policy takes.
fn scheduling_from(s: &oci_spec::runtime::Scheduler) -> Result<Scheduling, ConfigError> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(invalid("process.scheduler.nice", format!("{nice} is outside -20..19")));
    }
    if s.nice().is_some() && !matches!(policy, 0 | 3) {
        return Err(invalid("process.scheduler.nice", "only for SCHED_OTHER and SCHED_BATCH"));
    }
    let priority = s.priority().unwrap_or(0);
    if priority != 0 && !matches!(policy, 1 | 2) {
        return Err(invalid("process.scheduler.priority", "only for SCHED_FIFO and SCHED_RR"));
    }
    let deadline_fields = s.runtime().is_some() || s.deadline().is_some() || s.period().is_some();
    if deadline_fields && policy != 6 {
        return Err(invalid(
            "process.scheduler.runtime",
            "runtime, deadline and period only for SCHED_DEADLINE",
        ));
    }
    let flags = s.flags().iter().flatten().fold(0u64, |bits, f| {
        bits | match f {
            F::SchedResetOnFork => 0x1,
            F::SchedFlagReclaim => 0x2,
            F::SchedFlagDLOverrun => 0x4,
            F::SchedFlagKeepPolicy => 0x8,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        }
    });
    Ok(Scheduling {
        policy,
        flags,
        nice,
        priority: u32::try_from(priority)
            .map_err(|_| invalid("process.scheduler.priority", format!("{priority} is negative")))?,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    })
}

/// `linux.memoryPolicy` as `set_mempolicy(2)` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryPolicy {
    /// `MPOL_*` mode with its `MPOL_F_*` flags or'ed in.
    pub mode: i32,
    /// The node mask, 64 nodes per word (empty: no mask).
    pub nodes: Vec<u64>,
}

/// The most NUMA nodes a kernel can have (`MAX_NUMNODES` with the largest `NODES_SHIFT`).
const MAX_NUMA_NODES: u32 = 1 << 10;

/// `"0-3,5"` → node numbers, each below [`MAX_NUMA_NODES`].
fn numa_nodes(list: &str) -> Result<Vec<u32>, String> {
    id_list(list, MAX_NUMA_NODES, "node")
}

/// The most CPUs an affinity mask holds (`CPU_SETSIZE`).
const MAX_CPUS: u32 = 1024;

/// `"0-3,5"` → numbers, each below `limit`.
fn id_list(list: &str, limit: u32, what: &str) -> Result<Vec<u32>, String> {
    let mut nodes = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n < limit)
                .ok_or_else(|| format!("{s:?} is not a {what} number below {limit}"))
        };
        let (first, last) = (number(first)?, number(last)?);
        if first > last {
            return Err(format!("{part:?} is a range that ends before it starts"));
        }
        nodes.extend(first..=last);
    }
    Ok(nodes)
}

/// `process.execCPUAffinity`: the CPUs the process runs on before it joins the container's
/// cgroups (`initial`) and after (`final`; none: left as the kernel makes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuAffinity {
    /// Before joining the cgroups.
    pub initial: Option<Vec<u32>>,
    /// After joining them.
    #[serde(rename = "final")]
    pub after: Option<Vec<u32>>,
}

/// `execCPUAffinity` → [`CpuAffinity`], the lists checked (`field` names it in errors).
pub fn cpu_affinity_from(
    a: &oci_spec::runtime::ExecCPUAffinity,
    field: &'static str,
) -> Result<CpuAffinity, ConfigError> {
    let list = |s: &Option<String>| -> Result<Option<Vec<u32>>, ConfigError> {
        match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => id_list(s, MAX_CPUS, "CPU").map(Some).map_err(|e| invalid(field, e)),
        }
    };
    Ok(CpuAffinity { initial: list(a.initial())?, after: list(a.cpu_affinity_final())? })
}

/// `linux.memoryPolicy` → [`MemoryPolicy`], with the checks the kernel would make later (and
/// fail `create` with a less precise error).
fn memory_policy_from(p: &oci_spec::runtime::LinuxMemoryPolicy) -> Result<MemoryPolicy, ConfigError> {
    use oci_spec::runtime::{MemoryPolicyFlagType as F, MemoryPolicyModeType as M};
    let mode = match p.mode() {
        M::MpolDefault => 0,
        M::MpolPreferred => 1,
        M::MpolBind => 2,
        M::MpolInterleave => 3,
        M::MpolLocal => 4,
        M::MpolPreferredMany => 5,
        M::MpolWeightedInterleave => 6,
    };
    let nodes =
        numa_nodes(p.nodes().as_deref().unwrap_or("")).map_err(|e| invalid("linux.memoryPolicy.nodes", e))?;
    let flags = p.flags().iter().flatten().fold(0, |bits, f| {
        bits | match f {
            F::MpolFNumaBalancing => 1 << 13,
            F::MpolFRelativeNodes => 1 << 14,
            F::MpolFStaticNodes => 1 << 15,
        }
    });
    if matches!(p.mode(), M::MpolDefault | M::MpolLocal) && (!nodes.is_empty() || flags != 0) {
        return Err(invalid("linux.memoryPolicy", format!("{} takes no nodes and no flags", p.mode())));
    }
    if !matches!(p.mode(), M::MpolDefault | M::MpolLocal | M::MpolPreferred) && nodes.is_empty() {
        return Err(invalid("linux.memoryPolicy.nodes", format!("{} needs at least one node", p.mode())));
    }
    if flags & (3 << 14) == 3 << 14 {
        return Err(invalid(
            "linux.memoryPolicy.flags",
            "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
        ));
    }
    let mut mask = vec![0u64; nodes.iter().max().map_or(0, |n| *n as usize / 64 + 1)];
    for n in nodes {
        mask[n as usize / 64] |= 1 << (n % 64);
    }
    Ok(MemoryPolicy { mode: mode | flags, nodes: mask })
}

/// `linux.timeOffsets` → `timens_offsets` lines; only with a new time namespace, only the two
/// clocks it offsets.
fn time_offsets_from(
    offsets: Option<&std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
    namespaces: &[Namespace],
) -> Result<Vec<String>, ConfigError> {
    let Some(offsets) = offsets.filter(|o| !o.is_empty()) else { return Ok(Vec::new()) };
    if !namespaces.iter().any(|n| n.kind == NamespaceKind::Time && n.path.is_none()) {
        return Err(invalid(
            "linux.timeOffsets",
            "only for a new time namespace (a \"time\" entry without a path)",
        ));
    }
    let mut lines: Vec<String> = Vec::new();
    for (clock, offset) in offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(invalid(
                "linux.timeOffsets",
                format!("{clock:?} is not a clock a time namespace offsets (monotonic, boottime)"),
            ));
        }
        let nanos = offset.nanosecs().unwrap_or(0);
        if nanos >= 1_000_000_000 {
            return Err(invalid(
                "linux.timeOffsets",
                format!("{clock}: nanosecs {nanos} is not below one second"),
            ));
        }
        lines.push(format!("{clock} {} {nanos}", offset.secs().unwrap_or(0)));
    }
    lines.sort();
    Ok(lines)
}

/// `linux.personality` → the `personality(2)` persona: the domain and its flags.
fn personality_from(p: &oci_spec::runtime::LinuxPersonality) -> Result<u64, ConfigError> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let domain = match p.domain() {
        D::PerLinux => 0x0000,
        D::PerLinux32 => 0x0008,
    };
    p.flags().iter().flatten().try_fold(domain, |persona, flag| {
        let bit = match flag.as_str() {
            "UNAME26" => 0x002_0000,
            "ADDR_NO_RANDOMIZE" => 0x004_0000,
            "FDPIC_FUNCPTRS" => 0x008_0000,
            "MMAP_PAGE_ZERO" => 0x010_0000,
            "ADDR_COMPAT_LAYOUT" => 0x020_0000,
            "READ_IMPLIES_EXEC" => 0x040_0000,
            "ADDR_LIMIT_32BIT" => 0x080_0000,
            "SHORT_INODE" => 0x100_0000,
            "WHOLE_SECONDS" => 0x200_0000,
            "STICKY_TIMEOUTS" => 0x400_0000,
            "ADDR_LIMIT_3GB" => 0x800_0000,
            other => {
                return Err(invalid("linux.personality.flags", format!("unknown flag {other:?}")));
            }
        };
        Ok(persona | bit)
    })
}

/// Everything needed to create the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerConfig {
    /// Container id.
    pub id: String,
    /// Bundle directory (anchors relative paths).
    pub bundle: PathBuf,
    /// Root filesystem.
    pub rootfs: RootfsSource,
    /// Read-only root.
    pub readonly_root: bool,
    /// Hostname.
    pub hostname: Option<String>,
    /// NIS domain name (`domainname`), set with the hostname.
    #[serde(default)]
    pub domainname: Option<String>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// The new user namespace's id maps, when one is created.
    #[serde(default)]
    pub user_namespace: Option<UserNamespace>,
    /// Mounts in order.
    pub mounts: Vec<MountSpec>,
    /// Masked paths.
    pub masked_paths: Vec<String>,
    /// Read-only paths.
    pub readonly_paths: Vec<String>,
    /// Device nodes.
    pub devices: Vec<DeviceNode>,
    /// Propagation of `/` in the container's mount namespace (as mount flags bits).
    pub rootfs_propagation: u64,
    /// The process.
    pub process: ProcessConfig,
    /// cgroup path relative to the hierarchy root.
    pub cgroup_path: String,
    /// Resource limits.
    pub resources: Resources,
    /// Kernel parameters (`net.ipv4.ip_local_port_range` → value), each in a namespace of the
    /// container's own; written under `/proc/sys` before the read-only paths are remounted.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// OCI hooks.
    #[serde(default)]
    pub hooks: crate::runtime::hooks::Hooks,
    /// The spec's annotations (part of the state hooks read).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The execution domain (`personality(2)`), set just before the process runs.
    #[serde(default)]
    pub personality: Option<u64>,
    /// The NUMA memory policy (`set_mempolicy(2)`), inherited by the process.
    #[serde(default)]
    pub memory_policy: Option<MemoryPolicy>,
    /// A new time namespace's clock offsets, as `/proc/self/timens_offsets` takes them
    /// (`monotonic 86400 0`).
    #[serde(default)]
    pub time_offsets: Vec<String>,
    /// Network devices moved into the container's network namespace at create.
    #[serde(default)]
    pub net_devices: Vec<crate::runtime::netdev::NetDevice>,
}

impl ContainerConfig {
    /// Whether a namespace of this kind is created new (not joined, not shared with the host).
    pub fn creates(&self, kind: NamespaceKind) -> bool {
        self.namespaces.iter().any(|n| n.kind == kind && n.path.is_none())
    }

    /// The clone flags for namespaces created at clone time (cgroup ns is unshared later by
    /// init, the time namespace before the clone by the monitor: `clone` cannot take its flag).
    pub fn clone_flags(&self) -> libc::c_int {
        self.namespaces
            .iter()
            .filter(|n| n.path.is_none() && !matches!(n.kind, NamespaceKind::Cgroup | NamespaceKind::Time))
            .fold(0, |f, n| f | n.kind.flag())
    }
}

/// Default device cgroup rules (runc's): deny all, allow mknod, the standard nodes, pts, ptmx.
pub fn default_device_rules() -> Vec<(bool, String)> {
    let mut rules = vec![(false, "a".to_string()), (true, "c *:* m".into()), (true, "b *:* m".into())];
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, u32::MAX)] {
        let minor = if minor == u32::MAX { "*".to_string() } else { minor.to_string() };
        rules.push((true, format!("c {major}:{minor} rwm")));
    }
    rules
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

/// Validates an id: letters, digits, `-`, `_`, `.`; not empty, not starting with a dot.
pub fn validate_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(invalid("id", format!("{id:?} must be [A-Za-z0-9_.-]+"))) }
}

/// `ociVersion` must be a 1.x.y version (SemVer, pre-release or build suffix allowed).
fn check_oci_version(version: &str) -> Result<(), ConfigError> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts[0] == "1" && parts.iter().all(numeric) {
        Ok(())
    } else {
        Err(invalid("ociVersion", format!("{version:?} is not a version 1.x.y of the runtime spec")))
    }
}

/// Builds the plan from a spec. `rootfs` overrides the spec's `root.path` (image layers).
/// `cgroup_parent` is used when the spec has no `cgroupsPath` (`<parent>/<id>`).
pub fn from_spec(
    id: &str,
    bundle: &Path,
    spec: &Spec,
    rootfs: Option<RootfsSource>,
    cgroup_parent: &str,
) -> Result<ContainerConfig, ConfigError> {
    validate_id(id)?;
    check_oci_version(spec.version())?;
    if let Some((field, reason)) =
        crate::runtime::fields::first_unsupported(spec, crate::runtime::fields::HostFeatures::detect)
    {
        return Err(ConfigError::Unsupported { field, reason });
    }
    let process = spec.process().as_ref().ok_or(ConfigError::Missing("process"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(ConfigError::Missing("process.args"));
    }
    let root = spec.root().as_ref();
    let rootfs = match rootfs {
        Some(r) => r,
        None => {
            let path = root.map(|r| r.path().clone()).ok_or(ConfigError::Missing("root.path"))?;
            let path = if path.is_absolute() { path } else { bundle.join(path) };
            if !path.is_dir() {
                return Err(ConfigError::MissingRootfs(path));
            }
            RootfsSource::Dir(path)
        }
    };
    let linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = Vec::new();
    for ns in linux.namespaces().iter().flatten() {
        let kind = match ns.typ() {
            LinuxNamespaceType::Pid => NamespaceKind::Pid,
            LinuxNamespaceType::Network => NamespaceKind::Net,
            LinuxNamespaceType::Mount => NamespaceKind::Mount,
            LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
            LinuxNamespaceType::Uts => NamespaceKind::Uts,
            LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
            LinuxNamespaceType::User => NamespaceKind::User,
            LinuxNamespaceType::Time => NamespaceKind::Time,
        };
        if kind == NamespaceKind::User && ns.path().is_some() {
            return Err(invalid("linux.namespaces", "joining an existing user namespace is not supported"));
        }
        namespaces.push(Namespace { kind, path: ns.path().clone() });
    }
    for (i, ns) in namespaces.iter().enumerate() {
        if namespaces[..i].iter().any(|n| n.kind == ns.kind) {
            return Err(invalid("linux.namespaces", format!("{} is listed twice", ns.kind.proc_name())));
        }
    }
    if namespaces.iter().any(|n| n.kind == NamespaceKind::Mount && n.path.is_some()) {
        return Err(invalid("linux.namespaces", "joining an existing mount namespace is not supported"));
    }
    let new_mount_ns = namespaces.iter().any(|n| n.kind == NamespaceKind::Mount);
    if !new_mount_ns {
        // As runc: without a mount namespace of its own, the container's mounts are made in the
        // caller's; what it cannot do there is refused.
        let masked = linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty());
        let readonly = linux.readonly_paths().as_ref().is_some_and(|p| !p.is_empty());
        if masked || readonly {
            return Err(invalid(
                if masked { "linux.maskedPaths" } else { "linux.readonlyPaths" },
                "unable to restrict paths without a private mount namespace",
            ));
        }
        if matches!(rootfs, RootfsSource::Overlay { .. }) {
            return Err(invalid("linux.namespaces", "an image rootfs needs a new mount namespace"));
        }
    }
    let new_uts_ns = namespaces.iter().any(|n| n.kind == NamespaceKind::Uts && n.path.is_none());
    if !new_uts_ns {
        if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(invalid("hostname", "unable to set the hostname without a private UTS namespace"));
        }
        if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(invalid(
                "domainname",
                "unable to set the domainname without a private UTS namespace",
            ));
        }
    }
    let io_priority = process.io_priority().as_ref().map(io_priority_from).transpose()?;
    let scheduler = process.scheduler().as_ref().map(scheduling_from).transpose()?;
    let cpu_affinity = process
        .exec_cpu_affinity()
        .as_ref()
        .map(|a| cpu_affinity_from(a, "process.execCPUAffinity"))
        .transpose()?;
    let personality = linux.personality().as_ref().map(personality_from).transpose()?;
    let memory_policy = linux.memory_policy().as_ref().map(memory_policy_from).transpose()?;
    let time_offsets = time_offsets_from(linux.time_offsets().as_ref(), &namespaces)?;
    let net_devices = crate::runtime::netdev::from_spec(linux.net_devices().as_ref(), &namespaces)?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let user_namespace = user_namespace_from(&linux, &namespaces, &annotations)?;
    let mounts = mounts_from(spec)?;
    let mut devices = default_devices();
    for d in linux.devices().iter().flatten() {
        use oci_spec::runtime::LinuxDeviceType as T;
        let kind = match d.typ() {
            T::B => 'b',
            T::P => 'p',
            _ => 'c',
        };
        devices.retain(|x| x.path != *d.path());
        devices.push(DeviceNode {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid(),
            gid: d.gid(),
        });
    }
    let caps = match process.capabilities() {
        Some(c) => CapPlan::from_oci(c)?,
        None => CapPlan::default(),
    };
    let seccomp = match (linux.seccomp(), annotations.get(SECCOMP_ANNOTATION).map(String::as_str)) {
        (Some(s), _) => Some(seccomp::from_oci(s)?),
        (None, Some("runtime/default")) => {
            Some(seccomp::default_profile(&caps.bounding.iter().cloned().collect::<BTreeSet<_>>()))
        }
        (None, Some("unconfined")) | (None, None) => None,
        (None, Some(other)) => {
            return Err(invalid("annotations", format!("unknown seccomp profile {other:?}")));
        }
    };
    let user = process.user();
    let (user_string, group_file) = match annotations.get(USER_ANNOTATION) {
        Some(named) => {
            if let Some((uid, gid)) = named.split_once(':')
                && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
            {
                check_user_is_mapped(user_namespace.as_ref(), uid, gid)?;
            }
            (named.clone(), true)
        }
        None => {
            check_user_is_mapped(user_namespace.as_ref(), user.uid(), user.gid())?;
            (format!("{}:{}", user.uid(), user.gid()), false)
        }
    };
    let mut rlimits: Vec<Rlimit> = Vec::new();
    for r in process.rlimits().iter().flatten() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if rlimits.iter().any(|l| l.name == name) {
            return Err(invalid("process.rlimits", format!("{name} is given twice")));
        }
        if r.soft() > r.hard() {
            return Err(invalid("process.rlimits", format!("{name}: soft limit above the hard limit")));
        }
        rlimits.push(Rlimit { name, soft: r.soft(), hard: r.hard() });
    }
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    for (i, gid) in additional_gids.iter().enumerate() {
        if additional_gids[..i].contains(gid) {
            return Err(invalid("process.user.additionalGids", format!("gid {gid} is listed twice")));
        }
    }
    if let Some(adj) = process.oom_score_adj()
        && !(-1000..=1000).contains(&adj)
    {
        return Err(invalid("process.oomScoreAdj", format!("{adj} is outside -1000..1000")));
    }
    let mut resources = linux.resources().as_ref().map(Resources::from_oci).unwrap_or_default();
    for (size, _) in &resources.hugepage_limits {
        if !crate::runtime::cgroup::valid_page_size(size) {
            return Err(invalid(
                "linux.resources.hugepageLimits",
                format!("page size {size:?} is not <size>KB, <size>MB or <size>GB"),
            ));
        }
    }
    // As runc does: the spec's rules, then the default nodes are always allowed.
    let defaults = default_device_rules();
    if resources.devices.is_empty() {
        resources.devices = defaults;
    } else {
        resources.devices.extend(defaults.into_iter().filter(|(allow, _)| *allow));
    }
    let cgroup_path = match linux.cgroups_path() {
        Some(p) => p.display().to_string().trim_start_matches('/').to_string(),
        None => format!("{}/{id}", cgroup_parent.trim_matches('/')),
    };
    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("rslave") | Some("slave") => MsFlags::MS_SLAVE,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE,
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE,
        Some(other) => return Err(invalid("linux.rootfsPropagation", other.to_string())),
    }
    .bits();
    let sysctls = sysctls_from(linux.sysctl().as_ref(), &namespaces)?;
    Ok(ContainerConfig {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        rootfs,
        readonly_root: root.and_then(|r| r.readonly()).unwrap_or(false),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        namespaces,
        user_namespace,
        mounts,
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        devices,
        rootfs_propagation,
        process: ProcessConfig {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().clone(),
            user: UserSpec { user: user_string, additional_gids, group_file },
            caps,
            rlimits,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            seccomp,
            umask: user.umask().unwrap_or(0o022),
            oom_score_adj: process.oom_score_adj(),
            apparmor_profile: process.apparmor_profile().clone().filter(|s| !s.is_empty()),
            selinux_label: process.selinux_label().clone().filter(|s| !s.is_empty()),
            io_priority,
            scheduler,
            cpu_affinity,
        },
        cgroup_path,
        resources,
        sysctls,
        hooks: crate::runtime::hooks::from_oci(spec.hooks().as_ref())?,
        annotations: annotations.into_iter().collect(),
        personality,
        memory_policy,
        time_offsets,
        net_devices,
    })
}

/// The spec's mounts, each with its options checked (an unknown option is refused by name).
fn mounts_from(spec: &Spec) -> Result<Vec<MountSpec>, ConfigError> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(invalid(
                "mounts",
                format!(
                    "{}: uidMappings/gidMappings (id-mapped mounts) are not supported",
                    m.destination().display()
                ),
            ));
        }
        let mount = MountSpec {
            destination: m.destination().clone(),
            typ: m.typ().clone().unwrap_or_else(|| "bind".into()),
            source: m.source().clone(),
            options: m.options().clone().unwrap_or_default(),
        };
        crate::runtime::mounts::parse_options(&mount.options, &mount.typ)
            .map_err(|e| invalid("mounts", format!("{}: {e}", mount.destination.display())))?;
        out.push(mount);
    }
    Ok(out)
}

/// Checks `linux.sysctl` as runc does: each key must belong to a namespace the container has
/// apart from the caller's (`net.*`: a network namespace; `kernel.msg*`, `kernel.sem`,
/// `kernel.shm*`, `fs.mqueue.*`: IPC; `kernel.hostname`/`kernel.domainname`: a new UTS namespace).
fn sysctls_from(
    sysctl: Option<&std::collections::HashMap<String, String>>,
    namespaces: &[Namespace],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let has = |kind: NamespaceKind| namespaces.iter().any(|n| n.kind == kind);
    let mut out = BTreeMap::new();
    for (key, value) in sysctl.into_iter().flatten() {
        let key = key.replace('/', ".");
        let ipc = key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("kernel.shm")
            || key.starts_with("fs.mqueue.");
        let ok = if key.starts_with("net.") {
            has(NamespaceKind::Net)
        } else if ipc {
            has(NamespaceKind::Ipc)
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            namespaces.iter().any(|n| n.kind == NamespaceKind::Uts && n.path.is_none())
        } else {
            false
        };
        if !ok || key.split('.').any(|part| part.is_empty() || part == "..") {
            return Err(invalid(
                "linux.sysctl",
                format!("sysctl {key:?} is not in a separate kernel namespace"),
            ));
        }
        out.insert(key, value.clone());
    }
    Ok(out)
}

/// The id maps of a new user namespace (`None` without one); validated.
fn user_namespace_from(
    linux: &oci_spec::runtime::Linux,
    namespaces: &[Namespace],
    annotations: &std::collections::HashMap<String, String>,
) -> Result<Option<UserNamespace>, ConfigError> {
    let convert = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
        maps.iter()
            .flatten()
            .map(|m| IdMap { container_id: m.container_id(), host_id: m.host_id(), size: m.size() })
            .collect()
    };
    let uid_map = convert(linux.uid_mappings());
    let gid_map = convert(linux.gid_mappings());
    if !namespaces.iter().any(|n| n.kind == NamespaceKind::User) {
        if !uid_map.is_empty() || !gid_map.is_empty() {
            return Err(invalid(
                "linux.uidMappings",
                "id mappings need a user namespace in linux.namespaces",
            ));
        }
        return Ok(None);
    }
    validate_id_map("linux.uidMappings", &uid_map)?;
    validate_id_map("linux.gidMappings", &gid_map)?;
    let deny_setgroups = match annotations.get(SETGROUPS_ANNOTATION).map(String::as_str) {
        None | Some("allow") => false,
        Some("deny") => true,
        Some(other) => {
            return Err(invalid(
                "annotations",
                format!("{SETGROUPS_ANNOTATION} must be allow or deny, not {other:?}"),
            ));
        }
    };
    Ok(Some(UserNamespace { uid_map, gid_map, deny_setgroups }))
}

/// With a user namespace, the numeric process user must be mapped (setresuid would fail).
fn check_user_is_mapped(userns: Option<&UserNamespace>, uid: u32, gid: u32) -> Result<(), ConfigError> {
    let Some(userns) = userns else { return Ok(()) };
    if userns.host_uid(uid).is_none() {
        return Err(invalid("process.user.uid", format!("{uid} is not mapped by linux.uidMappings")));
    }
    if userns.host_gid(gid).is_none() {
        return Err(invalid("process.user.gid", format!("{gid} is not mapped by linux.gidMappings")));
    }
    Ok(())
}

/// Finds `program` in the `PATH` of `env` (or the default PATH) below `root` (a host path of the
/// container root). Returns the path as seen inside the container.
pub fn find_executable(program: &str, env: &[String], exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(program)).find(|p| exists(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(rootfs: &Path) -> Spec {
        let mut spec = Spec::default();
        spec.set_root(Some(oci_spec::runtime::RootBuilder::default().path(rootfs).build().unwrap()));
        spec
    }

    #[test]
    fn builds_plan_from_default_spec() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = from_spec("c1", dir.path(), &spec_with(dir.path()), None, "rkube").unwrap();
        assert_eq!(cfg.cgroup_path, "rkube/c1");
        assert!(cfg.creates(NamespaceKind::Pid) && cfg.creates(NamespaceKind::Mount));
        assert_ne!(cfg.clone_flags() & libc::CLONE_NEWNS, 0);
        assert!(cfg.masked_paths.iter().any(|p| p == "/proc/kcore"));
        assert_eq!(cfg.resources.devices[0], (false, "a".to_string()));
        assert!(cfg.process.seccomp.is_none());
        assert_eq!(cfg.process.user.user, "0:0");
    }

    #[test]
    fn rejects_bad_specs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = from_spec("c1", dir.path(), &spec_with(&missing), None, "rkube").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(from_spec("../x", dir.path(), &spec_with(dir.path()), None, "rkube").is_err());
        let mut spec = spec_with(dir.path());
        spec.set_annotations(Some([(SECCOMP_ANNOTATION.to_string(), "weird".to_string())].into()));
        assert!(from_spec("c1", dir.path(), &spec, None, "rkube").is_err());
    }

    #[test]
    fn joins_a_pid_namespace_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(dir.path());
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        for ns in namespaces.iter_mut().filter(|n| n.typ() == LinuxNamespaceType::Pid) {
            ns.set_path(Some("/proc/42/ns/pid".into()));
        }
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        let cfg = from_spec("c1", dir.path(), &spec, None, "rkube").unwrap();
        assert!(!cfg.creates(NamespaceKind::Pid));
        assert_eq!(cfg.clone_flags() & libc::CLONE_NEWPID, 0, "joined, not created at clone");
        let pid = cfg.namespaces.iter().find(|n| n.kind == NamespaceKind::Pid).unwrap();
        assert_eq!(pid.path.as_deref(), Some(Path::new("/proc/42/ns/pid")));
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let ns = |kinds: &[NamespaceKind]| -> Vec<Namespace> {
            kinds.iter().map(|k| Namespace { kind: *k, path: None }).collect()
        };
        let map = |k: &str| std::collections::HashMap::from([(k.to_string(), "1".to_string())]);
        let all = ns(&[NamespaceKind::Net, NamespaceKind::Ipc, NamespaceKind::Uts]);
        for key in [
            "net.ipv4.ip_local_port_range",
            "net/ipv4/tcp_syncookies",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
        ] {
            let out = sysctls_from(Some(&map(key)), &all).unwrap();
            assert_eq!(out.keys().next().unwrap(), &key.replace('/', "."));
        }
        for (key, namespaces) in [
            ("net.ipv4.ip_forward", ns(&[NamespaceKind::Ipc])),
            ("kernel.shmmax", ns(&[NamespaceKind::Net])),
            ("kernel.panic", all.clone()),
            ("vm.overcommit_memory", all.clone()),
            ("net..x", all.clone()),
        ] {
            let err = sysctls_from(Some(&map(key)), &namespaces).unwrap_err().to_string();
            assert!(err.contains("is not in a separate kernel namespace"), "{key}: {err}");
        }
    }

    #[test]
    fn default_seccomp_via_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(dir.path());
        spec.set_annotations(Some([(SECCOMP_ANNOTATION.to_string(), "runtime/default".to_string())].into()));
        let cfg = from_spec("c1", dir.path(), &spec, None, "rkube").unwrap();
        assert!(cfg.process.seccomp.is_some());
    }

    fn userns_spec(dir: &Path, uid_map: serde_json::Value, gid_map: serde_json::Value) -> Spec {
        let mut value = serde_json::to_value(spec_with(dir)).unwrap();
        value["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "user"}));
        value["linux"]["uidMappings"] = uid_map;
        value["linux"]["gidMappings"] = gid_map;
        serde_json::from_value(value).unwrap()
    }

    fn one_range() -> serde_json::Value {
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}])
    }

    #[test]
    fn user_namespace_with_maps() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = from_spec("c1", dir.path(), &userns_spec(dir.path(), one_range(), one_range()), None, "r")
            .unwrap();
        assert!(cfg.creates(NamespaceKind::User));
        assert_ne!(cfg.clone_flags() & libc::CLONE_NEWUSER, 0);
        let userns = cfg.user_namespace.unwrap();
        assert_eq!(userns.host_uid(0), Some(200000));
        assert_eq!(userns.host_gid(65535), Some(265535));
        assert_eq!(userns.host_uid(65536), None);
        assert!(!userns.deny_setgroups);
        assert_eq!(id_map_text(&userns.uid_map), "0 200000 65536\n");
    }

    #[test]
    fn user_namespace_needs_both_maps() {
        let dir = tempfile::tempdir().unwrap();
        let spec = userns_spec(dir.path(), one_range(), serde_json::json!([]));
        let err = from_spec("c1", dir.path(), &spec, None, "r").unwrap_err().to_string();
        assert_eq!(err, "config: linux.gidMappings: required with a new user namespace");
        let spec = userns_spec(dir.path(), serde_json::Value::Null, one_range());
        let err = from_spec("c1", dir.path(), &spec, None, "r").unwrap_err().to_string();
        assert!(err.contains("linux.uidMappings"), "{err}");
    }

    #[test]
    fn maps_without_user_namespace_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut value = serde_json::to_value(spec_with(dir.path())).unwrap();
        value["linux"]["uidMappings"] = one_range();
        let spec: Spec = serde_json::from_value(value).unwrap();
        let err = from_spec("c1", dir.path(), &spec, None, "r").unwrap_err().to_string();
        assert!(err.contains("need a user namespace"), "{err}");
    }

    #[test]
    fn unmapped_process_user_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let small = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 1}]);
        let mut value = serde_json::to_value(userns_spec(dir.path(), small, one_range())).unwrap();
        value["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 0});
        let spec: Spec = serde_json::from_value(value).unwrap();
        let err = from_spec("c1", dir.path(), &spec, None, "r").unwrap_err().to_string();
        assert!(err.contains("process.user.uid: 1000 is not mapped"), "{err}");
    }

    #[test]
    fn id_map_validation_names_the_problem() {
        let map = |lines: &[(u32, u32, u32)]| -> Vec<IdMap> {
            lines.iter().map(|&(c, h, s)| IdMap { container_id: c, host_id: h, size: s }).collect()
        };
        let check = |lines: &[(u32, u32, u32)]| validate_id_map("linux.uidMappings", &map(lines));
        assert!(check(&[(0, 200000, 65536), (65536, 100, 1)]).is_ok());
        assert!(check(&[]).unwrap_err().to_string().contains("required"));
        assert!(check(&[(0, 1, 0)]).unwrap_err().to_string().contains("size must be greater than 0"));
        let err = check(&[(0, 200000, 100), (99, 300000, 5)]).unwrap_err().to_string();
        assert!(err.contains("line 1: container ids overlap line 0"), "{err}");
        let err = check(&[(0, 200000, 100), (100, 200050, 5)]).unwrap_err().to_string();
        assert!(err.contains("host ids overlap"), "{err}");
        assert!(check(&[(u32::MAX, 1, 2)]).unwrap_err().to_string().contains("past the largest id"));
        let many: Vec<(u32, u32, u32)> = (0..341).map(|i| (i, 1000 + i, 1)).collect();
        assert!(check(&many).unwrap_err().to_string().contains("at most 340"));
        assert!(check(&many[..340]).is_ok());
    }

    #[test]
    fn setgroups_annotation_and_joined_user_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = userns_spec(dir.path(), one_range(), one_range());
        spec.set_annotations(Some([(SETGROUPS_ANNOTATION.to_string(), "deny".to_string())].into()));
        let cfg = from_spec("c1", dir.path(), &spec, None, "r").unwrap();
        assert!(cfg.user_namespace.unwrap().deny_setgroups);
        let mut value = serde_json::to_value(spec_with(dir.path())).unwrap();
        value["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user", "path": "/proc/1/ns/user"}));
        let spec: Spec = serde_json::from_value(value).unwrap();
        let err = from_spec("c1", dir.path(), &spec, None, "r").unwrap_err().to_string();
        assert!(err.contains("joining an existing user namespace"), "{err}");
    }

    #[test]
    fn memory_policy_and_personality_become_syscall_arguments() {
        let policy = |json: serde_json::Value| memory_policy_from(&serde_json::from_value(json).unwrap());
        let p = policy(serde_json::json!({"mode": "MPOL_BIND", "nodes": "0-2,64, 70",
            "flags": ["MPOL_F_STATIC_NODES"]}))
        .unwrap();
        assert_eq!(p, MemoryPolicy { mode: 2 | 1 << 15, nodes: vec![0b111, 1 | 1 << 6] });
        let p = policy(serde_json::json!({"mode": "MPOL_PREFERRED", "nodes": ""})).unwrap();
        assert_eq!(p, MemoryPolicy { mode: 1, nodes: vec![] }, "preferred without nodes: local");
        assert_eq!(policy(serde_json::json!({"mode": "MPOL_DEFAULT"})).unwrap(), MemoryPolicy::default());
        for (bad, field) in [
            (serde_json::json!({"mode": "MPOL_LOCAL", "nodes": "1"}), "linux.memoryPolicy"),
            (serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "3-1"}), "linux.memoryPolicy.nodes"),
            (serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "1024"}), "linux.memoryPolicy.nodes"),
            (serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "x"}), "linux.memoryPolicy.nodes"),
        ] {
            let err = policy(bad.clone()).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { field: f, .. } if f == field), "{bad}: {err}");
        }
        let persona = |json: serde_json::Value| personality_from(&serde_json::from_value(json).unwrap());
        assert_eq!(persona(serde_json::json!({"domain": "LINUX"})).unwrap(), 0);
        assert_eq!(
            persona(serde_json::json!({"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]})).unwrap(),
            0x8 | 0x40000
        );
        assert!(persona(serde_json::json!({"domain": "LINUX", "flags": ["NOPE"]})).is_err());
    }

    #[test]
    fn oci_version_must_be_1_x_y() {
        for good in ["1.0.0", "1.0.2-dev", "1.2.1", "1.1.0-rc.1+build"] {
            assert!(check_oci_version(good).is_ok(), "{good}");
        }
        for bad in ["invalid", "", "2.0.0", "1.0", "1.x.0", "1.0.0.0"] {
            assert!(check_oci_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_executables_on_path() {
        let env = vec!["PATH=/bin:/usr/bin".to_string()];
        let found = find_executable("sh", &env, |p| p == Path::new("/usr/bin/sh"));
        assert_eq!(found, Some(PathBuf::from("/usr/bin/sh")));
        assert_eq!(find_executable("/x/y", &env, |_| false), Some(PathBuf::from("/x/y")));
        assert_eq!(find_executable("nope", &env, |_| false), None);
    }
}
