//! Host-side steps for a container with its own user namespace, run by the monitor (as host
//! root): join namespaces given by path before init is cloned (so they stay owned by the host's
//! user namespace), hand the overlay's upper and work dirs to the mapped root, make id-mapped
//! clones of the image layers (so files owned by host root are owned by container root inside),
//! and write init's uid and gid maps right after the clone.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};

use crate::runtime::config::{ContainerConfig, UserNamespace, id_map_text};
use crate::runtime::rootfs::RootfsSource;
use crate::sys::container::{Forked, SingleThreaded, clone_with_namespaces, exit_now, open_idmapped_clone};

/// Errors of the host-side user namespace steps, naming the step and the file.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A step failed.
    #[error("user namespace: {step} {path}: {source}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// File concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Container root (id 0) is not mapped, so nothing on the host can be handed to it.
    #[error("user namespace: container root (id 0) is not mapped by linux.uidMappings and linux.gidMappings")]
    RootNotMapped,
}

fn step(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UsernsError {
    let path = path.to_path_buf();
    move |source| UsernsError::Step { step, path, source }
}

/// Joins the namespaces the spec gives by path, in the calling (monitor) process, so init is
/// cloned into them and its new user namespace does not own them (as runc's nsexec does).
pub fn join_by_path(config: &ContainerConfig) -> Result<(), UsernsError> {
    for ns in &config.namespaces {
        let Some(path) = &ns.path else { continue };
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| step("open namespace", path)(e.into()))?;
        nix::sched::setns(fd, CloneFlags::from_bits_truncate(ns.kind.flag()))
            .map_err(|e| step("join namespace", path)(e.into()))?;
    }
    Ok(())
}

/// Clears the monitor's own supplementary groups before init is cloned, so init never carries a
/// host group (e.g. gid 0) into a namespace where `setgroups` may be denied and could not drop it.
pub fn drop_host_groups() -> Result<(), UsernsError> {
    nix::unistd::setgroups(&[])
        .map_err(|e| step("clear supplementary groups of", Path::new("the monitor"))(e.into()))
}

/// Gives an overlay rootfs's upper and work dirs to the host ids of container root, so the
/// overlay can be mounted and written from inside the user namespace, and makes the mount points
/// for its id-mapped layers. A plain directory rootfs
/// is left as the user prepared it.
pub fn hand_rootfs_to_root(source: &RootfsSource, userns: &UserNamespace) -> Result<(), UsernsError> {
    let RootfsSource::Overlay { lower, upper, work, .. } = source else { return Ok(()) };
    let (Some(uid), Some(gid)) = (userns.host_uid(0), userns.host_gid(0)) else {
        return Err(UsernsError::RootNotMapped);
    };
    for dir in [upper, work] {
        nix::unistd::chown(dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| step("chown", dir)(e.into()))?;
    }
    // Mount points for the id-mapped layers, where container root can reach them.
    for i in 0..lower.len() {
        let dir = crate::runtime::rootfs::staging_dir(upper, i);
        std::fs::create_dir_all(&dir).map_err(step("create", &dir))?;
    }
    Ok(())
}

/// Detached id-mapped clones of an overlay rootfs's lower layers (same order), for init to attach
/// over the layer paths in its own mount namespace before mounting the overlay. Empty for a plain
/// directory, or when the layers' filesystem cannot be id-mapped (EINVAL): the layers then appear
/// owned by `nobody` inside.
pub fn idmapped_layers(source: &RootfsSource, userns: &UserNamespace) -> Result<Vec<OwnedFd>, UsernsError> {
    let RootfsSource::Overlay { lower, .. } = source else { return Ok(Vec::new()) };
    let holder = MapHolder::spawn(userns)?;
    let ns_path = PathBuf::from(format!("/proc/{}/ns/user", holder.pid));
    let ns = nix::fcntl::open(&ns_path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| step("open", &ns_path)(e.into()))?;
    let mut mounts = Vec::with_capacity(lower.len());
    for layer in lower {
        match open_idmapped_clone(layer, ns.as_fd()) {
            Ok(fd) => mounts.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Vec::new()),
            Err(e) => return Err(step("id-map layer", layer)(e)),
        }
    }
    Ok(mounts)
}

/// A child process in a new user namespace with the container's maps, alive until dropped: the
/// id-mapped layer mounts need a namespace carrying the maps before init exists.
struct MapHolder {
    pid: Pid,
    /// Closing it lets the child exit.
    release: Option<OwnedFd>,
}

impl MapHolder {
    fn spawn(userns: &UserNamespace) -> Result<MapHolder, UsernsError> {
        let here = Path::new("the id-map holder");
        let (wait_r, wait_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| step("create pipe for", here)(e.into()))?;
        let single = SingleThreaded::check()
            .ok_or_else(|| step("clone", here)(io::Error::other("the monitor is not single-threaded")))?;
        match clone_with_namespaces(&single, libc::CLONE_NEWUSER).map_err(step("clone", here))? {
            Forked::Child => {
                drop(wait_w);
                let mut byte = [0u8; 1];
                let _ = nix::unistd::read(wait_r.as_fd(), &mut byte);
                exit_now(0)
            }
            Forked::Parent(pid) => {
                drop(wait_r);
                let holder = MapHolder { pid, release: Some(wait_w) };
                write_id_maps(pid, userns)?;
                Ok(holder)
            }
        }
    }
}

impl Drop for MapHolder {
    fn drop(&mut self) {
        drop(self.release.take());
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Writes `/proc/<pid>/uid_map`, then `setgroups` (only when denied), then `gid_map`.
/// Each map is one `write`, as the kernel requires.
pub fn write_id_maps(pid: Pid, userns: &UserNamespace) -> Result<(), UsernsError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: &str| {
        let path = proc_dir.join(name);
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).map_err(step("open", &path))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(step("write", &path))
    };
    write("uid_map", &id_map_text(&userns.uid_map))?;
    if userns.deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("gid_map", &id_map_text(&userns.gid_map))
}
