//! `exec`: run another process in a running container. A forked helper joins the container's
//! cgroup and namespaces (mount last), forks once more so the child is inside the pid namespace,
//! and that child applies the container's security settings (the same code as init) and execs.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};

use crate::runtime::config::{NamespaceKind, find_executable};
use crate::runtime::container::{ExecOverrides, ExecRequest};
use crate::runtime::init::{self, InitError};
use crate::runtime::monitor;
use crate::runtime::seccomp;
use crate::runtime::state::Record;
use crate::runtime::user;
use crate::sys::container::{Forked, close_fds_except, exit_now, fork};

/// Errors of exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A step in the caller failed.
    #[error("{step}: {source}")]
    Step {
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The namespaces to join, in order: the user namespace first (the others are owned by it, so
/// joining them needs its capabilities), mount last so /proc paths stay valid until then.
/// Namespaces the container itself joined by path are owned by the host's user namespace and
/// are joined before it.
const JOIN_ORDER: [NamespaceKind; 8] = [
    NamespaceKind::User,
    NamespaceKind::Time,
    NamespaceKind::Cgroup,
    NamespaceKind::Ipc,
    NamespaceKind::Uts,
    NamespaceKind::Net,
    NamespaceKind::Pid,
    NamespaceKind::Mount,
];

/// Runs `req` in the container of `record`, waiting for it; returns its exit code
/// (128 + signal when killed).
pub fn run(record: &Record, req: &ExecRequest) -> Result<i32, ExecError> {
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ExecError::Step { step: "create pid pipe", source: e.into() })?;
    // From a threaded caller (the agent probing), the forked child execs this binary as the helper
    // (see `monitor::fork_must_exec`); the request comes over a pipe.
    let exec = if monitor::fork_must_exec() { Some(prepare_helper_exec(record, req, &pid_w)?) } else { None };
    // Built before the fork: the child of a threaded caller must not allocate.
    let mut keep = vec![
        pid_w.as_raw_fd(),
        exec.as_ref().map_or(-1, |e| e.payload.as_raw_fd()),
        req.terminal.as_ref().map_or(-1, |c| c.socket.as_raw_fd()),
    ];
    keep.extend_from_slice(&req.preserved_fds);
    tracing::debug!(exec = exec.is_some(), "exec helper started");
    let helper = fork().map_err(|source| ExecError::Step { step: "fork exec helper", source })?;
    match helper {
        Forked::Child if exec.is_some() => {
            let exec = exec.as_ref().expect("checked");
            if redirect_stdio(req).is_err() {
                exit_now(126)
            }
            if close_fds_except(&keep).is_ok() {
                exec.program.exec(&keep);
            }
            crate::sys::container::write_stderr("exec: could not start the exec helper\n");
            exit_now(126)
        }
        Forked::Child => {
            drop(pid_r);
            if redirect_stdio(req).is_err() {
                exit_now(126)
            }
            let code = match join_and_spawn(record, req, pid_w) {
                Ok(code) => code,
                Err(e) => {
                    crate::sys::container::write_stderr(&format!("exec: {e}\n"));
                    126
                }
            };
            exit_now(code)
        }
        Forked::Parent(pid) => {
            drop(pid_w);
            if let Some(exec) = exec {
                exec.send();
            }
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(pid_r), &mut text);
            if let (Some(pid_file), Ok(process)) = (&req.pid_file, text.trim().parse::<i32>()) {
                crate::runtime::state::write_atomic(pid_file, process.to_string().as_bytes()).map_err(
                    |e| ExecError::Step {
                        step: "write pid file",
                        source: std::io::Error::other(e.to_string()),
                    },
                )?;
            }
            Ok(wait_code(pid))
        }
    }
}

/// In the forked helper: the request's stdio as fds 0-2 (dup2 clears close-on-exec), so the
/// helper and the process it starts inherit them. Only system calls: the caller may be threaded.
fn redirect_stdio(req: &ExecRequest) -> nix::Result<()> {
    let Some(stdio) = &req.stdio else { return Ok(()) };
    nix::unistd::dup2_stdin(&stdio[0])?;
    nix::unistd::dup2_stdout(&stdio[1])?;
    nix::unistd::dup2_stderr(&stdio[2])
}

/// The hidden first argument with which the `rkubelet` binary runs [`helper_entry`].
pub const HELPER_ARG: &str = "__exec";

/// What an exec'd helper reads from its payload pipe: the request without its console, whose
/// socket it inherits.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HelperPayload {
    record: Record,
    args: Vec<String>,
    env: Option<Vec<String>>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    detach: bool,
    pid_file: Option<PathBuf>,
    console_size: Option<(u16, u16)>,
    overrides: ExecOverrides,
    preserved_fds: Vec<RawFd>,
}

