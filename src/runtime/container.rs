//! The `Runtime` API: create, start, state, kill, delete, wait, exec, list — over on-disk state
//! under a run directory, with injectable cgroup root and parent. Used by the CLI and by pods.
//!
//! `create` forks a monitor (see `monitor`), which clones init in the new namespaces. The
//! creator waits for init to report ready (or one line of error), then records the state.
//! Callers in multi-threaded programs are fine: the fork uses glibc's `fork`, and the child only
//! runs this module's code before exec.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::runtime::cgroup::{CgroupConfig, CgroupError};
use crate::runtime::config::{self, ConfigError};
use crate::runtime::logfmt::rfc3339_nanos;
use crate::runtime::monitor::{self, MonitorArgs};
use crate::runtime::rootfs::RootfsSource;
use crate::runtime::state::{
    ExitInfo, OciState, Record, StateDir, StateError, Status, process_alive, process_start_time, write_atomic,
};
use crate::runtime::tty::Console;
use crate::sys::container::{Forked, close_fds_except, fork};

/// Errors of the runtime API; each names the container and the step.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State files.
    #[error(transparent)]
    State(#[from] StateError),
    /// cgroups.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The container's init failed during create.
    #[error("create container {id}: {message}")]
    Init {
        /// Container id.
        id: String,
        /// The init process's error line.
        message: String,
    },
    /// A host-side step failed.
    #[error("{step} for container {id}: {source}")]
    Io {
        /// Step.
        step: &'static str,
        /// Container.
        id: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The container is in the wrong state for the operation.
    #[error("container {id} is {status:?}: cannot {op}")]
    WrongState {
        /// Container.
        id: String,
        /// Its status.
        status: Status,
        /// Operation.
        op: &'static str,
    },
    /// Terminal / console socket.
    #[error(transparent)]
    Tty(#[from] crate::runtime::tty::TtyError),
    /// Waiting timed out.
    #[error("container {0}: timed out waiting for exit")]
    Timeout(String),
}

fn io_err(step: &'static str, id: &str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let id = id.to_string();
    move |source| RuntimeError::Io { step, id, source }
}

/// Where state and cgroups live.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Run directory holding one state dir per container.
    pub root: PathBuf,
    /// cgroup hierarchy root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// cgroup parent for specs without `cgroupsPath` (default `rkube`).
    pub cgroup_parent: String,
    /// The small `rkube-monitor` binary the monitor execs into (smaller RSS); `None` keeps the
    /// monitor as a fork of the caller.
    pub monitor_binary: Option<PathBuf>,
    /// runc's process model: init becomes a child of the `create` caller (`CLONE_PARENT`), so
    /// when that exits init is reparented to the caller's subreaper (conmon, containerd's shim),
    /// which reaps it and reads its exit status. No monitor stays behind: no CRI log, no
    /// `exit.json` (a stopped container's code is the subreaper's to report).
    pub reparent_init: bool,
    /// runc's cgroup placement: a relative `cgroupsPath` (and, with an empty `cgroup_parent`, a
    /// spec without one: `<id>`) is under the caller's own cgroup of each controller. Otherwise
    /// every path is under the hierarchy root.
    pub cgroups_relative_to_caller: bool,
}

/// A create request.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Container id.
    pub id: String,
    /// Bundle directory (relative paths in the spec are relative to it).
    pub bundle: PathBuf,
    /// The OCI runtime spec.
    pub spec: Spec,
    /// Root filesystem override (image layers); `None` uses the spec's `root.path`.
    pub rootfs: Option<RootfsSource>,
    /// CRI log file for stdout/stderr; `None` = inherit the caller's stdio.
    pub log_path: Option<PathBuf>,
    /// Pid file to write (atomically) after create.
    pub pid_file: Option<PathBuf>,
    /// The caller's descriptors (3 and up) the container's process inherits at the same numbers
    /// (runc's `--preserve-fds`).
    pub preserved_fds: Vec<RawFd>,
}

