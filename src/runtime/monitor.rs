//! The per-container monitor: a process forked from the creator that clones the container's init,
//! then outlives the creator. It reports the init pid, copies stdout/stderr into a CRI-format log
//! file when asked, reaps init and writes `exit.json` (exit code, signal, OOMKilled).
//!
//! The monitor must be the parent of init (to reap it and get the exit status without polling),
//! and init is cloned with all the setup code in memory, so the monitor starts as a fork of the
//! runtime. A fork keeps the creator's heap and touches pages of a large binary, though
//! (measured: several MB RSS). So once init is cloned, the monitor execs the small
//! `rkube-monitor` binary when one is configured (exec keeps init as its child): a freestanding
//! program without libc that maps a few pages (src/bin/rkube-monitor/). Without it, the fork
//! carries on in-process with [`supervise`], which the binary mirrors; both share the pure
//! `logfmt` CRI records and `exit_report` formats. `hack/bench-runtime.sh` reports the RSS/PSS.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::runtime::cgroup::{CgroupConfig, Version};
use crate::runtime::config::ContainerConfig;
use crate::runtime::init::{self, InitChannels, InitPlan};
use crate::runtime::logfmt::{LineSplitter, MAX_RECORD, record};
use crate::runtime::state::{ExitInfo, StateDir};
use crate::sys::container::{Forked, SingleThreaded, clone_with_namespaces, exit_now};

/// What the monitor needs.
#[derive(Debug)]
pub struct MonitorArgs<'a> {
    /// The container.
    pub config: &'a ContainerConfig,
    /// Its cgroup.
    pub cgroup: &'a CgroupConfig,
    /// Its state directory.
    pub state: StateDir,
    /// Write end of the sync pipe to the creator.
    pub sync: OwnedFd,
    /// O_PATH fd of the exec fifo.
    pub fifo: OwnedFd,
    /// CRI log file for stdout/stderr; `None` = the container inherits our stdio.
    pub log_path: Option<PathBuf>,
    /// The small monitor binary to exec after cloning init, if any.
    pub monitor_binary: Option<PathBuf>,
    /// Read-only clone of the monitor binary through which init execs the program.
    pub trampoline: Option<OwnedFd>,
    /// Console for a new terminal (`process.terminal`), passed on to init.
    pub console: Option<crate::runtime::tty::Console>,
    /// Read end of the creator's resume pipe, passed on to init (see `InitChannels`).
    pub resume: Option<OwnedFd>,
    /// Clone init as a child of our parent and exit once it is set up (`Runtime::reparent_init`).
    pub reparent_init: bool,
    /// The caller's descriptors init passes to the process (`--preserve-fds`); the monitor closes
    /// its copies once init is cloned.
    pub preserved_fds: Vec<RawFd>,
}

/// The hidden first argument with which the `rkubelet` binary runs [`exec_entry`].
pub const EXEC_ARG: &str = "__monitor";

/// `RKUBE_MONITOR_EXEC=1` makes every monitor an exec'd one, threaded creator or not (for tests,
/// and to measure what the exec costs).
pub const FORCE_EXEC_ENV: &str = "RKUBE_MONITOR_EXEC";

static EXEC_ENTRY: AtomicBool = AtomicBool::new(false);

/// Called by a binary that answers [`EXEC_ARG`] (rkubelet's main): from then on a creator that
/// has other threads starts each monitor by exec'ing `/proc/self/exe` right after the fork, so
/// the forked child never runs code that could wait on a lock another thread held at the fork.
/// Single-threaded creators (and library users that never call this) run the monitor in the fork.
pub fn enable_exec_entry() {
    EXEC_ENTRY.store(true, Ordering::Relaxed);
}

/// Whether a child forked now must exec this binary rather than run our code: the process has
/// other threads (or `RKUBE_MONITOR_EXEC=1`), and the binary answers the hidden entry points.
pub fn fork_must_exec() -> bool {
    let threaded = crate::sys::container::SingleThreaded::check().is_none()
        || std::env::var_os(FORCE_EXEC_ENV).is_some_and(|v| v == "1");
    threaded && EXEC_ENTRY.load(Ordering::Relaxed)
}