fn prepare_helper_exec(
    record: &Record,
    req: &ExecRequest,
    pid_w: &OwnedFd,
) -> Result<monitor::SelfExec, ExecError> {
    let payload = HelperPayload {
        record: record.clone(),
        args: req.args.clone(),
        env: req.env.clone(),
        cwd: req.cwd.clone(),
        user: req.user.clone(),
        detach: req.detach,
        pid_file: req.pid_file.clone(),
        console_size: req.terminal.as_ref().and_then(|c| c.size).map(|s| (s.rows, s.cols)),
        overrides: req.overrides.clone(),
        preserved_fds: req.preserved_fds.clone(),
    };
    let console = req.terminal.as_ref().map_or(-1, |c| c.socket.as_raw_fd());
    monitor::SelfExec::prepare(HELPER_ARG, &payload, &[pid_w.as_raw_fd(), console])
        .map_err(|source| ExecError::Step { step: "prepare the exec helper", source })
}

/// `rkubelet __exec PAYLOAD PID_OUT CONSOLE` (inherited descriptor numbers, -1 for none): the
/// exec helper as a fresh process; its exit code is the exec'd process's. Never returns.
pub fn helper_entry(argv: &[String]) -> ! {
    let adopt = |i: usize| {
        argv.get(i)
            .and_then(|a| a.parse::<i32>().ok())
            .filter(|fd| *fd >= 0)
            .and_then(|n| crate::sys::container::adopt_fd(n).ok())
    };
    let fail = |message: String| -> ! {
        crate::sys::container::write_stderr(&format!("exec: {message}\n"));
        exit_now(126)
    };
    let payload: HelperPayload = match monitor::read_payload(adopt(2)) {
        Ok(p) => p,
        Err(e) => fail(e),
    };
    let Some(pid_out) = adopt(3) else { fail("no pid pipe".into()) };
    let terminal = adopt(4).map(|socket| crate::runtime::tty::Console {
        socket: std::sync::Arc::new(socket),
        size: payload.console_size.map(|(rows, cols)| crate::runtime::tty::WindowSize { rows, cols }),
    });
    let req = ExecRequest {
        args: payload.args,
        env: payload.env,
        cwd: payload.cwd,
        user: payload.user,
        detach: payload.detach,
        pid_file: payload.pid_file,
        terminal,
        stdio: None,
        overrides: payload.overrides,
        preserved_fds: payload.preserved_fds,
        ignore_paused: true,
    };
    match join_and_spawn(&payload.record, &req, pid_out) {
        Ok(code) => exit_now(code),
        Err(e) => fail(e.to_string()),
    }
}

