//! The container's init process: runs in the new namespaces right after clone, builds the root
//! filesystem, drops privileges, reports readiness, waits for `start`, then execs the program.
//!
//! Order (after the reference's rules): dumpable off → join/enter namespaces →
//! hostname → rootfs, mounts, devices → resolve user and executable → pivot_root → masked and
//! read-only paths → rlimits → seccomp first when no_new_privs is off → bounding set → setgroups,
//! setgid, setuid → capability sets → chdir + getcwd check → fds ≥ 3 close-on-exec → no_new_privs
//! and seccomp last → wait until the monitor has moved us into the cgroups (earlier, before
//! pivot_root, when a cgroup namespace is created) → ready → wait for start → execve. With a new user namespace, init first
//! waits for the monitor to write its id maps and becomes uid/gid 0 inside (the namespaces given
//! by path were joined by the monitor before the clone).

use std::convert::Infallible;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::runtime::caps::{self, CapsError};
use crate::runtime::config::{ContainerConfig, NamespaceKind, ProcessConfig, find_executable};
use crate::runtime::fsutil::{open_in_root, read_in_root};
use crate::runtime::rlimits::{self, RlimitError};
use crate::runtime::rootfs::{self, RootfsError};
use crate::runtime::seccomp::{self, CompiledFilter, SeccompError};
use crate::runtime::user::{self, Identity, UserError};

