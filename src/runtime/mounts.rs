//! Mount entries: parsing OCI mount options into flags (pure) and performing one mount with the
//! destination opened inside the rootfs fd (never by host path).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};

use crate::runtime::fsutil::{fd_path, mkdir_all_in_root, open_in_root, open_no_symlinks, touch_in_root};

/// Errors while mounting, naming the destination.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount step failed.
    #[error("mount {what} on {destination}: {source}")]
    Mount {
        /// What was being mounted (type or source).
        what: String,
        /// Destination inside the container.
        destination: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// One mount from the spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// Destination inside the container.
    pub destination: PathBuf,
    /// Filesystem type (`bind` or empty for binds).
    pub typ: String,
    /// Source (host path for binds, relative paths are relative to the bundle).
    pub source: Option<PathBuf>,
    /// Options (`ro`, `nosuid`, `rbind`, `mode=755`, …).
    pub options: Vec<String>,
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    /// Flags for the mount call.
    pub flags: MsFlags,
    /// Propagation flags applied afterwards.
    pub propagation: MsFlags,
    /// Filesystem-specific data.
    pub data: String,
    /// A bind mount.
    pub bind: bool,
}

/// Parses OCI/fstab style options.
pub fn parse_options(options: &[String], typ: &str) -> ParsedOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = typ == "bind";
    for opt in options {
        match opt.as_str() {
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MsFlags::MS_REC
            }
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => flags &= !MsFlags::MS_SYNCHRONOUS,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "mand" | "nomand" | "defaults" | "atime" | "diratime" | "norelatime" | "nostrictatime" => {}
            "private" => propagation |= MsFlags::MS_PRIVATE,
            "rprivate" => propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "shared" => propagation |= MsFlags::MS_SHARED,
            "rshared" => propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC,
            "slave" => propagation |= MsFlags::MS_SLAVE,
            "rslave" => propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "unbindable" => propagation |= MsFlags::MS_UNBINDABLE,
            "runbindable" => propagation |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    ParsedOptions { flags, propagation, data: data.join(","), bind }
}

fn err(what: &str, destination: &Path) -> impl FnOnce(io::Error) -> MountError {
    let what = what.to_string();
    let destination = destination.display().to_string();
    move |source| MountError::Mount { what, destination, source }
}

fn sys_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    mount(source, target, fstype, flags, data).map_err(io::Error::from)
}

/// Remount flags that can be changed on a bind mount.
const REMOUNT_MASK: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// The flags a user namespace cannot change on a mount it did not create (the kernel locks them).
const LOCKED_MASK: MsFlags =
    MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);
/// The atime flags, locked as one setting.
const ATIME_MASK: MsFlags = MsFlags::MS_NOATIME.union(MsFlags::MS_RELATIME).union(MsFlags::MS_STRICTATIME);

/// The mount flags `mounted` has now, from `fstatvfs`.
fn current_flags(mounted: BorrowedFd<'_>) -> io::Result<MsFlags> {
    use nix::sys::statvfs::FsFlags;
    let flags = nix::sys::statvfs::fstatvfs(mounted)?.flags();
    let mut out = MsFlags::empty();
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(st) {
            out |= ms;
        }
    }
    Ok(out)
}

/// The remount flags to retry with inside a user namespace: `wanted` plus the mount's current
/// locked flags, and its current atime setting instead of the wanted one.
pub fn with_locked_flags(wanted: MsFlags, current: MsFlags) -> MsFlags {
    let atime =
        if (current & ATIME_MASK).is_empty() { MsFlags::MS_STRICTATIME } else { current & ATIME_MASK };
    (wanted & !ATIME_MASK) | (current & LOCKED_MASK) | atime | (current & MsFlags::MS_NODIRATIME)
}

/// Remounts the bind mount `mounted` with `flags`. Inside a user namespace the kernel refuses to
/// clear flags locked on a mount inherited from the host (EPERM); then retry keeping them.
pub fn remount_bind(mounted: BorrowedFd<'_>, flags: MsFlags) -> io::Result<()> {
    let target = fd_path(mounted);
    let remount =
        |f: MsFlags| sys_mount(None, &target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | f, None);
    match remount(flags) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            remount(with_locked_flags(flags, current_flags(mounted)?))
        }
        other => other,
    }
}