/// What `exec` runs.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// argv.
    pub args: Vec<String>,
    /// Environment; `None` = the container's.
    pub env: Option<Vec<String>>,
    /// Working directory; `None` = the container's.
    pub cwd: Option<PathBuf>,
    /// `uid[:gid]` or name; `None` = the container's user.
    pub user: Option<String>,
    /// Do not wait: return as soon as the process runs (exit code 0), writing its host pid to
    /// `pid_file` (containerd and conmon reap it as subreapers).
    pub detach: bool,
    /// Pid file for the exec'd process (written atomically).
    pub pid_file: Option<PathBuf>,
    /// Give the process a new terminal and send its master to this console.
    pub terminal: Option<crate::runtime::tty::Console>,
    /// The process's stdin, stdout and stderr (`None`: the caller's own fds 0-2). Ignored with a
    /// terminal, which becomes all three.
    pub stdio: Option<std::sync::Arc<[std::os::fd::OwnedFd; 3]>>,
    /// Security settings that differ from the container's process.
    pub overrides: ExecOverrides,
    /// The caller's descriptors (3 and up) the process inherits at the same numbers; every other
    /// descriptor of the caller is closed on exec.
    pub preserved_fds: Vec<RawFd>,
    /// Exec into a paused container too (the process joins it frozen).
    pub ignore_paused: bool,
}

/// What an exec'd process may change of the container's process settings (runc's `exec
/// --process`, `--cap`, `--no-new-privs`, `--additional-gids`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOverrides {
    /// Capability sets replacing the container's.
    pub caps: Option<crate::runtime::caps::CapPlan>,
    /// Capabilities added to the bounding, effective and permitted sets (after `caps`).
    pub add_caps: Vec<String>,
    /// Sets `no_new_privs` even where the container's process does not.
    pub no_new_privileges: Option<bool>,
    /// Supplementary groups replacing the container's `additionalGids`.
    pub additional_gids: Option<Vec<u32>>,
    /// CPU affinity replacing the container's `execCPUAffinity`.
    pub cpu_affinity: Option<crate::runtime::config::CpuAffinity>,
}

impl Runtime {
    /// A runtime with the given run directory and cgroup root, parent `rkube`.
    pub fn new(root: impl Into<PathBuf>, cgroup_root: impl Into<PathBuf>) -> Self {
        Runtime {
            root: root.into(),
            cgroup_root: cgroup_root.into(),
            cgroup_parent: "rkube".into(),
            monitor_binary: None,
            reparent_init: false,
            cgroups_relative_to_caller: false,
        }
    }