/// Errors in the init process; sent to the creator as one line.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A step failed.
    #[error("{step}: {source}")]
    Step {
        /// What was being done.
        step: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Root filesystem.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Capabilities.
    #[error(transparent)]
    Caps(#[from] CapsError),
    /// Seccomp.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// rlimits.
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    /// User lookup.
    #[error(transparent)]
    User(#[from] UserError),
    /// Terminal setup.
    #[error(transparent)]
    Tty(#[from] crate::runtime::tty::TtyError),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] crate::runtime::hooks::HookError),
    /// The program is not in the container.
    #[error("exec {0:?}: executable file not found in the container's $PATH")]
    NotFound(String),
}

fn step<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> InitError {
    let step = what.into();
    move |e| InitError::Step { step, source: e.into() }
}

/// Channels between the creator and init.
#[derive(Debug)]
pub struct InitChannels {
    /// Write end of the sync pipe (`R` = ready, `E<msg>` = failure).
    pub sync: OwnedFd,
    /// O_PATH fd of `exec.fifo`, opened for writing (blocking) to wait for start.
    pub fifo: OwnedFd,
    /// Replacement stdin/stdout/stderr (log pipes), or inherit.
    pub stdio: Option<[OwnedFd; 3]>,
    /// Read-only clone of `rkube-monitor` (see [`exec_sealed`]); `None` execs the program directly
    /// (the caller then runs from a sealed binary itself).
    pub trampoline: Option<OwnedFd>,
    /// Read end of a pipe on which the monitor sends one byte once it has moved init into the
    /// container's cgroups (done in parallel with the rootfs setup: cgroup v1 migrations are slow).
    pub cgroup_joined: OwnedFd,
    /// Where to send the master of a new terminal (`process.terminal`), if any.
    pub console: Option<crate::runtime::tty::Console>,
    /// With `prestart`/`createRuntime` hooks or a notifying seccomp profile: read end of the pipe
    /// on which the creator sends `1` once the hooks ran (init asks with `H` on the sync pipe after
    /// its mounts) and once the agent has the listener (init reports it with `N<fd>`).
    pub resume: Option<OwnedFd>,
}

/// Everything init needs besides the config.
#[derive(Debug)]
pub struct InitPlan<'a> {
    /// The container.
    pub config: &'a ContainerConfig,
    /// Host dirs of the container's cgroups, for `/sys/fs/cgroup`.
    pub cgroup_mounts: Vec<(String, PathBuf)>,
    /// With a user namespace: detached id-mapped mounts of the overlay's lower layers.
    pub idmapped_layers: Vec<OwnedFd>,
    /// The caller's descriptors the process inherits (`--preserve-fds`).
    pub preserved_fds: &'a [RawFd],
}

/// Runs init; never returns. Failures before readiness go to the sync pipe.
pub fn run(plan: InitPlan<'_>, channels: InitChannels) -> ! {
    let InitChannels { sync, fifo, stdio, trampoline, cgroup_joined, console, resume } = channels;
    let mut sync = Some(std::fs::File::from(sync));
    let gates = Gates { fifo, cgroup_joined, resume };
    let result = setup_and_exec(&plan, gates, stdio, trampoline, console, &mut sync);
    let Err(err) = result;
    let line = format!("E{}\n", err.to_string().replace('\n', " "));
    match sync.as_mut() {
        Some(pipe) => {
            let _ = pipe.write_all(line.as_bytes());
        }
        None => {
            // A raw write: the creator's stderr lock may have been held by another of its threads
            // at the fork.
            let _ = nix::unistd::write(std::io::stderr(), &line.as_bytes()[1..]);
        }
    }
    crate::sys::container::exit_now(if sync.is_some() { 1 } else { 127 })
}

/// The rootfs bind a container without its own mount namespace made in the caller's: detached
/// on drop unless disarmed (init failed before it was ready).
struct HostRoot(Option<PathBuf>);

impl Drop for HostRoot {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// What init waits on: `start` (the exec fifo), its cgroup move, the creator (hooks, seccomp agent).
struct Gates {
    fifo: OwnedFd,
    cgroup_joined: OwnedFd,
    resume: Option<OwnedFd>,
}

fn setup_and_exec(
    plan: &InitPlan<'_>,
    gates: Gates,
    stdio: Option<[OwnedFd; 3]>,
    trampoline: Option<OwnedFd>,
    console: Option<crate::runtime::tty::Console>,
    sync: &mut Option<std::fs::File>,
) -> Result<Infallible, InitError> {
    let Gates { fifo, cgroup_joined, resume } = gates;
    let config = plan.config;
    let affinity = config.process.cpu_affinity.as_ref();
    set_cpu_affinity(affinity.and_then(|a| a.initial.as_deref()))?;
    nix::sys::prctl::set_dumpable(false).map_err(step("disable dumpable"))?;
    if let Some([stdin, stdout, stderr]) = stdio {
        nix::unistd::dup2_stdin(stdin.as_fd()).map_err(step("redirect stdin"))?;
        nix::unistd::dup2_stdout(stdout.as_fd()).map_err(step("redirect stdout"))?;
        nix::unistd::dup2_stderr(stderr.as_fd()).map_err(step("redirect stderr"))?;
    }
    let userns = config.user_namespace.is_some();
    if userns {
        // The monitor joined the namespaces given by path before the clone.
        become_root_in_userns(&cgroup_joined)?;
    } else {
        join_namespaces(config)?;
    }
    if config.creates(NamespaceKind::Uts) {
        if let Some(h) = &config.hostname {
            nix::unistd::sethostname(h).map_err(step("set hostname"))?;
        }
        if let Some(d) = &config.domainname {
            crate::sys::container::set_domainname(d).map_err(step("set domainname"))?;
        }
    }
    nix::unistd::setsid().map_err(step("setsid"))?;

    let propagation = MsFlags::from_bits_truncate(config.rootfs_propagation as libc::c_ulong);
    let own_mount_ns = config.creates(NamespaceKind::Mount);
    let (root, root_path) =
        rootfs::prepare_root(&config.rootfs, propagation, userns, &plan.idmapped_layers, own_mount_ns)?;
    // In the caller's mount namespace, a failure before ready takes our mounts away again.
    let host_root = (!own_mount_ns).then(|| HostRoot(Some(root_path)));
    nix::sys::stat::umask(Mode::empty());
    rootfs::mount_all(root.as_fd(), &config.mounts, &config.bundle, &plan.cgroup_mounts)?;
    rootfs::create_devices(root.as_fd(), &config.devices, userns)?;
    if config.hooks.runtime_hooks_at_create() {
        // prestart and createRuntime run in the creator, in the runtime's namespaces.
        ask_creator(sync, resume.as_ref(), "H".into(), "wait for the createRuntime hooks")?;
    }
    if !config.hooks.create_container.is_empty() {
        let state = hook_state(config, "creating");
        crate::runtime::hooks::run_all_with_env(
            "createContainer",
            &config.hooks.create_container,
            &state,
            &config.process.env,
        )?;
    }
    let identity = resolve_identity(root.as_fd(), &config.process)?;
    let exe = find_executable(&config.process.args[0], &config.process.env, |p| {
        open_in_root(root.as_fd(), p, OFlag::O_PATH).is_ok()
    })
    .ok_or_else(|| InitError::NotFound(config.process.args[0].clone()))?;
    let seccomp = config.process.seccomp.as_ref().map(seccomp::compile).transpose()?;
    // The monitor's cgroup move waits for an RCU grace period (milliseconds on v1): wait for it
    // as late as possible — before readiness, or here when a cgroup namespace must be rooted in it.
    let mut cgroup_joined = Some(cgroup_joined);
    if config.creates(NamespaceKind::Cgroup) {
        wait_for_cgroup(cgroup_joined.take())?;
        // After joining, so the container's cgroup becomes the namespace's root.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(step("create cgroup namespace"))?;
    }
    if own_mount_ns {
        rootfs::pivot(root.as_fd())?;
    } else {
        rootfs::chroot_into(root.as_fd())?;
    }
    drop(root);
    let mut host_root = host_root;
    if let Some(bind) = host_root.as_mut() {
        // Inside the chroot its path is `/`.
        bind.0 = Some(PathBuf::from("/"));
    }
    if let Some(console) = console {
        // After pivot_root, so /dev/ptmx is the container's devpts (runc's order).
        crate::runtime::tty::attach_new_terminal(&console, (identity.uid, identity.gid))?;
    }
    for (key, value) in &config.sysctls {
        std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), value)
            .map_err(step(format!("set sysctl {key}")))?;
    }
    rootfs::mask_paths(&config.masked_paths)?;
    rootfs::readonly_paths(&config.readonly_paths)?;
    if config.readonly_root {
        rootfs::readonly_root()?;
    }
    if own_mount_ns {
        // Last: nothing can be bound from an unbindable tree (masking binds /dev/null).
        rootfs::apply_root_propagation(propagation)?;
    }
    if let Some(adj) = config.process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(step("set oom_score_adj"))?;
    }
    apply_process_attributes(config)?;
    if let Some(after) = affinity.and_then(|a| a.after.as_deref()) {
        // Once in the cgroups (a cpuset there resets it), before a seccomp profile may forbid it.
        wait_for_cgroup(cgroup_joined.take())?;
        set_cpu_affinity(Some(after))?;
    }
    let mut hand_over = |listener: OwnedFd| -> Result<(), InitError> {
        // The creator copies it (pidfd_getfd) for the seccomp agent; until it says so, no call of
        // ours may be notified (it would wait for an agent without the listener). Then ours is
        // closed: a call notified while we still held it would wait on ourselves.
        let line = format!("N{}", listener.as_raw_fd());
        let answer = ask_creator(sync, resume.as_ref(), line, "hand the seccomp listener to the agent");
        drop(listener);
        answer
    };
    let Dropped { env } = drop_privileges(&config.process, &identity, seccomp.as_ref(), &mut hand_over)?;
    wait_for_cgroup(cgroup_joined)?;
    if let Some(mut host_root) = host_root {
        // Ready: from now on `delete` removes them.
        host_root.0 = None;
    }

    // Ready: tell the creator, then block until `start` opens the fifo.
    sync.as_mut().expect("sync pipe open").write_all(b"R\n").map_err(step("report ready"))?;
    *sync = None;
    let fifo_path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut gate = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(step("wait for start"))?;
    crate::sys::container::inherit_fds(plan.preserved_fds).map_err(step("pass the preserved fds on"))?;
    gate.write_all(b"0").map_err(step("acknowledge start"))?;
    drop(gate);
    drop(fifo);
    if !config.hooks.start_container.is_empty() {
        // After acknowledging, as runc: `start` goes on to the poststart hooks meanwhile, and a
        // failing hook stops the container (its error on the container's stderr), not `start`.
        let state = hook_state(config, "created");
        crate::runtime::hooks::run_all_with_env(
            "startContainer",
            &config.hooks.start_container,
            &state,
            &env,
        )?;
    }
    match trampoline {
        Some(trampoline) => exec_sealed(trampoline, &exe, &config.process.args, &env),
        None => exec(&exe, &config.process.args, &env),
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// The process attributes kept across `execve` and inherited by children: I/O priority,
/// scheduler, NUMA memory policy and execution domain. Init and exec's child both set them.
pub fn apply_process_attributes(config: &ContainerConfig) -> Result<(), InitError> {
    if let Some((class, level)) = config.process.io_priority {
        crate::sys::container::set_io_priority(class, level).map_err(step("set I/O priority"))?;
    }
    if let Some(s) = &config.process.scheduler {
        let attr = crate::sys::container::SchedAttr {
            policy: s.policy,
            flags: s.flags,
            nice: s.nice,
            priority: s.priority,
            runtime: s.runtime,
            deadline: s.deadline,
            period: s.period,
            ..Default::default()
        };
        crate::sys::container::set_scheduler(&attr).map_err(step("set the scheduler"))?;
    }
    if let Some(policy) = &config.memory_policy {
        crate::sys::container::set_mempolicy(policy.mode, &policy.nodes)
            .map_err(step("set the memory policy"))?;
    }
    if let Some(persona) = config.personality {
        crate::sys::container::set_personality(persona).map_err(step("set the personality"))?;
    }
    Ok(())
}

/// Sends `line` to the creator on the sync pipe and waits until it answers on the resume pipe
/// (which exists whenever the config makes init ask: hooks at create, a notifying profile).
fn ask_creator(
    sync: &mut Option<std::fs::File>,
    resume: Option<&OwnedFd>,
    line: String,
    what: &str,
) -> Result<(), InitError> {
    let fail = |source: std::io::Error| InitError::Step { step: what.to_string(), source };
    let sync = sync.as_mut().expect("sync pipe open");
    sync.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
    let mut byte = [0u8; 1];
    match resume.map(|r| nix::unistd::read(r.as_fd(), &mut byte)) {
        Some(Ok(1)) => Ok(()),
        _ => Err(fail(std::io::Error::other("the creator did not resume"))),
    }
}

/// `sched_setaffinity` of the calling thread to `cpus` (none: unchanged). Inherited by children
/// and kept across `execve`.
pub fn set_cpu_affinity(cpus: Option<&[u32]>) -> Result<(), InitError> {
    let Some(cpus) = cpus else { return Ok(()) };
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu as usize).map_err(step("set the CPU affinity"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(step("set the CPU affinity"))
}

/// The state a hook run by init reads: its pid as the container sees it.
fn hook_state(config: &ContainerConfig, status: &str) -> Vec<u8> {
    let pid = nix::unistd::getpid().as_raw();
    crate::runtime::hooks::state_json(&config.id, status, Some(pid), &config.bundle, &config.annotations)
}

/// Joins namespaces given by path (but the pid namespace: the monitor joined it before the
/// clone, as it only applies to children).
fn join_namespaces(config: &ContainerConfig) -> Result<(), InitError> {
    for ns in config.namespaces.iter().filter(|ns| ns.kind != NamespaceKind::Pid) {
        if let Some(path) = &ns.path {
            let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(step(format!("open namespace {}", path.display())))?;
            nix::sched::setns(fd, CloneFlags::from_bits_truncate(ns.kind.flag()))
                .map_err(step(format!("join namespace {}", path.display())))?;
        }
    }
    Ok(())
}

/// In a new user namespace: blocks until the monitor has written the id maps (`M` on the
/// cgroup pipe), then becomes root of the namespace (ids 0, full capabilities inside it).
fn become_root_in_userns(signal: &OwnedFd) -> Result<(), InitError> {
    let mut byte = [0u8; 1];
    match nix::unistd::read(signal.as_fd(), &mut byte) {
        Ok(1) if byte[0] == b'M' => {}
        Ok(_) => {
            return Err(InitError::Step {
                step: "wait for id maps".into(),
                source: std::io::Error::other("the monitor could not write the uid and gid maps"),
            });
        }
        Err(e) => return Err(step("wait for id maps")(e)),
    }
    let root_gid = Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(step("set gid 0 in the user namespace"))?;
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(step("set uid 0 in the user namespace"))?;
    Ok(())
}

/// Blocks until the monitor reports that init is in the container's cgroups (`None`: already
/// waited for).
fn wait_for_cgroup(joined: Option<OwnedFd>) -> Result<(), InitError> {
    let Some(joined) = joined else { return Ok(()) };
    let mut byte = [0u8; 1];
    match nix::unistd::read(joined.as_fd(), &mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err(InitError::Step {
            step: "join cgroup".into(),
            source: std::io::Error::other("the monitor could not move the process into its cgroup"),
        }),
        Err(e) => Err(step("join cgroup")(e)),
    }
}

/// Looks the user up in the rootfs's /etc/passwd and /etc/group.
fn resolve_identity(
    root: std::os::fd::BorrowedFd<'_>,
    process: &ProcessConfig,
) -> Result<Identity, InitError> {
    let passwd = read_in_root(root, Path::new("/etc/passwd")).ok().flatten().unwrap_or_default();
    let group = read_in_root(root, Path::new("/etc/group")).ok().flatten().unwrap_or_default();
    Ok(user::resolve(
        &process.user.user,
        &passwd,
        &group,
        &process.user.additional_gids,
        process.user.group_file,
    )?)
}

/// What [`drop_privileges`] leaves for the exec.
#[derive(Debug)]
pub struct Dropped {
    /// The final environment.
    pub env: Vec<String>,
}

/// Applies rlimits, seccomp, capabilities and the user; returns the final environment.
/// A seccomp listener goes to `hand_over` as soon as its filter is installed (dropping it there
/// leaves notified calls failing with ENOSYS). Shared by init and exec.
pub fn drop_privileges(
    process: &ProcessConfig,
    identity: &Identity,
    seccomp: Option<&CompiledFilter>,
    hand_over: &mut dyn FnMut(OwnedFd) -> Result<(), InitError>,
) -> Result<Dropped, InitError> {
    crate::sys::container::reset_signals().map_err(step("reset signal dispositions"))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(process.umask));
    rlimits::apply(&process.rlimits)?;
    // Without no_new_privs the filter needs CAP_SYS_ADMIN: installed before the user is set.
    if !process.no_new_privileges
        && let Some(filter) = seccomp
        && let Some(listener) = filter.install()?
    {
        hand_over(listener)?;
    }
    caps::apply_bounding(&process.caps)?;
    nix::sys::prctl::set_keepcaps(true).map_err(step("keep capabilities"))?;
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        // A user namespace with `setgroups` denied: nothing to set is fine (the monitor
        // cloned init without supplementary groups).
        Err(nix::Error::EPERM) if setgroups_denied() => {
            if !groups.is_empty() {
                return Err(InitError::Step {
                    step: "set supplementary groups".into(),
                    source: std::io::Error::other("setgroups is denied in this user namespace"),
                });
            }
        }
        Err(e) => return Err(step("set supplementary groups")(e)),
    }
    let gid = Gid::from_raw(identity.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(step(format!("set gid {}", identity.gid)))?;
    let uid = Uid::from_raw(identity.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(step(format!("set uid {}", identity.uid)))?;
    nix::sys::prctl::set_keepcaps(false).map_err(step("reset keep capabilities"))?;
    caps::apply_sets(&process.caps)?;
    check_cwd(&process.cwd)?;
    if let Some(profile) = &process.apparmor_profile {
        let file =
            if Path::new("/proc/thread-self/attr/apparmor/exec").exists() { "apparmor/exec" } else { "exec" };
        write_proc_attr(file, &format!("exec {profile}"))?;
    }
    if let Some(label) = &process.selinux_label {
        write_proc_attr("exec", label)?;
    }
    crate::sys::container::cloexec_from(3).map_err(step("mark fds close-on-exec"))?;
    if process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(step("set no_new_privs"))?;
        if let Some(filter) = seccomp
            && let Some(listener) = filter.install()?
        {
            hand_over(listener)?;
        }
    }
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home.as_deref().unwrap_or("/")));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    Ok(Dropped { env })
}