fn wait_code(pid: nix::unistd::Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

fn step<E: Into<std::io::Error>>(what: &'static str) -> impl FnOnce(E) -> InitError {
    move |e| InitError::Step { step: what.into(), source: e.into() }
}

/// With a terminal requested: a new session whose controlling terminal is a new pty from the
/// container's devpts, its master sent to the request's console.
fn take_terminal(req: &ExecRequest, identity: &user::Identity) -> Result<(), InitError> {
    let Some(console) = &req.terminal else { return Ok(()) };
    nix::unistd::setsid().map_err(step("setsid"))?;
    crate::runtime::tty::attach_new_terminal(console, (identity.uid, identity.gid))?;
    Ok(())
}

/// In the helper: join everything, fork the real process, wait for it.
fn join_and_spawn(record: &Record, req: &ExecRequest, pid_out: OwnedFd) -> Result<i32, InitError> {
    nix::sys::prctl::set_dumpable(false).map_err(step("disable dumpable"))?;
    let config = &record.config;
    let affinity = req.overrides.cpu_affinity.as_ref().or(config.process.cpu_affinity.as_ref());
    init::set_cpu_affinity(affinity.and_then(|a| a.initial.as_deref()))?;
    for file in record.cgroup.manager().procs_files() {
        std::fs::write(&file, "0").map_err(step("join cgroup"))?;
    }
    init::set_cpu_affinity(affinity.and_then(|a| a.after.as_deref()))?;
    let mut fds: Vec<(NamespaceKind, OwnedFd)> = Vec::new();
    let by_path = |kind: NamespaceKind| config.namespaces.iter().any(|n| n.kind == kind && n.path.is_some());
    let order = JOIN_ORDER.iter().filter(|k| by_path(**k)).chain(JOIN_ORDER.iter().filter(|k| !by_path(**k)));
    for &kind in order {
        let joined = config.namespaces.iter().any(|n| n.kind == kind);
        if !joined {
            continue;
        }
        let path = PathBuf::from(format!("/proc/{}/ns/{}", record.pid, kind.proc_name()));
        let fd = nix::fcntl::open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(step("open container namespace"))?;
        fds.push((kind, fd));
    }
    // Everything we need from the host must be read before joining the mount namespace.
    let seccomp = config.process.seccomp.as_ref().map(seccomp::compile).transpose()?;
    if seccomp.as_ref().is_some_and(seccomp::CompiledFilter::notifies) {
        return Err(InitError::Seccomp(seccomp::SeccompError::Invalid(
            "exec into a container whose profile notifies a seccomp agent (SCMP_ACT_NOTIFY) is not supported"
                .into(),
        )));
    }
    // A container in the caller's mount namespace lives in a chroot: enter the same root.
    let chroot = if config.creates(NamespaceKind::Mount) {
        None
    } else {
        let root = PathBuf::from(format!("/proc/{}/root", record.pid));
        Some(
            nix::fcntl::open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(step("open the container's root"))?,
        )
    };
    for (kind, fd) in fds {
        nix::sched::setns(fd, CloneFlags::from_bits_truncate(kind.flag())).map_err(step("join namespace"))?;
    }
    if let Some(root) = chroot {
        crate::runtime::rootfs::chroot_into(std::os::fd::AsFd::as_fd(&root))?;
    }
    if config.user_namespace.is_some() {
        // As runc: become root of the joined user namespace, so what is created before privileges
        // are dropped (a terminal) belongs to container ids, not to the unmapped host root.
        let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
        nix::unistd::setresgid(root.0, root.0, root.0).map_err(step("become root in the user namespace"))?;
        nix::unistd::setresuid(root.1, root.1, root.1).map_err(step("become root in the user namespace"))?;
    }
    let mut process = config.process.clone();
    if !req.args.is_empty() {
        process.args = req.args.clone();
    }
    if let Some(env) = &req.env {
        process.env = env.clone();
    }
    if let Some(cwd) = &req.cwd {
        process.cwd = cwd.clone();
    }
    if let Some(u) = &req.user {
        process.user.user = u.clone();
    }
    let overrides = &req.overrides;
    if let Some(caps) = &overrides.caps {
        process.caps = caps.clone();
    }
    process.caps.add_drop(&overrides.add_caps, &[]);
    if let Some(no_new_privileges) = overrides.no_new_privileges {
        process.no_new_privileges = no_new_privileges;
    }
    if let Some(gids) = &overrides.additional_gids {
        process.user.additional_gids = gids.clone();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let identity = user::resolve(
        &process.user.user,
        &passwd,
        &group,
        &process.user.additional_gids,
        process.user.group_file,
    )?;
    let exe = find_executable(&process.args[0], &process.env, |p: &Path| p.exists())
        .ok_or_else(|| InitError::NotFound(process.args[0].clone()))?;
    // Closed by a successful execve (O_CLOEXEC); written to when the child fails before it. Waiting for
    // it means the pid we hand out already runs the requested program, as runc's `exec --detach` does.
    let (exec_r, exec_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(step("create exec pipe"))?;
    match fork().map_err(step("fork exec process"))? {
        Forked::Child => {
            drop(pid_out);
            drop(exec_r);
            // Dropping privileges marks every descriptor close-on-exec; the preserved ones are
            // passed on again.
            let result = take_terminal(req, &identity)
                .and_then(|()| init::apply_process_attributes(config))
                .and_then(|()| init::drop_privileges(&process, &identity, seccomp.as_ref(), &mut |_| Ok(())))
                .and_then(|dropped| {
                    crate::sys::container::inherit_fds(&req.preserved_fds)
                        .map_err(step("pass the preserved fds on"))?;
                    init::exec(&exe, &process.args, &dropped.env)
                });
            let Err(e) = result;
            crate::sys::container::write_stderr(&format!("exec: {e}\n"));
            let _ = nix::unistd::write(&exec_w, b"!");
            exit_now(127)
        }
        Forked::Parent(pid) => {
            drop(exec_w);
            let mut failed = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::fs::File::from(exec_r), &mut failed);
            // `fork` returns the pid in our own (host) pid namespace: that is the host pid.
            let _ = nix::unistd::write(&pid_out, format!("{pid}\n").as_bytes());
            drop(pid_out);
            if req.detach && failed.is_empty() { Ok(0) } else { Ok(wait_code(pid)) }
        }
    }
}
