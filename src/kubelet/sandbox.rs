//! Host-side pieces of a pod sandbox besides the network: a pinned IPC namespace (shared by the
//! pod's containers), the pod's cgroup directories, the pod tmpfs that holds Secret volumes and
//! `medium: Memory` emptyDirs, and — only for `shareProcessNamespace` — the pause process that is
//! PID 1 of the pod's shared pid namespace (a namespace cannot be pinned by a bind mount for joining
//! as PID 1 would be missing: its first process must reap orphans).

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde::{Deserialize, Serialize};

/// Errors of sandbox steps, naming the step and path.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step} {path}: {source}")]
    Io { step: &'static str, path: PathBuf, source: io::Error },
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { step, path, source }
}

/// Creates a new IPC namespace pinned by a bind mount at `path`.
#[tracing::instrument(level = "debug", name = "ipc namespace", skip_all)]
pub fn create_ipc(path: &Path) -> Result<(), SandboxError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("create", path))?;
    let owned = path.to_path_buf();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<()> {
                unshare(CloneFlags::CLONE_NEWIPC)?;
                mount(
                    Some("/proc/thread-self/ns/ipc"),
                    owned.as_path(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(path);
        return Err(io_err("pin ipc namespace at", path)(e));
    }
    Ok(())
}

/// The pod's pause process: PID 1 of the pod's shared pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Host pid.
    pub pid: i32,
    /// Start time (clock ticks after boot, `/proc/<pid>/stat` field 22): tells a reused pid apart.
    pub start_time: u64,
}

/// The start time of process `pid`, if it exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line (the command name may contain spaces and parentheses).
fn parse_start_time(stat: &str) -> Option<u64> {
    stat.get(stat.rfind(')')? + 1..)?.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.get(s.rfind(')')? + 1..)?.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

impl Pause {
    /// The pid namespace the pod's containers join.
    pub fn pid_namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/pid", self.pid))
    }

    /// Whether the process is still the one that was started.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time) && !is_zombie(self.pid)
    }

    /// Kills it (SIGKILL, only if the pid is still ours), which ends every process left in the
    /// namespace, and waits up to `wait` for it to exit.
    pub fn kill(&self, wait: std::time::Duration) {
        if !self.alive() {
            return;
        }
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        let deadline = std::time::Instant::now() + wait;
        while self.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Reap it when this process started it (else ECHILD): no zombie is left in a long-running agent.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(self.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// Starts `<binary> pause` as PID 1 of a new pid namespace and moves it into the cgroup
/// `<pod cgroup>/pause`. The namespace is created by a short-lived thread (`unshare(CLONE_NEWPID)`
/// only affects that thread's children), so nothing else of this process changes.
pub fn start_pause(binary: &Path, cgroup_root: &Path, pod_cgroup: &str) -> Result<Pause, SandboxError> {
    let spawned = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<u32> {
                unshare(CloneFlags::CLONE_NEWPID)?;
                let child = std::process::Command::new(binary)
                    .arg("pause")
                    .env_clear()
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .process_group(0)
                    .spawn()?;
                // Not waited for: the pause outlives this process and is reaped by the host's init.
                Ok(child.id())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
    });
    let pid = spawned.map_err(io_err("start pause process", binary))? as i32;
    let started = Pause { pid, start_time: start_time(pid).unwrap_or_default() };
    let rel = format!("{}/pause", pod_cgroup.trim_matches('/'));
    for dir in cgroup_dirs(cgroup_root, &rel) {
        let joined =
            fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(e) = joined {
            started.kill(std::time::Duration::from_secs(5));
            return Err(io_err("move pause process into", &dir)(e));
        }
    }
    Ok(started)
}

/// Unmounts (if mounted) and removes a pin or mount point; missing is fine.
pub fn remove_mount(path: &Path) -> Result<(), SandboxError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(io_err("unmount", path)(e.into())),
    }
    let removed = if path.is_dir() { fs::remove_dir(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Mounts a private tmpfs at `dir` (created), for secrets and memory-backed volumes.
pub fn mount_tmpfs(dir: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
        .map_err(|e| io_err("mount tmpfs on", dir)(e.into()))
}

/// The directories of cgroup `rel` under `root`: one per v1 controller, or the one v2 directory.
pub fn cgroup_dirs(root: &Path, rel: &str) -> Vec<PathBuf> {
    if crate::runtime::cgroup::v1::available(root) {
        crate::runtime::cgroup::v1::CONTROLLERS.iter().map(|c| root.join(c).join(rel)).collect()
    } else {
        vec![root.join(rel)]
    }
}

/// Creates the pod's cgroup directories, so that the runtime creates (and removes) only the
/// containers' own directories below them.
#[tracing::instrument(level = "debug", name = "pod cgroup", skip(root))]
pub fn create_pod_cgroup(root: &Path, rel: &str) -> Result<(), SandboxError> {
    for dir in cgroup_dirs(root, rel) {
        fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))?;
    }
    if !crate::runtime::cgroup::v1::available(root) {
        // v2: let the containers below use the controllers (best effort on each level).
        let mut level = root.to_path_buf();
        for part in Path::new(rel).components() {
            let _ = fs::write(level.join("cgroup.subtree_control"), "+cpu +memory +pids");
            level.push(part);
        }
        let _ = fs::write(level.join("cgroup.subtree_control"), "+cpu +memory +pids");
    }
    Ok(())
}

