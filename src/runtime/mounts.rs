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
    /// A kernel filesystem's destination is a symbolic link (runc's words, which callers match).
    #[error(
        "mount {typ} on {destination}: it is a symbolic link; {typ} must be mounted on ordinary directory"
    )]
    Symlink {
        /// Filesystem type.
        typ: String,
        /// Destination inside the container.
        destination: String,
    },
    /// A mount option is refused.
    #[error("mount on {destination}: {source}")]
    Option {
        /// Destination inside the container.
        destination: String,
        /// The refused option.
        #[source]
        source: OptionError,
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
    /// Recursive attributes (`rro`, `rnosuid`, …) set on the mount and every mount below it
    /// with `mount_setattr(AT_RECURSIVE)`.
    pub recursive: RecursiveAttrs,
}

/// `struct mount_attr`'s `attr_set` and `attr_clr` (`MOUNT_ATTR_*` bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecursiveAttrs {
    /// Attributes to set.
    pub set: u64,
    /// Attributes to clear (with `MOUNT_ATTR__ATIME` when the atime mode changes).
    pub clear: u64,
}

impl RecursiveAttrs {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }
}

/// A mount option this runtime refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Known to runc but not implemented here.
    #[error("mount option {0:?} is not supported")]
    Unsupported(String),
    /// An option that is neither a flag nor meaningful as data (a bind mount has no data).
    #[error("unknown mount option {option:?} for a bind mount")]
    UnknownForBind {
        /// The option.
        option: String,
    },
}

/// `MOUNT_ATTR_*` values (linux/mount.h).
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_ATIME: u64 = 0x70;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// Parses OCI/fstab style options, as runc does (left to right, later options win). Options that
/// are not flags become filesystem data for the kernel to check, except on bind mounts, which
/// take no data: there an unknown option is refused by name rather than silently dropped.
pub fn parse_options(options: &[String], typ: &str) -> Result<ParsedOptions, OptionError> {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = typ == "bind";
    let mut rec = RecursiveAttrs::default();
    let mut rec_atime: Option<u64> = None;
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "bind" => {
                bind = true;
                (MsFlags::empty(), MsFlags::empty())
            }
            "rbind" => {
                bind = true;
                (MsFlags::MS_REC, MsFlags::empty())
            }
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "iversion" => (MsFlags::MS_I_VERSION, MsFlags::empty()),
            "noiversion" => (MsFlags::empty(), MsFlags::MS_I_VERSION),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "nosymfollow" => (MS_NOSYMFOLLOW, MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), MS_NOSYMFOLLOW),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let kind = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let rec_flag = if opt.starts_with('r') { MsFlags::MS_REC } else { MsFlags::empty() };
                propagation |= kind | rec_flag;
                continue;
            }
            other => {
                if let Some((set, clear)) = recursive_attr(other) {
                    rec.set = (rec.set | set) & !clear;
                    rec.clear = (rec.clear | clear) & !set;
                    continue;
                }
                if other == "rnorelatime" {
                    // As runc and crun: it clears MOUNT_ATTR_RELATIME, whose value is 0, so the
                    // mounts keep their atime mode (a mode is one value, not a bit to clear).
                    continue;
                }
                if let Some(atime) = recursive_atime(other) {
                    rec_atime = Some(atime);
                    continue;
                }
                if matches!(other, "remount" | "idmap" | "ridmap" | "tmpcopyup" | "acl") {
                    return Err(OptionError::Unsupported(other.to_string()));
                }
                data.push(other.to_string());
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    if let Some(atime) = rec_atime {
        rec.set = (rec.set & !ATTR_ATIME) | atime;
        rec.clear |= ATTR_ATIME;
    }
    if bind && let Some(option) = data.first() {
        return Err(OptionError::UnknownForBind { option: option.clone() });
    }
    Ok(ParsedOptions { flags, propagation, data: data.join(","), bind, recursive: rec })
}

