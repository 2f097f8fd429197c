//! Host-side steps for a container with its own user namespace, run by the monitor (as host
//! root): join namespaces given by path before init is cloned (so they stay owned by the host's
//! user namespace), hand the overlay's upper and work dirs to the mapped root, and write init's
//! uid and gid maps right after the clone.

use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};

use crate::runtime::config::{ContainerConfig, UserNamespace, id_map_text};
use crate::runtime::rootfs::RootfsSource;

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
/// overlay can be mounted and written from inside the user namespace. A plain directory rootfs
/// is left as the user prepared it.
pub fn hand_rootfs_to_root(source: &RootfsSource, userns: &UserNamespace) -> Result<(), UsernsError> {
    let RootfsSource::Overlay { upper, work, .. } = source else { return Ok(()) };
    let (Some(uid), Some(gid)) = (userns.host_uid(0), userns.host_gid(0)) else {
        return Err(UsernsError::RootNotMapped);
    };
    for dir in [upper, work] {
        nix::unistd::chown(dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| step("chown", dir)(e.into()))?;
    }
    Ok(())
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