/// This binary exec'd at a hidden entry point ([`EXEC_ARG`] or the exec helper's) from a forked
/// child, prepared before the fork: the `execve` of `/proc/self/exe ENTRY PAYLOAD FD...` with our
/// environment (see [`crate::sys::container::PreparedExec`]), and the pipe that carries the
/// entry's JSON arguments, whose read end `PAYLOAD` the new process inherits.
#[derive(Debug)]
pub struct SelfExec {
    pub program: crate::sys::container::PreparedExec,
    /// Read end of the payload pipe: kept by the child, closed by the parent.
    pub payload: OwnedFd,
    writer: OwnedFd,
    bytes: Vec<u8>,
}

impl SelfExec {
    /// Encodes `payload` and prepares the call; `fds` follow the payload's on the command line.
    pub fn prepare(entry: &str, payload: &impl serde::Serialize, fds: &[i32]) -> std::io::Result<Self> {
        let bytes = serde_json::to_vec(payload).map_err(std::io::Error::other)?;
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut argv = vec!["rkubelet".to_string(), entry.to_string(), reader.as_raw_fd().to_string()];
        argv.extend(fds.iter().map(i32::to_string));
        let env: Vec<std::ffi::OsString> = std::env::vars_os()
            .map(|(mut kv, v)| {
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect();
        let program =
            crate::sys::container::PreparedExec::new(std::path::Path::new("/proc/self/exe"), &argv, &env)?;
        Ok(SelfExec { program, payload: reader, writer, bytes })
    }

    /// In the parent, after the fork: hands the arguments over. A child that died before reading
    /// makes the write fail, harmlessly: its other pipe to the parent says why.
    pub fn send(self) {
        drop(self.payload);
        let _ = std::fs::File::from(self.writer).write_all(&self.bytes);
    }
}

/// Reads and decodes the JSON an exec'd entry point gets on descriptor `fd`.
pub fn read_payload<T: serde::de::DeserializeOwned>(fd: Option<OwnedFd>) -> Result<T, String> {
    let fd = fd.ok_or("no payload pipe")?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)
        .map_err(|e| format!("read its payload: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("decode its payload: {e}"))
}

/// What an exec'd monitor reads from its payload pipe: [`MonitorArgs`] without the descriptors,
/// which it inherits at the numbers given on its command line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub config: ContainerConfig,
    pub cgroup: CgroupConfig,
    pub state: PathBuf,
    pub log_path: Option<PathBuf>,
    pub monitor_binary: Option<PathBuf>,
    /// See [`MonitorArgs::reparent_init`].
    #[serde(default)]
    pub reparent_init: bool,
    /// Initial terminal size (rows, columns) for the console, if any.
    pub console_size: Option<(u16, u16)>,
    /// See [`MonitorArgs::preserved_fds`].
    #[serde(default)]
    pub preserved_fds: Vec<RawFd>,
}

/// `rkubelet __monitor PAYLOAD SYNC FIFO TRAMPOLINE CONSOLE HOOKS` (inherited descriptor numbers, -1 for
/// none): the monitor as a fresh, single-threaded process. Never returns.
pub fn exec_entry(argv: &[String]) -> ! {
    let fd = |i: usize| argv.get(i).and_then(|a| a.parse::<i32>().ok()).filter(|fd| *fd >= 0);
    let adopt = |i: usize| fd(i).and_then(|n| crate::sys::container::adopt_fd(n).ok());
    let Some(sync) = adopt(3) else {
        crate::sys::container::write_stderr("rkubelet __monitor: no sync pipe\n");
        exit_now(2)
    };
    let fail = |message: String| -> ! {
        crate::sys::container::write_raw(sync.as_raw_fd(), format!("E{message}\n").as_bytes());
        exit_now(1)
    };
    let payload: Payload = match read_payload(adopt(2)) {
        Ok(p) => p,
        Err(e) => fail(format!("monitor: {e}")),
    };
    let Some(fifo) = adopt(4) else { fail("monitor: no exec fifo".into()) };
    let console = adopt(6).map(|socket| crate::runtime::tty::Console {
        socket: std::sync::Arc::new(socket),
        size: payload.console_size.map(|(rows, cols)| crate::runtime::tty::WindowSize { rows, cols }),
    });
    let state = match (payload.state.parent(), payload.state.file_name().and_then(|n| n.to_str())) {
        (Some(root), Some(id)) => StateDir::new(root, id),
        _ => fail(format!("monitor: bad state dir {}", payload.state.display())),
    };
    run(MonitorArgs {
        config: &payload.config,
        cgroup: &payload.cgroup,
        state,
        sync,
        fifo,
        log_path: payload.log_path.clone(),
        monitor_binary: payload.monitor_binary.clone(),
        trampoline: adopt(5),
        console,
        resume: adopt(7),
        reparent_init: payload.reparent_init,
        preserved_fds: payload.preserved_fds.clone(),
    })
}

/// Runs the monitor in the freshly forked child; never returns.
/// Sends one message line to the creator in a single `write` (atomic on a pipe), so it never
/// interleaves with init's own `R`/`E` line on the shared sync pipe.
fn send(sync: &mut std::fs::File, message: &str) {
    let _ = sync.write_all(format!("{message}\n").as_bytes());
}

/// The small `rkube-monitor` binary installed next to this program, if any.
pub fn installed_binary() -> Option<std::path::PathBuf> {
    let candidate = crate::runtime::exe_seal::original_exe()?.parent()?.join("rkube-monitor");
    candidate.is_file().then_some(candidate)
}

pub fn run(args: MonitorArgs<'_>) -> ! {
    let _ = nix::unistd::setsid();
    let manager = args.cgroup.manager();
    let mut plan = InitPlan {
        config: args.config,
        cgroup_mounts: manager.mount_sources(),
        idmapped_layers: Vec::new(),
        preserved_fds: &args.preserved_fds,
    };
    let mut sync = std::fs::File::from(args.sync);
    let pipes = match args.log_path.as_ref().map(|_| log_pipes()).transpose() {
        Ok(p) => p,
        Err(e) => {
            send(&mut sync, &format!("Ecreate log pipes: {e}"));
            exit_now(1)
        }
    };
    let (stdio, readers) = match pipes {
        Some((stdio, readers)) => (Some(stdio), Some(readers)),
        None => (None, None),
    };
    let (joined_r, joined_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            send(&mut sync, &format!("Ecreate cgroup pipe: {e}"));
            exit_now(1)
        }
    };
    if let Some(userns) = &args.config.user_namespace {
        use crate::runtime::userns::{drop_host_groups, hand_rootfs_to_root, idmapped_layers, join_by_path};
        let prepared = join_by_path(args.config)
            .and_then(|()| drop_host_groups())
            .and_then(|()| hand_rootfs_to_root(&args.config.rootfs, userns))
            .and_then(|()| idmapped_layers(&args.config.rootfs, userns));
        match prepared {
            Ok(layers) => plan.idmapped_layers = layers,
            Err(e) => {
                send(&mut sync, &format!("E{e}"));
                exit_now(1)
            }
        }
    } else if let Err(e) = join_pid_namespace(args.config) {
        // A pid namespace given by path (a pod's shared one) only applies to children: join it
        // here, so init is cloned into it. (With a user namespace, `join_by_path` did.)
        send(&mut sync, &format!("E{e}"));
        exit_now(1)
    }
    if let Err(e) = time_namespace_for_init(args.config) {
        send(&mut sync, &format!("E{e}"));
        exit_now(1)
    }
    // The monitor was forked from its creator: it has one thread, unless something broke that.
    let Some(single) = SingleThreaded::check() else {
        send(&mut sync, "Eclone container init: the monitor is not single-threaded");
        exit_now(1)
    };
    let parent = if args.reparent_init { libc::CLONE_PARENT } else { 0 };
    let child = match clone_with_namespaces(&single, args.config.clone_flags() | parent) {
        Ok(c) => c,
        Err(e) => {
            send(&mut sync, &format!("Eclone container init: {e}"));
            exit_now(1)
        }
    };
    let pid = match child {
        Forked::Child => {
            drop(readers);
            drop(joined_w);
            let sync_fd = OwnedFd::from(sync);
            let channels = InitChannels {
                sync: sync_fd,
                fifo: args.fifo,
                stdio,
                trampoline: args.trampoline,
                cgroup_joined: joined_r,
                console: args.console,
                resume: args.resume,
            };
            init::run(plan, channels)
        }
        Forked::Parent(pid) => pid,
    };
    // They are init's: a pipe's reader must see EOF when the container closes its end.
    for &fd in &args.preserved_fds {
        let _ = nix::unistd::close(fd);
    }
    // After the clone: init keeps the creator's oom_score_adj unless the spec sets one.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-999");
    drop(plan);
    drop(joined_r);
    drop(args.trampoline);
    drop(args.resume);
    // With a user namespace, init first waits for its id maps (`M`), then later for its cgroups.
    if let Some(userns) = &args.config.user_namespace {
        match crate::runtime::userns::write_id_maps(pid, userns) {
            Ok(()) => {
                let _ = nix::unistd::write(&joined_w, b"M");
            }
            Err(e) => {
                send(&mut sync, &format!("E{e}"));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    // Move init into its cgroups while it builds its rootfs (v1 migrations take milliseconds).
    if let Err(e) = manager.add_process(pid.as_raw()) {
        send(&mut sync, &format!("E{e}"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    } else {
        let _ = nix::unistd::write(&joined_w, b"1");
    }
    drop(joined_w);
    drop(stdio);
    drop(args.console);
    drop(args.fifo);
    send(&mut sync, &format!("P{pid}"));
    drop(sync);
    if args.reparent_init {
        // Init is our parent's child, not ours: nothing to supervise.
        exit_now(0)
    }
    detach_stdio();
    let log = readers.zip(args.log_path.clone());
    if let Some(binary) = &args.monitor_binary {
        exec_small_monitor(binary, pid, &args.state, args.cgroup, log.as_ref());
    }
    supervise(pid, &args.state, args.cgroup, log)
}

/// Makes children of this process members of the pid namespace the config names by path.
fn join_pid_namespace(config: &ContainerConfig) -> Result<(), String> {
    join_for_children(config, crate::runtime::config::NamespaceKind::Pid)
}

/// Joins the namespace of `kind` that the config names by path, if any (pid and time namespaces
/// joined so apply to the children cloned after).
fn join_for_children(
    config: &ContainerConfig,
    kind: crate::runtime::config::NamespaceKind,
) -> Result<(), String> {
    let Some(path) = config.namespaces.iter().find(|n| n.kind == kind).and_then(|n| n.path.as_ref()) else {
        return Ok(());
    };
    let name = kind.proc_name();
    let ns =
        std::fs::File::open(path).map_err(|e| format!("open {name} namespace {}: {e}", path.display()))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::from_bits_retain(kind.flag()))
        .map_err(|e| format!("join {name} namespace {}: {e}", path.display()))
}

/// A new time namespace for init (`clone` cannot take `CLONE_NEWTIME`): unshared here, which
/// only affects children, with its offsets written before any process is in it; one given by
/// path is joined (with a user namespace, `join_by_path` did).
fn time_namespace_for_init(config: &ContainerConfig) -> Result<(), String> {
    use crate::runtime::config::NamespaceKind;
    let Some(ns) = config.namespaces.iter().find(|n| n.kind == NamespaceKind::Time) else { return Ok(()) };
    match &ns.path {
        Some(_) if config.user_namespace.is_some() => Ok(()),
        Some(_) => join_for_children(config, NamespaceKind::Time),
        None => {
            nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
                .map_err(|e| format!("create time namespace: {e}"))?;
            if config.time_offsets.is_empty() {
                return Ok(());
            }
            std::fs::write("/proc/self/timens_offsets", config.time_offsets.join("\n"))
                .map_err(|e| format!("write time offsets ({}): {e}", config.time_offsets.join(", ")))
        }
    }
}

/// Copies logs, reaps init, writes `exit.json`, exits. Shared by the fork and `rkube-monitor`.
pub fn supervise(
    pid: Pid,
    state: &StateDir,
    cgroup: &CgroupConfig,
    log: Option<([OwnedFd; 2], PathBuf)>,
) -> ! {
    if let Some((readers, path)) = log {
        pump_logs(readers, &path);
    }
    let exit = wait_exit(pid, cgroup);
    let _ = state.write_exit(&exit);
    exit_now(0)
}

/// Replaces this process with
/// `rkube-monitor <pid> <state-dir> <oom-counter-file> [<cri-log> <stdout-fd> <stderr-fd>]`,
/// the log pipes inherited at the numbers given. Returns only if the exec failed (the caller
/// then supervises in-process).
fn exec_small_monitor(
    binary: &std::path::Path,
    pid: Pid,
    state: &StateDir,
    cgroup: &CgroupConfig,
    log: Option<&([OwnedFd; 2], PathBuf)>,
) {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let oom_counter = oom_counter_file(cgroup);
    let mut args = vec![
        binary.as_os_str().to_owned(),
        pid.to_string().into(),
        state.path().as_os_str().to_owned(),
        oom_counter.into_os_string(),
    ];
    if let Some((readers, path)) = log {
        for reader in readers {
            // Keep the pipe open across the exec.
            let flags = nix::fcntl::FdFlag::empty();
            if nix::fcntl::fcntl(reader.as_fd(), nix::fcntl::FcntlArg::F_SETFD(flags)).is_err() {
                return;
            }
        }
        args.push(path.as_os_str().to_owned());
        args.extend(readers.iter().map(|r| r.as_raw_fd().to_string().into()));
    }
    let Ok(argv) = args.iter().map(|a| CString::new(a.as_encoded_bytes())).collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let _ = nix::unistd::execve(&argv[0], &argv, &[] as &[CString]);
}

/// The file whose `oom_kill` line counts OOM kills in the container's cgroup: `memory.events`
/// on v2, `memory.oom_control` in the v1 memory hierarchy.
pub fn oom_counter_file(cgroup: &CgroupConfig) -> PathBuf {
    match cgroup.version {
        Version::V1 => {
            let memory = cgroup.root.join("memory");
            let base = cgroup.bases.get("memory").map_or(memory.clone(), |b| memory.join(b));
            base.join(&cgroup.path).join("memory.oom_control")
        }
        Version::V2 => cgroup.root.join(&cgroup.path).join("memory.events"),
    }
}

/// Pipes for the container's stdin (/dev/null), stdout and stderr; returns (child ends, our ends).
fn log_pipes() -> std::io::Result<([OwnedFd; 3], [OwnedFd; 2])> {
    let devnull: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok(([devnull, out_w, err_w], [out_r, err_r]))
}

/// Points our own stdio at /dev/null so callers waiting on the creator's output are not held.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
        let _ = nix::unistd::dup2_stdout(null.as_fd());
        let _ = nix::unistd::dup2_stderr(null.as_fd());
    }
}

/// Copies both streams into the CRI log until both reach end of file.
fn pump_logs(readers: [OwnedFd; 2], path: &std::path::Path) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(path) else { return };
    let names = ["stdout", "stderr"];
    let mut splitters = [LineSplitter::default(), LineSplitter::default()];
    let mut open = [true, true];
    let mut buf = vec![0u8; MAX_RECORD];
    while open.iter().any(|o| *o) {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut which = Vec::new();
        for (i, r) in readers.iter().enumerate() {
            if open[i] {
                fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, i)| *i)
            .collect();
        for i in ready {
            let mut emit = |partial: bool, content: &[u8]| {
                let _ = log.write_all(&record(SystemTime::now(), names[i], partial, content));
            };
            match nix::unistd::read(readers[i].as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    open[i] = false;
                    splitters[i].finish(&mut emit);
                }
                Ok(n) => splitters[i].feed(&buf[..n], &mut emit),
            }
        }
    }
}

/// Reaps init and classifies the exit.
fn wait_exit(pid: Pid, cgroup: &CgroupConfig) -> ExitInfo {
    // Any OOM kill in the container's cgroup counts (the killed task may be a child of init).
    let oom = || cgroup.manager().stats().map(|s| s.oom_kills > 0).unwrap_or(false);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return ExitInfo { code, signal: None, oom_killed: oom() },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return ExitInfo { code: 128 + sig as i32, signal: Some(sig as i32), oom_killed: oom() };
            }
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return ExitInfo { code: 255, signal: None, oom_killed: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_is_the_memory_controllers_event_file() {
        let cgroup = |version| CgroupConfig {
            version,
            root: PathBuf::from("/sys/fs/cgroup"),
            path: PathBuf::from("rkube/c1"),
            created: Vec::new(),
            bases: Default::default(),
        };
        assert_eq!(
            oom_counter_file(&cgroup(Version::V1)),
            PathBuf::from("/sys/fs/cgroup/memory/rkube/c1/memory.oom_control")
        );
        assert_eq!(
            oom_counter_file(&cgroup(Version::V2)),
            PathBuf::from("/sys/fs/cgroup/rkube/c1/memory.events")
        );
    }
}