/// `chdir` to the process's cwd and check that it resolves inside the container.
fn check_cwd(cwd: &Path) -> Result<(), InitError> {
    nix::unistd::chdir(cwd).map_err(step(format!("chdir to {}", cwd.display())))?;
    let resolved = nix::unistd::getcwd().map_err(step("check working directory"))?;
    if !resolved.is_absolute() {
        return Err(InitError::Step {
            step: "check working directory".into(),
            source: std::io::Error::other(format!("{} is outside the container", resolved.display())),
        });
    }
    Ok(())
}

/// Writes an LSM attribute of this thread (`/proc/thread-self/attr/<file>`), checking that the
/// file is on a real procfs (a volume over `/proc` must not receive it: CVE-2019-16884 class).
fn write_proc_attr(file: &str, value: &str) -> Result<(), InitError> {
    let path = format!("/proc/thread-self/attr/{file}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(step(format!("open {path}")))?;
    let fs = nix::sys::statfs::fstatfs(&f).map_err(step(format!("statfs {path}")))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(InitError::Step {
            step: format!("write {path}"),
            source: std::io::Error::other("not on procfs"),
        });
    }
    f.write_all(value.as_bytes()).map_err(step(format!("write {path}")))
}

/// Whether `setgroups` is denied in our user namespace (`/proc/self/setgroups` says `deny`).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Execs the program through `rkube-monitor exec` run from a read-only clone of its binary, so
/// that while the kernel resolves the program (`/proc/self/exe` as the program, its `#!`
/// interpreter or ELF loader) this process's exe is no longer the writable runtime binary
/// (CVE-2019-5736). Spares the caller a sealing re-exec of the large runtime binary.
fn exec_sealed(
    trampoline: OwnedFd,
    exe: &Path,
    args: &[String],
    env: &[String],
) -> Result<Infallible, InitError> {
    let mut argv = vec!["rkube-monitor".to_string(), "exec".to_string(), exe.display().to_string()];
    argv.extend_from_slice(args);
    let argv = c_strings(&argv)?;
    let envp = c_strings(env)?;
    let err = crate::sys::container::exec_fd(trampoline.as_fd(), &argv, &envp);
    Err(step(format!("exec {} through the sealed trampoline", exe.display()))(err))
}

fn c_strings(items: &[String]) -> Result<Vec<CString>, InitError> {
    items
        .iter()
        .map(|s| CString::new(s.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| step::<std::io::Error>("exec")(std::io::ErrorKind::InvalidInput.into()))
}

/// `execve`; returns only on failure.
pub fn exec(exe: &Path, args: &[String], env: &[String]) -> Result<Infallible, InitError> {
    let path = c_strings(&[exe.display().to_string()])?.remove(0);
    let argv = c_strings(args)?;
    let envp = c_strings(env)?;
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(step(format!("exec {}", exe.display()))(err))
}