/// The `(set, clear)` attributes of a recursive flag option (`rro`, `rrw`, `rnosuid`, …).
fn recursive_attr(option: &str) -> Option<(u64, u64)> {
    Some(match option {
        "rro" => (ATTR_RDONLY, 0),
        "rrw" => (0, ATTR_RDONLY),
        "rnosuid" => (ATTR_NOSUID, 0),
        "rsuid" => (0, ATTR_NOSUID),
        "rnodev" => (ATTR_NODEV, 0),
        "rdev" => (0, ATTR_NODEV),
        "rnoexec" => (ATTR_NOEXEC, 0),
        "rexec" => (0, ATTR_NOEXEC),
        "rnodiratime" => (ATTR_NODIRATIME, 0),
        "rdiratime" => (0, ATTR_NODIRATIME),
        "rnosymfollow" => (ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// The atime mode of a recursive atime option. The mode is one value, not bits: `ratime` and
/// `rnostrictatime` go back to the kernel's default (`relatime`).
fn recursive_atime(option: &str) -> Option<u64> {
    Some(match option {
        "rnoatime" => ATTR_NOATIME,
        "rstrictatime" => ATTR_STRICTATIME,
        "rrelatime" | "ratime" | "rnostrictatime" => ATTR_RELATIME,
        _ => return None,
    })
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
    .union(MsFlags::MS_STRICTATIME)
    .union(MS_NOSYMFOLLOW);

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
    let parsed = parse_options(&entry.options, &entry.typ).map_err(|source| MountError::Option {
        destination: entry.destination.display().to_string(),
        source,
    })?;
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
            let existing = open_in_root(root, dest, OFlag::O_PATH | OFlag::O_NOFOLLOW);
            if existing.is_ok_and(|fd| {
                nix::sys::stat::fstat(&fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK)
            }) {
                return Err(MountError::Symlink {
                    typ: entry.typ.clone(),
                    destination: dest.display().to_string(),
                });
            }
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
    set_recursive(root, dest, parsed.recursive, &entry.typ)
}

/// Applies recursive attributes to the mount at `destination` and every mount below it
/// (`mount_setattr(AT_RECURSIVE)`, Linux 5.12).
pub fn set_recursive(
    root: BorrowedFd<'_>,
    destination: &Path,
    attrs: RecursiveAttrs,
    label: &str,
) -> Result<(), MountError> {
    if attrs.is_empty() {
        return Ok(());
    }
    let mounted = open_in_root(root, destination, OFlag::O_PATH).map_err(err(label, destination))?;
    crate::sys::container::set_mount_attrs(mounted.as_fd(), true, attrs.set, attrs.clear)
        .map_err(err(&format!("{label} (recursive attributes)"), destination))
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
        let p = parse_options(&opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]), "tmpfs").unwrap();
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(p.data, "mode=755,size=65536k");
        assert!(!p.bind);
        let p = parse_options(&opts(&["rbind", "ro", "rprivate"]), "none").unwrap();
        assert!(p.bind);
        assert_eq!(p.flags, MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let p = parse_options(&opts(&["ro", "rw"]), "bind").unwrap();
        assert!(p.bind && p.flags.is_empty());
    }

    #[test]
    fn recursive_attributes_as_mount_setattr_wants_them() {
        let p = parse_options(&opts(&["rbind", "rro", "rnosuid", "rnodev", "rnoexec"]), "bind").unwrap();
        assert_eq!(p.recursive, RecursiveAttrs { set: 0xf, clear: 0 });
        assert!(p.data.is_empty());
        let p = parse_options(&opts(&["rbind", "rnosuid", "rsuid"]), "bind").unwrap();
        assert_eq!(p.recursive, RecursiveAttrs { set: 0, clear: ATTR_NOSUID });
        // An atime mode is one value: set it and clear the whole field.
        let p = parse_options(&opts(&["rbind", "rnoatime"]), "bind").unwrap();
        assert_eq!(p.recursive, RecursiveAttrs { set: ATTR_NOATIME, clear: ATTR_ATIME });
        let p = parse_options(&opts(&["rbind", "rnoatime", "rrelatime"]), "bind").unwrap();
        assert_eq!(p.recursive, RecursiveAttrs { set: 0, clear: ATTR_ATIME });
        let p =
            parse_options(&opts(&["rbind", "rstrictatime", "rnodiratime", "rnosymfollow"]), "bind").unwrap();
        assert_eq!(
            p.recursive,
            RecursiveAttrs { set: ATTR_STRICTATIME | ATTR_NODIRATIME | ATTR_NOSYMFOLLOW, clear: ATTR_ATIME }
        );
        assert!(parse_options(&opts(&["rbind"]), "bind").unwrap().recursive.is_empty());
        // rnorelatime clears relatime, whose value is 0: nothing changes (runc, crun).
        assert!(parse_options(&opts(&["rbind", "rnorelatime"]), "bind").unwrap().recursive.is_empty());
        let p = parse_options(&opts(&["rbind", "rnoatime", "rnorelatime"]), "bind").unwrap();
        assert_eq!(p.recursive, RecursiveAttrs { set: ATTR_NOATIME, clear: ATTR_ATIME });
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let err = parse_options(&opts(&["rbind", "rnosiud"]), "bind").unwrap_err();
        assert_eq!(err.to_string(), "unknown mount option \"rnosiud\" for a bind mount");
        let err = parse_options(&opts(&["bind", "idmap"]), "bind").unwrap_err();
        assert_eq!(err.to_string(), "mount option \"idmap\" is not supported");
        assert!(parse_options(&opts(&["ridmap"]), "tmpfs").is_err());
        // Other filesystems get them as data, which the kernel checks.
        assert_eq!(
            parse_options(&opts(&["size=1m", "nr_inodes=4"]), "tmpfs").unwrap().data,
            "size=1m,nr_inodes=4"
        );
    }
}
