//! Host-side pieces of a pod sandbox besides the network: a pinned IPC namespace (shared by the
//! pod's containers, no pause process), the pod's cgroup directories, and the pod tmpfs that holds
//! Secret volumes and `medium: Memory` emptyDirs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

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