    /// Whether the caller of a `create` followed at once by `start` (a `run`) must itself run
    /// from a sealed binary (see `exe_seal`). Not when init execs through the sealed
    /// `rkube-monitor` and is alone in a new pid namespace until then: no container process can
    /// reach the runtime binary. (A container left in the created state needs it: [`Runtime::exec`]
    /// refuses to join one whose init is not sealed.)
    pub fn run_needs_sealed_caller(&self, spec: &Spec) -> bool {
        let new_pid_namespace =
            spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|nss| {
                nss.iter()
                    .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && ns.path().is_none())
            });
        self.monitor_binary.is_none() || !new_pid_namespace
    }

    fn dir(&self, id: &str) -> Result<StateDir, RuntimeError> {
        config::validate_id(id)?;
        Ok(StateDir::new(&self.root, id))
    }

    /// The container's state dir and record, if its status is `wanted` (else `op` is refused).
    fn record_in(
        &self,
        id: &str,
        wanted: Status,
        op: &'static str,
    ) -> Result<(StateDir, Record), RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        let status = dir.status(&record);
        if status != wanted {
            return Err(RuntimeError::WrongState { id: id.into(), status, op });
        }
        Ok((dir, record))
    }

    /// Creates the container: namespaces, rootfs, cgroup; the process waits for `start`.
    #[tracing::instrument(level = "debug", name = "runtime create", skip_all, fields(id = %req.id))]
    pub fn create(&self, req: &CreateRequest) -> Result<OciState, RuntimeError> {
        self.create_with_console(req, None)
    }

    /// [`Runtime::create`] for `process.terminal`: the process gets a new terminal whose master
    /// is sent to `console` (required exactly when the spec asks for a terminal).
    pub fn create_with_console(
        &self,
        req: &CreateRequest,
        console: Option<Console>,
    ) -> Result<OciState, RuntimeError> {
        let terminal = req.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        crate::runtime::tty::check_console_flags(terminal, console.is_some())?;
        let config =
            config::from_spec(&req.id, &req.bundle, &req.spec, req.rootfs.clone(), &self.cgroup_parent)?;
        let mut cgroup = CgroupConfig::new(&self.cgroup_root, &config.cgroup_path)?;
        let relative = match req.spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()) {
            Some(path) => !path.is_absolute(),
            None => self.cgroup_parent.trim_matches('/').is_empty(),
        };
        if self.cgroups_relative_to_caller && relative {
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .map_err(io_err("read /proc/self/cgroup", &req.id))?;
            cgroup = cgroup.relative_to(&own);
        }
        let state = self.dir(&req.id)?;
        state.create(&req.id)?;
        let mut manager = cgroup.manager();
        let created = manager.create(&config.resources);
        cgroup.created = manager.created().to_vec();
        let cleanup = |cgroup: &CgroupConfig| {
            let _ = cgroup.manager().remove();
            let _ = state.remove();
        };
        if let Err(e) = created {
            cleanup(&cgroup);
            return Err(e.into());
        }
        match self.spawn(req, &config, &cgroup, &state, console) {
            Ok(s) => Ok(s),
            Err(e) => {
                cleanup(&cgroup);
                run_poststop(&config, &req.bundle);
                Err(e)
            }
        }
    }

    fn spawn(
        &self,
        req: &CreateRequest,
        config: &config::ContainerConfig,
        cgroup: &CgroupConfig,
        state: &StateDir,
        console: Option<Console>,
    ) -> Result<OciState, RuntimeError> {
        let id = &req.id;
        let fifo = state.fifo();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io_err("create exec fifo", id)(e.into()))?;
        // The process may run as any uid: it must be able to open the fifo for writing.
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))
            .map_err(io_err("chmod exec fifo", id))?;
        let fifo_fd = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err("open exec fifo", id)(e.into()))?;
        let (sync_r, sync_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("create sync pipe", id)(e.into()))?;
        // Init stops for us only after its mounts with prestart/createRuntime hooks, and after
        // installing a seccomp filter that notifies, until its agent has the listener.
        let notifies = config.process.seccomp.as_ref().is_some_and(|p| p.listener.is_some());
        let (resume, mut resume_go) = if config.hooks.runtime_hooks_at_create() || notifies {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| io_err("create resume pipe", id)(e.into()))?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let trampoline = self
            .monitor_binary
            .as_deref()
            .map(crate::sys::container::open_readonly_clone)
            .transpose()
            .map_err(io_err("seal the exec trampoline", id))?;
        // With other threads (a pod's network wired meanwhile, an agent's probes), a lock one of
        // them holds at the fork would stay held in the child: then the child only closes fds and
        // execs this binary as a fresh monitor, whose arguments come over a pipe.
        let exec = if monitor::fork_must_exec() {
            let fds = [
                sync_w.as_raw_fd(),
                fifo_fd.as_raw_fd(),
                trampoline.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                console.as_ref().map_or(-1, |c| c.socket.as_raw_fd()),
                resume.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            ];
            Some(self.prepare_monitor_exec(config, cgroup, state, req, console.as_ref(), fds)?)
        } else {
            None
        };
        tracing::debug!(exec = exec.is_some(), "monitor started");
        // Other threads of the creator (a pod's network set up meanwhile) may have had fds open
        // at the fork; the monitor and init keep only their own and the preserved ones.
        let mut keep = vec![
            sync_w.as_raw_fd(),
            fifo_fd.as_raw_fd(),
            trampoline.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            console.as_ref().map_or(-1, |c| c.socket.as_raw_fd()),
            exec.as_ref().map_or(-1, |e| e.payload.as_raw_fd()),
            resume.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        ];
        keep.extend_from_slice(&req.preserved_fds);
        let monitor_pid = match fork().map_err(io_err("fork monitor", id))? {
            Forked::Child => {
                drop(sync_r);
                drop(resume_go.take());
                if close_fds_except(&keep).is_err() {
                    crate::sys::container::write_raw(sync_w.as_raw_fd(), b"Eclose inherited fds\n");
                    crate::sys::container::exit_now(1)
                }
                if let Some(exec) = &exec {
                    exec.program.exec(&keep);
                    crate::sys::container::write_raw(
                        sync_w.as_raw_fd(),
                        b"Eexec the runtime for the monitor\n",
                    );
                    crate::sys::container::exit_now(1)
                }
                monitor::run(MonitorArgs {
                    config,
                    cgroup,
                    state: state.clone(),
                    sync: sync_w,
                    fifo: fifo_fd,
                    log_path: req.log_path.clone(),
                    monitor_binary: self.monitor_binary.clone(),
                    trampoline,
                    console,
                    resume,
                    reparent_init: self.reparent_init,
                    preserved_fds: req.preserved_fds.clone(),
                })
            }
            Forked::Parent(pid) => pid,
        };
        drop(resume);
        drop(sync_w);
        drop(fifo_fd);
        drop(trampoline);
        drop(console);
        if let Some(exec) = exec {
            exec.send();
        }
        let mut reader = BufReader::new(std::fs::File::from(sync_r));
        // The monitor sends `P<pid>` and init sends `R` (or `E<error>`), in either order.
        let mut init_pid = None;
        let mut failure = None;
        let mut ready_seen = false;
        let mut hooks_asked = false;
        let mut listener_fd = None;
        let mut line = String::new();
        while failure.is_none() && !(ready_seen && init_pid.is_some()) {
            if hooks_asked
                && let Some(pid) = init_pid
                && let Some(go) = resume_go.as_ref()
            {
                hooks_asked = false;
                // Init has built its mounts and waits: run prestart, then createRuntime.
                let state = crate::runtime::hooks::state_json(
                    id,
                    "creating",
                    Some(pid),
                    &req.bundle,
                    &config.annotations,
                );
                let hooks = &config.hooks;
                match crate::runtime::hooks::run_all("prestart", &hooks.prestart, &state).and_then(|()| {
                    crate::runtime::hooks::run_all("createRuntime", &hooks.create_runtime, &state)
                }) {
                    Ok(()) => {
                        let _ = nix::unistd::write(go, b"1");
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(pid) = init_pid
                && let Some(fd) = listener_fd
                && let Some(go) = resume_go.as_ref()
            {
                // Init has installed its filter and waits: a call it notified before the agent
                // had the listener would never be answered (runc hands it over at this point too).
                listener_fd = None;
                if let Err(e) = self.notify_agent(req, config, pid, fd) {
                    failure = Some(e);
                    break;
                }
                let _ = nix::unistd::write(go, b"1");
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let msg = line.trim_end();
            if let Some(pid) = msg.strip_prefix('P') {
                init_pid = pid.parse::<i32>().ok();
                tracing::debug!("init cloned");
                // Its network namespace exists now (cloned, or the path it joins).
                if let Some(pid) = init_pid
                    && !config.net_devices.is_empty()
                {
                    let netns = crate::runtime::netdev::target_namespace(&config.namespaces, pid);
                    if let Err(e) = crate::runtime::netdev::move_into(&netns, &config.net_devices) {
                        failure = Some(e.to_string());
                    }
                }
            } else if let Some(fd) = msg.strip_prefix('N') {
                listener_fd = fd.parse::<i32>().ok();
            } else if msg == "H" {
                hooks_asked = true;
            } else if msg == "R" {
                ready_seen = true;
                tracing::debug!("init ready");
            } else if let Some(err) = msg.strip_prefix('E') {
                failure = Some(err.to_string());
            }
        }
        let ready = failure.is_none() && init_pid.is_some() && ready_seen;
        if !ready {
            match init_pid {
                Some(pid) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                // The monitor would supervise an init we cannot name: end both rather than wait forever.
                None => {
                    let _ = kill(monitor_pid, Signal::SIGKILL);
                    for pid in cgroup.manager().pids().unwrap_or_default() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            drop(resume_go);
            let _ = nix::sys::wait::waitpid(monitor_pid, None);
            let message = failure.unwrap_or_else(|| "container init exited before it was ready".into());
            return Err(RuntimeError::Init { id: id.clone(), message });
        }
        let pid = init_pid.unwrap_or_default();
        // Without a mount namespace, init's rootfs bind is in ours: the top mount at the rootfs.
        let host_root_mount = match &config.rootfs {
            crate::runtime::rootfs::RootfsSource::Dir(rootfs)
                if !config.creates(config::NamespaceKind::Mount) =>
            {
                crate::runtime::rootfs::top_mount_id(rootfs)
                    .map_err(|e| io_err("find the rootfs bind", id)(std::io::Error::other(e.to_string())))?
            }
            _ => None,
        };
        let record = Record {
            id: id.clone(),
            pid,
            pid_start_time: process_start_time(pid).unwrap_or_default(),
            monitor_pid: monitor_pid.as_raw(),
            bundle: req.bundle.clone(),
            created: rfc3339_nanos(std::time::SystemTime::now()),
            annotations: req.spec.annotations().clone().unwrap_or_default().into_iter().collect(),
            cgroup: cgroup.clone(),
            config: config.clone(),
            host_root_mount,
        };
        state.write_record(&record)?;
        if let Some(pid_file) = &req.pid_file {
            write_atomic(pid_file, pid.to_string().as_bytes())?;
        }
        Ok(self.oci_state(state, &record))
    }

    /// Hands init's seccomp listener (its fd `fd`) to the profile's agent with the state.
    fn notify_agent(
        &self,
        req: &CreateRequest,
        config: &config::ContainerConfig,
        pid: i32,
        fd: i32,
    ) -> Result<(), String> {
        let Some(listener) = config.process.seccomp.as_ref().and_then(|p| p.listener.as_ref()) else {
            return Err("init reported a seccomp listener the profile has no agent for".into());
        };
        let copy = crate::sys::container::copy_fd_of_process(pid, fd)
            .map_err(|e| format!("copy the seccomp listener of init: {e}"))?;
        let state = crate::runtime::hooks::state_json(
            &req.id,
            "creating",
            Some(pid),
            &req.bundle,
            &config.annotations,
        );
        let message = crate::runtime::seccomp::agent_message(listener, pid, &state);
        crate::runtime::seccomp::send_to_agent(listener, copy.as_fd(), &message).map_err(|e| {
            format!("linux.seccomp.listenerPath {}: send the seccomp listener: {e}", listener.path.display())
        })
    }

    /// Everything the forked child needs to exec `/proc/self/exe` as a monitor
    /// ([`monitor::exec_entry`]), built before the fork; `fds` are the sync pipe, exec fifo,
    /// trampoline and console descriptors (-1 for none).
    fn prepare_monitor_exec(
        &self,
        config: &config::ContainerConfig,
        cgroup: &CgroupConfig,
        state: &StateDir,
        req: &CreateRequest,
        console: Option<&Console>,
        fds: [i32; 5],
    ) -> Result<monitor::SelfExec, RuntimeError> {
        let payload = monitor::Payload {
            config: config.clone(),
            cgroup: cgroup.clone(),
            state: state.path().to_path_buf(),
            log_path: req.log_path.clone(),
            monitor_binary: self.monitor_binary.clone(),
            reparent_init: self.reparent_init,
            console_size: console.and_then(|c| c.size).map(|s| (s.rows, s.cols)),
            preserved_fds: req.preserved_fds.clone(),
        };
        monitor::SelfExec::prepare(monitor::EXEC_ARG, &payload, &fds)
            .map_err(io_err("prepare the monitor's exec", &req.id))
    }

    fn oci_state(&self, state: &StateDir, record: &Record) -> OciState {
        let status = state.status(record);
        OciState {
            oci_version: "1.2.0".into(),
            id: record.id.clone(),
            status,
            pid: if status == Status::Stopped { 0 } else { record.pid },
            bundle: record.bundle.clone(),
            created: record.created.clone(),
            annotations: record.annotations.clone(),
        }
    }

    /// Loads the record of a container.
    pub fn record(&self, id: &str) -> Result<Record, RuntimeError> {
        Ok(self.dir(id)?.read_record(id)?)
    }

    /// The OCI state.
    pub fn state(&self, id: &str) -> Result<OciState, RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        Ok(self.oci_state(&dir, &record))
    }

    /// All containers under the run directory.
    pub fn list(&self) -> Result<Vec<OciState>, RuntimeError> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Ok(out) };
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str()
                && let Ok(s) = self.state(id)
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Lets a created container's process exec its program.
    #[tracing::instrument(level = "debug", name = "runtime start", skip(self))]
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (dir, record) = self.record_in(id, Status::Created, "start")?;
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(dir.fifo())
            .map_err(io_err("open exec fifo", id))?;
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut byte = [0u8; 1];
        loop {
            let mut fds = [nix::poll::PollFd::new(fifo.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            match fifo.read(&mut byte) {
                Ok(1) => break,
                Ok(_) | Err(_)
                    if Instant::now() > deadline || !process_alive(record.pid, record.pid_start_time) =>
                {
                    return Err(RuntimeError::Init {
                        id: id.into(),
                        message: "container process did not start".into(),
                    });
                }
                _ => {}
            }
        }
        let _ = std::fs::remove_file(dir.fifo());
        let hooks = &record.config.hooks;
        if !hooks.poststart.is_empty() {
            let state = crate::runtime::hooks::state_json(
                id,
                "running",
                Some(record.pid),
                &record.bundle,
                &record.annotations,
            );
            // The spec: a failed poststart hook is a warning; the container runs on.
            if let Err(e) = crate::runtime::hooks::run_all("poststart", &hooks.poststart, &state) {
                tracing::warn!("container {id}: {e}");
            }
        }
        Ok(())
    }

    /// Freezes every process of a running container (`runc pause`).
    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let (dir, mut record) = self.record_in(id, Status::Running, "pause")?;
        let mut manager = record.cgroup.manager();
        let result = manager.freeze(true);
        // A freezer directory made now is removed by `delete` like the others.
        record.cgroup.created = manager.created().to_vec();
        dir.write_record(&record)?;
        if let Err(e) = result {
            let _ = manager.freeze(false);
            return Err(e.into());
        }
        Ok(())
    }

    /// Thaws a paused container (`runc resume`).
    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let (_, record) = self.record_in(id, Status::Paused, "resume")?;
        Ok(record.cgroup.manager().freeze(false)?)
    }

    /// Sends a signal to the init process (or, with `all`, to every process in the cgroup). A
    /// paused container is thawed after SIGKILL, so it ends (frozen tasks cannot die).
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        let status = dir.status(&record);
        if status == Status::Stopped {
            return Err(RuntimeError::WrongState { id: id.into(), status, op: "kill" });
        }
        if all {
            for pid in record.cgroup.manager().pids()? {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        kill(Pid::from_raw(record.pid), signal).map_err(|e| io_err("signal", id)(e.into()))?;
        if status == Status::Paused && signal == Signal::SIGKILL {
            record.cgroup.manager().freeze(false)?;
        }
        Ok(())
    }

    /// Waits for the container to exit and returns how it ended.
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        // When we forked the monitor ourselves, reaping it is the exact signal that exit.json exists.
        let monitor = Pid::from_raw(record.monitor_pid);
        if timeout.is_none()
            && nix::sys::wait::waitpid(monitor, None).is_ok()
            && let Some(exit) = dir.read_exit()
        {
            return Ok(exit);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pause = Duration::from_micros(500);
        loop {
            if let Some(exit) = dir.read_exit() {
                return Ok(exit);
            }
            if !pid_running(record.monitor_pid) && !process_alive(record.pid, record.pid_start_time) {
                // Monitor gone without a record (killed): report an unknown exit.
                if let Some(exit) = dir.read_exit() {
                    return Ok(exit);
                }
                return Ok(ExitInfo { code: 255, signal: None, oom_killed: false });
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(RuntimeError::Timeout(id.into()));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes the container: with `force`, kills it first; then its cgroup and state.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        let status = dir.status(&record);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(RuntimeError::WrongState { id: id.into(), status, op: "delete without --force" });
        }
        if status != Status::Stopped {
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            if status == Status::Paused {
                record.cgroup.manager().freeze(false)?;
            }
            self.wait(id, Some(Duration::from_secs(10)))?;
        } else if dir.read_exit().is_none() {
            let _ = self.wait(id, Some(Duration::from_secs(2)));
        }
        // Reap the monitor if it is our child (no zombie left behind).
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(record.monitor_pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        record.cgroup.manager().remove()?;
        if let crate::runtime::rootfs::RootfsSource::Dir(rootfs) = &record.config.rootfs
            && let Some(mount_id) = record.host_root_mount
        {
            crate::runtime::rootfs::release_host_root(rootfs, mount_id)
                .map_err(|e| io_err("unmount the rootfs", id)(std::io::Error::other(e.to_string())))?;
        }
        dir.remove()?;
        run_poststop(&record.config, &record.bundle);
        Ok(())
    }

    /// Runs a process inside a running container; returns its exit code.
    pub fn exec(&self, id: &str, req: &ExecRequest) -> Result<i32, RuntimeError> {
        let dir = self.dir(id)?;
        let record = dir.read_record(id)?;
        let status = dir.status(&record);
        if status == Status::Paused && !req.ignore_paused {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                op: "exec (--ignore-paused runs it frozen)",
            });
        }
        if status == Status::Stopped {
            return Err(RuntimeError::WrongState { id: id.into(), status, op: "exec" });
        }
        // A created container's init is still the runtime's binary: a process joining its pid
        // namespace could reach that binary through /proc unless it is the sealed read-only clone
        // (a `run` that skipped sealing, see `exe_seal`).
        if status == Status::Created && !crate::runtime::exe_seal::process_is_sealed(record.pid) {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status,
                op: "exec before it starts (its init runs from an unsealed runtime binary)",
            });
        }
        crate::runtime::exec::run(&record, req)
            .map_err(|e| RuntimeError::Init { id: id.into(), message: e.to_string() })
    }
}

/// Runs the poststop hooks of a container that is gone (a failure is only a warning).
fn run_poststop(config: &config::ContainerConfig, bundle: &Path) {
    let hooks = &config.hooks.poststop;
    if hooks.is_empty() {
        return;
    }
    let state = crate::runtime::hooks::state_json(&config.id, "stopped", None, bundle, &config.annotations);
    if let Err(e) = crate::runtime::hooks::run_all("poststop", hooks, &state) {
        tracing::warn!("container {}: {e}", config.id);
    }
}

/// True if `pid` exists and is not a zombie.
fn pid_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// Path helper for tests and the CLI: the default run directory.
pub fn default_root() -> &'static Path {
    Path::new("/run/rkube/runtime")
}
