//! The container's root filesystem: propagation, overlay, spec mounts, device nodes, `pivot_root`,
//! masked and read-only paths, read-only root. Runs inside the init process's mount namespace.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstat, makedev, mknodat};

use crate::runtime::fsutil::{fd_path, mkdir_all_in_root, open_in_root};
use crate::runtime::mounts::{
    MountError, MountSpec, bind_fd, mount_entry, parse_options, remount_bind, set_recursive,
};

/// Errors while building the root filesystem, naming the step and path.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A generic step failed.
    #[error("{step} {path}: {source}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Path concerned.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A mount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `/dev/null` is not the 1:3 character device, so masking with it is unsafe.
    #[error("/dev/null in the container is not the null device; refusing to mask with it")]
    FakeDevNull,
}

fn step(step: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |source| RootfsError::Step { step, path, source }
}

fn nix_step(s: &'static str, path: impl AsRef<Path>) -> impl FnOnce(nix::Error) -> RootfsError {
    let f = step(s, path);
    move |e| f(io::Error::from(e))
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootfsSource {
    /// A plain directory (an OCI bundle's `root.path`).
    Dir(PathBuf),
    /// An overlay of image layers (topmost first) with a per-container upper and work dir,
    /// mounted at `target` inside the container's mount namespace.
    Overlay {
        /// Read-only layers, topmost first.
        lower: Vec<PathBuf>,
        /// Writable upper directory.
        upper: PathBuf,
        /// overlayfs work directory (same filesystem as `upper`).
        work: PathBuf,
        /// Empty directory to mount the overlay on.
        target: PathBuf,
    },
}

/// A device node to create in `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceNode {
    /// Path inside the container (e.g. `/dev/null`).
    pub path: PathBuf,
    /// `c`, `b` or `p`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
}

/// The default device nodes every container gets.
pub fn default_devices() -> Vec<DeviceNode> {
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
        .into_iter()
        .map(|(name, major, minor)| DeviceNode {
            path: PathBuf::from("/dev").join(name),
            kind: 'c',
            major,
            minor,
            mode: 0o666,
            uid: None,
            gid: None,
        })
        .collect()
}

/// The overlayfs mount data for the layers (`userxattr` for a mount inside a user namespace).
pub fn overlay_data(lower: &[PathBuf], upper: &Path, work: &Path, userxattr: bool) -> String {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if userxattr { data + ",userxattr" } else { data }
}

/// Where the id-mapped clone of lower layer `i` is attached for an overlay whose upper dir is
/// `upper` (a sibling `lower/<i>`, made by the monitor).
pub fn staging_dir(upper: &Path, i: usize) -> PathBuf {
    upper.with_file_name("lower").join(i.to_string())
}