/// A thread warming the kernel's cgroup attach lock (see [`warm_cgroup_attach`]); joined when
/// dropped, so no thread of ours is left in the node's cgroup.
pub struct AttachWarmer(Option<std::thread::JoinHandle<()>>);

impl Drop for AttachWarmer {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// Warms the kernel's cgroup attach lock for a pod's first container. On cgroup v1 the first
/// move of a task between cgroups after a quiet spell waits for an RCU grace period (7–13 ms
/// measured) while holding the cgroup mutex; a move within a grace period after another one is
/// quick. So while a pod is prepared, a short-lived thread moves itself into the node's cgroup
/// `rel` (one hierarchy: the lock is global), and the monitor's move of the container's init
/// finds the lock warm. Cgroup directories are best made after it. Best effort; only on v1, and
/// only once `rel` exists (the node's first pod creates it).
pub fn warm_cgroup_attach(root: &Path, rel: &str) -> AttachWarmer {
    let Some(dir) = cgroup_dirs(root, rel.trim_matches('/')).into_iter().next() else {
        return AttachWarmer(None);
    };
    let tasks = dir.join("tasks");
    if !crate::runtime::cgroup::v1::available(root) || !tasks.exists() {
        return AttachWarmer(None);
    }
    let warm = move || {
        let _ = fs::write(tasks, nix::unistd::gettid().to_string());
    };
    AttachWarmer(std::thread::Builder::new().name("cgroup-warm".into()).spawn(warm).ok())
}

/// Removes the pod's cgroup directories. Container cgroups the runtime has no record of (a start
/// interrupted half-way) are emptied (their processes are the pod's) and removed first.
pub fn remove_pod_cgroup(root: &Path, rel: &str) -> Result<(), SandboxError> {
    for dir in cgroup_dirs(root, rel) {
        for sub in fs::read_dir(&dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
            let sub = sub.path();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let procs = fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                match fs::remove_dir(&sub) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove cgroup", &dir)(e)),
        }
    }
    Ok(())
}

/// Gives `path` and everything below it (not following symlinks) to host uid and gid `id`;
/// a missing `path` is fine.
pub fn chown_tree(path: &Path, id: u32) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::os::unix::fs::lchown(path, Some(id), Some(id))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        let me = Pause {
            pid: std::process::id() as i32,
            start_time: start_time(std::process::id() as i32).unwrap(),
        };
        assert!(me.alive());
        assert!(!Pause { start_time: me.start_time + 1, ..me }.alive(), "a reused pid is not ours");
        assert_eq!(me.pid_namespace(), PathBuf::from(format!("/proc/{}/ns/pid", me.pid)));
    }
}