/// Bind-mounts the already opened `source` onto `destination` in `root`, then applies flags.
pub fn bind_fd(
    root: BorrowedFd<'_>,
    source: BorrowedFd<'_>,
    destination: &Path,
    flags: MsFlags,
    label: &str,
) -> Result<(), MountError> {
    let is_dir =
        nix::sys::stat::fstat(source).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(true);
    let target = if is_dir { mkdir_all_in_root(root, destination) } else { touch_in_root(root, destination) }
        .map_err(err(label, destination))?;
    sys_mount(
        Some(&fd_path(source)),
        &fd_path(target.as_fd()),
        None,
        MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
        None,
    )
    .map_err(err(label, destination))?;
    let extra = flags & REMOUNT_MASK;
    if !extra.is_empty() {
        let mounted = open_in_root(root, destination, OFlag::O_PATH).map_err(err(label, destination))?;
        remount_bind(mounted.as_fd(), extra).map_err(err(label, destination))?;
    }
    Ok(())
}

/// Performs one spec mount inside `root`. `bundle` anchors relative bind sources.
pub fn mount_entry(root: BorrowedFd<'_>, entry: &MountSpec, bundle: &Path) -> Result<(), MountError> {
    let parsed = parse_options(&entry.options, &entry.typ);
    let dest = &entry.destination;
    if parsed.bind {
        let src = entry.source.clone().unwrap_or_default();
        let src = if src.is_absolute() { src } else { bundle.join(src) };
        let label = src.display().to_string();
        let src_fd = nix::fcntl::open(&src, OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| err(&label, dest)(io::Error::from(e)))?;
        bind_fd(root, src_fd.as_fd(), dest, parsed.flags, &label)?;
    } else {
        // Kernel filesystems: the destination must not be a symlink at all (CVE-2019-19921 class).
        let strict = matches!(entry.typ.as_str(), "proc" | "sysfs");
        let target = if strict {
            mkdir_all_in_root(root, dest)
                .and_then(|_| open_no_symlinks(root, dest))
                .map_err(err(&entry.typ, dest))?
        } else {
            mkdir_all_in_root(root, dest).map_err(err(&entry.typ, dest))?
        };
        let source = entry.source.clone().unwrap_or_else(|| PathBuf::from(&entry.typ));
        let data = (!parsed.data.is_empty()).then_some(parsed.data.as_str());
        let result = sys_mount(
            Some(&source),
            &fd_path(target.as_fd()),
            Some(&entry.typ),
            parsed.flags & !MsFlags::MS_REC,
            data,
        );
        match result {
            Ok(()) => {}
            // sysfs needs a new network namespace; with the host's, bind the host /sys read-only.
            Err(e) if entry.typ == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
                let src =
                    nix::fcntl::open("/sys", OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                        .map_err(|e| err("sysfs", dest)(io::Error::from(e)))?;
                bind_fd(root, src.as_fd(), dest, parsed.flags | MsFlags::MS_REC, "sysfs")?;
            }
            Err(e) => return Err(err(&entry.typ, dest)(e)),
        }
    }
    if !parsed.propagation.is_empty() {
        let mounted = open_in_root(root, dest, OFlag::O_PATH).map_err(err(&entry.typ, dest))?;
        sys_mount(None, &fd_path(mounted.as_fd()), None, parsed.propagation, None)
            .map_err(err(&entry.typ, dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn locked_flags_are_kept_on_retry() {
        let host = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME;
        let wanted = MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME;
        let retry = with_locked_flags(wanted, host);
        assert_eq!(
            retry,
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_RELATIME
        );
        assert_eq!(
            with_locked_flags(MsFlags::MS_RDONLY, MsFlags::empty()),
            MsFlags::MS_RDONLY | MsFlags::MS_STRICTATIME
        );
    }

    #[test]
    fn parses_flags_and_data() {
        let p = parse_options(&opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]), "tmpfs");
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        assert!(!p.bind);
        let p = parse_options(&opts(&["rbind", "ro", "rprivate"]), "none");
        assert!(p.bind);
        assert_eq!(p.flags, MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let p = parse_options(&opts(&["ro", "rw"]), "bind");
        assert!(p.bind && p.flags.is_empty());
    }
}