/// Makes the host mounts non-propagating into our namespace, mounts the overlay if any, binds the
/// rootfs onto itself and returns an fd of the new root plus its path. Inside a user namespace
/// the overlay keeps its own metadata in `user.overlay.*` xattrs (`trusted.*` needs host root),
/// and `idmapped_layers` (if any) are attached over the lower layer paths first.
///
/// Without a mount namespace of its own (`own_namespace` false) the caller's `/` keeps its
/// propagation, and the rootfs bind is made private so the container's mounts below it do not
/// spread to other namespaces; [`release_host_root`] removes it all.
pub fn prepare_root(
    source: &RootfsSource,
    propagation: MsFlags,
    in_userns: bool,
    idmapped_layers: &[OwnedFd],
    own_namespace: bool,
) -> Result<(OwnedFd, PathBuf), RootfsError> {
    if own_namespace {
        // An unbindable tree could not be bound below: that one is applied after the pivot.
        let before = if propagation == MsFlags::MS_UNBINDABLE { MsFlags::MS_PRIVATE } else { propagation };
        mount(None::<&str>, "/", None::<&str>, before | MsFlags::MS_REC, None::<&str>)
            .map_err(nix_step("set propagation of", "/"))?;
    }
    let path = match source {
        RootfsSource::Dir(p) => p.clone(),
        RootfsSource::Overlay { lower, upper, work, target } => {
            // The layers' own paths may lie under directories only host root can search (the
            // image store is 0700), so the id-mapped clones are attached on the staging dirs
            // beside the upper dir instead. Our mounts no longer propagate to the host: this only
            // changes our view.
            let staged: Vec<PathBuf> = (0..idmapped_layers.len()).map(|i| staging_dir(upper, i)).collect();
            for (dir, mounted) in staged.iter().zip(idmapped_layers) {
                crate::sys::container::move_mount_onto(mounted.as_fd(), dir)
                    .map_err(step("attach id-mapped layer", dir))?;
            }
            let lower = if staged.is_empty() { lower } else { &staged };
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(overlay_data(lower, upper, work, in_userns).as_str()),
            )
            .map_err(nix_step("mount overlay on", target))?;
            target.clone()
        }
    };
    if own_namespace && propagation == MsFlags::MS_SHARED {
        // pivot_root refuses a shared new root or parent (runc's rootfsParentMountPrivate): the
        // mount holding the rootfs becomes private, so the bind below is too; `/` is made
        // shared again after the pivot.
        let parent = mount_point_of(&path)?;
        mount(None::<&str>, &parent, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(nix_step("make the rootfs's parent mount private", &parent))?;
    }
    mount(Some(&path), &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(nix_step("bind rootfs", &path))?;
    if !own_namespace
        && let Err(e) =
            mount(None::<&str>, &path, None::<&str>, MsFlags::MS_PRIVATE | MsFlags::MS_REC, None::<&str>)
    {
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        return Err(nix_step("make rootfs private", &path)(e));
    }
    let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(nix_step("open rootfs", &path))?;
    Ok((fd, path))
}

/// Mounts every spec entry; `cgroup` entries get the container's own cgroup dirs (`cgroups`).
pub fn mount_all(
    root: BorrowedFd<'_>,
    mounts: &[MountSpec],
    bundle: &Path,
    cgroups: &[(String, PathBuf)],
) -> Result<(), RootfsError> {
    for entry in mounts {
        if entry.typ == "cgroup" || entry.typ == "cgroup2" {
            mount_cgroups(root, entry, cgroups)?;
            let parsed = parse_options(&entry.options, &entry.typ).map_err(|source| MountError::Option {
                destination: entry.destination.display().to_string(),
                source,
            })?;
            set_recursive(root, &entry.destination, parsed.recursive, &entry.typ)?;
        } else {
            mount_entry(root, entry, bundle)?;
        }
    }
    Ok(())
}

/// `/sys/fs/cgroup`: a tmpfs with each v1 controller dir of the container bound read-only,
/// or (v2) the container's cgroup dir bound read-only.
fn mount_cgroups(
    root: BorrowedFd<'_>,
    entry: &MountSpec,
    cgroups: &[(String, PathBuf)],
) -> Result<(), RootfsError> {
    let dest = &entry.destination;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let bind_dir = |sub: &Path, host: &Path| -> Result<(), RootfsError> {
        let src = nix::fcntl::open(host, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(nix_step("open cgroup", host))?;
        bind_fd(root, src.as_fd(), sub, ro, "cgroup")?;
        Ok(())
    };
    match cgroups {
        [(name, host)] if name.is_empty() => bind_dir(dest, host),
        _ => {
            let target = mkdir_all_in_root(root, dest).map_err(step("create", dest))?;
            mount(
                Some("tmpfs"),
                &fd_path(target.as_fd()),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(nix_step("mount tmpfs on", dest))?;
            for (name, host) in cgroups {
                bind_dir(&dest.join(name), host)?;
            }
            let mounted = open_in_root(root, dest, OFlag::O_PATH).map_err(step("open", dest))?;
            mount(
                None::<&str>,
                &fd_path(mounted.as_fd()),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
                None::<&str>,
            )
            .map_err(nix_step("remount read-only", dest))?;
            Ok(())
        }
    }
}

/// Creates device nodes and the standard `/dev` symlinks. Inside a user namespace, where
/// `mknod` is not allowed, the host's node at the same path is bind-mounted instead (as runc does).
pub fn create_devices(
    root: BorrowedFd<'_>,
    devices: &[DeviceNode],
    bind_from_host: bool,
) -> Result<(), RootfsError> {
    for dev in devices {
        if bind_from_host {
            bind_host_device(root, dev)?;
            continue;
        }
        let parent_path = dev.path.parent().unwrap_or(Path::new("/dev"));
        let parent = mkdir_all_in_root(root, parent_path).map_err(step("create", parent_path))?;
        let name = dev.path.file_name().unwrap_or_default();
        let kind = match dev.kind {
            'b' => SFlag::S_IFBLK,
            'p' => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        match mknodat(
            parent.as_fd(),
            name,
            kind,
            Mode::from_bits_truncate(dev.mode),
            makedev(dev.major, dev.minor),
        ) {
            Ok(()) => {}
            Err(nix::Error::EEXIST) => continue,
            Err(e) => return Err(nix_step("create device", &dev.path)(e)),
        }
        if dev.uid.is_some() || dev.gid.is_some() {
            nix::unistd::fchownat(
                parent.as_fd(),
                name,
                dev.uid.map(nix::unistd::Uid::from_raw),
                dev.gid.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(nix_step("chown device", &dev.path))?;
        }
    }
    let dev_dir = mkdir_all_in_root(root, Path::new("/dev")).map_err(step("create", "/dev"))?;
    for (target, link) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        match nix::unistd::symlinkat(target, dev_dir.as_fd(), link) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(nix_step("create symlink", format!("/dev/{link}"))(e)),
        }
    }
    Ok(())
}

/// Bind-mounts the host's device node at `dev.path` onto the same path in `root`.
fn bind_host_device(root: BorrowedFd<'_>, dev: &DeviceNode) -> Result<(), RootfsError> {
    let host =
        nix::fcntl::open(&dev.path, OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
            .map_err(nix_step("open host device", &dev.path))?;
    let st = fstat(host.as_fd()).map_err(nix_step("stat host device", &dev.path))?;
    let kind = match dev.kind {
        'b' => libc::S_IFBLK,
        'p' => libc::S_IFIFO,
        _ => libc::S_IFCHR,
    };
    let same_node = st.st_mode & libc::S_IFMT == kind
        && (kind == libc::S_IFIFO || st.st_rdev == makedev(dev.major, dev.minor));
    if !same_node {
        return Err(step("bind host device", &dev.path)(io::Error::other(format!(
            "the host's node is not {} {}:{}",
            dev.kind, dev.major, dev.minor
        ))));
    }
    bind_fd(root, host.as_fd(), &dev.path, MsFlags::empty(), &dev.path.display().to_string())?;
    Ok(())
}

/// The mount point of the mount that holds `path` (the longest mount point above it).
fn mount_point_of(path: &Path) -> Result<PathBuf, RootfsError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(step("read", "/proc/self/mountinfo"))?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| path.starts_with(p))
        .max_by_key(|p| p.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// After the pivot: `/` shared or unbindable (with what is below it), as `rootfsPropagation`
/// asks; the other kinds were set before and hold already.
pub fn apply_root_propagation(propagation: MsFlags) -> Result<(), RootfsError> {
    if propagation == MsFlags::MS_SHARED || propagation == MsFlags::MS_UNBINDABLE {
        mount(None::<&str>, "/", None::<&str>, propagation | MsFlags::MS_REC, None::<&str>)
            .map_err(nix_step("set propagation of", "/"))?;
    }
    Ok(())
}

/// `pivot_root` into `root` (the same directory as new and old root), then detach the old root.
pub fn pivot(root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    let dir =
        nix::fcntl::openat(root, ".", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(nix_step("open", "new root"))?;
    nix::unistd::fchdir(dir.as_fd()).map_err(nix_step("chdir", "new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(nix_step("pivot_root", "new root"))?;
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .map_err(nix_step("make old root slave", "/"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_step("detach old root", "/"))?;
    nix::unistd::chdir("/").map_err(nix_step("chdir", "/"))?;
    Ok(())
}

/// Without a mount namespace of its own: `chroot` into `root` (`pivot_root` would move the
/// caller's whole namespace), as runc and crun do.
pub fn chroot_into(root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    nix::unistd::fchdir(root).map_err(nix_step("chdir", "new root"))?;
    nix::unistd::chroot(".").map_err(nix_step("chroot", "new root"))?;
    nix::unistd::chdir("/").map_err(nix_step("chdir", "/"))?;
    Ok(())
}

/// The id of the topmost mount at `path` in this mount namespace (the rootfs bind init made
/// there, for a container without a mount namespace of its own), if one is there.
pub fn top_mount_id(path: &Path) -> Result<Option<u64>, RootfsError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(step("read", "/proc/self/mountinfo"))?;
    Ok(mounts_at(&info, path).last().copied())
}

/// Ids of the mounts whose mount point is `path`, bottom to top (`/proc/self/mountinfo` lists
/// them in the order they were stacked; its paths escape space, tab, newline and `\` in octal).
fn mounts_at(mountinfo: &str, path: &Path) -> Vec<u64> {
    let mut escaped = String::new();
    for c in path.display().to_string().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => escaped.push_str(&format!("\\{:03o}", c as u32)),
            c => escaped.push(c),
        }
    }
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[4] == escaped).then(|| f[0].parse().ok()).flatten()
        })
        .collect()
}

/// Detaches the rootfs bind (and every container mount below it) that a container without a
/// mount namespace of its own left in the caller's namespace: only while the mount with the id
/// recorded at create is still at `rootfs`, so nothing else is ever unmounted.
pub fn release_host_root(rootfs: &Path, mount_id: u64) -> Result<(), RootfsError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(step("read", "/proc/self/mountinfo"))?;
    if mounts_at(&info, rootfs).last() == Some(&mount_id) {
        umount2(rootfs, MntFlags::MNT_DETACH).map_err(nix_step("unmount", rootfs))?;
    }
    Ok(())
}

fn open_root() -> Result<OwnedFd, RootfsError> {
    nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(nix_step("open", "/"))
}

/// Masks paths (after pivot): files get the verified `/dev/null` bound over them, directories a
/// read-only empty tmpfs. Missing paths are skipped.
pub fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open_root()?;
    let null = open_in_root(root.as_fd(), Path::new("/dev/null"), OFlag::O_PATH | OFlag::O_NOFOLLOW)
        .map_err(step("open", "/dev/null"))?;
    let st = fstat(null.as_fd()).map_err(nix_step("stat", "/dev/null"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != makedev(1, 3) {
        return Err(RootfsError::FakeDevNull);
    }
    for path in paths {
        let target = match open_in_root(root.as_fd(), Path::new(path), OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(step("open masked path", path)(e)),
        };
        let is_dir =
            fstat(target.as_fd()).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        let result = if is_dir {
            mount(Some("tmpfs"), &fd_path(target.as_fd()), Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
        } else {
            mount(
                Some(&fd_path(null.as_fd())),
                &fd_path(target.as_fd()),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(nix_step("mask", path))?;
    }
    Ok(())
}

/// Makes each path read-only by binding it onto itself and remounting read-only.
pub fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    let root = open_root()?;
    for path in paths {
        let target = match open_in_root(root.as_fd(), Path::new(path), OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(step("open read-only path", path)(e)),
        };
        bind_fd(
            root.as_fd(),
            target.as_fd(),
            Path::new(path),
            MsFlags::MS_REC
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            path,
        )?;
    }
    Ok(())
}

/// Remounts `/` read-only (after pivot), keeping flags locked by a user namespace.
pub fn readonly_root() -> Result<(), RootfsError> {
    match mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        Err(nix::Error::EPERM) => {
            let root = open_root()?;
            remount_bind(root.as_fd(), MsFlags::MS_RDONLY).map_err(step("remount read-only", "/"))
        }
        other => other.map_err(nix_step("remount read-only", "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_at_a_path_are_found_by_mount_point_bottom_to_top() {
        // The rootfs bind of a container without its own mount namespace, as a nested container
        // sees it: the mount's root is the host path, not the path here.
        let info = "\
22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw
80 22 0:21 /srv/outer/tmp /tmp rw - ext4 /dev/vda rw
91 80 0:21 /srv/outer/tmp/b/rootfs /tmp/b/rootfs rw - ext4 /dev/vda rw
92 91 0:5 / /tmp/b/rootfs/proc rw - proc proc rw
93 91 0:21 /srv/outer/tmp/b/rootfs /tmp/b/rootfs rw - ext4 /dev/vda rw
94 22 0:30 / /tmp/a\\040b rw - tmpfs tmpfs rw
";
        assert_eq!(mounts_at(info, Path::new("/tmp/b/rootfs")), [91, 93]);
        assert_eq!(mounts_at(info, Path::new("/tmp/a b")), [94]);
        assert!(mounts_at(info, Path::new("/tmp/b")).is_empty());
    }

    #[test]
    fn overlay_data_lists_layers_top_first() {
        let data =
            overlay_data(&["/l/2".into(), "/l/1".into()], Path::new("/c/up"), Path::new("/c/work"), false);
        assert_eq!(data, "lowerdir=/l/2:/l/1,upperdir=/c/up,workdir=/c/work");
        let data = overlay_data(&["/l".into()], Path::new("/u"), Path::new("/w"), true);
        assert_eq!(data, "lowerdir=/l,upperdir=/u,workdir=/w,userxattr");
    }

    #[test]
    fn default_devices_are_the_six_standard_nodes() {
        let devs = default_devices();
        assert_eq!(devs.len(), 6);
        assert!(devs.iter().any(|d| d.path == Path::new("/dev/null") && (d.major, d.minor) == (1, 3)));
    }
}
