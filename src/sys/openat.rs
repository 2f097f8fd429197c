//! Path resolution confined to a directory fd, and the few `*at`/xattr calls nix lacks.
//!
//! Everything that unpacks untrusted trees (image layers) goes through [`open_in_root`]: the kernel
//! resolves the path as if the directory fd were `/` (`RESOLVE_IN_ROOT`), so `..`, absolute paths and
//! symlinks can never leave it, and magic links (`/proc/self/fd/N`) are refused.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` relative to `root` with `root` acting as `/` for every component, symlink and `..`.
///
/// `flags` get `O_CLOEXEC` added. Magic links are refused and mount points are not crossed.
pub fn open_in_root(root: impl AsFd, path: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    open_confined(root, path, flags, mode, ResolveFlag::RESOLVE_NO_XDEV)
}

/// Like [`open_in_root`], but crossing mount points below `root` (a container rootfs with `/proc`,
/// `/dev` and volumes already mounted in it).
pub fn open_in_root_across_mounts(root: impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    open_confined(root, path, flags, Mode::empty(), ResolveFlag::empty())
}

fn open_confined(
    root: impl AsFd,
    path: &Path,
    flags: OFlag,
    mode: Mode,
    extra: ResolveFlag,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra);
    // An empty path means the root itself.
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    loop {
        match openat2(root.as_fd(), path, how) {
            // openat2 returns EAGAIN when a concurrent rename raced the lookup; retry.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn c_name(name: &str) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

/// Sets extended attribute `name` on the open file `fd`.
pub fn fsetxattr(fd: impl AsFd, name: &str, value: &[u8]) -> Result<(), Errno> {
    let name = c_name(name)?;
    // SAFETY: `name` is a valid NUL-terminated string and `value` a valid slice for the duration of
    // the call; the kernel only reads from both. The fd is borrowed and stays open.
    let rc = unsafe {
        libc::fsetxattr(fd.as_fd().as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    Errno::result(rc).map(drop)
}

/// Reads extended attribute `name` of the open file `fd`; `None` when it is not set.
pub fn fgetxattr(fd: impl AsFd, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let name = c_name(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is a writable buffer of `buf.len()` bytes that outlives the call; the kernel
        // writes at most that many bytes. `name` is NUL-terminated.
        let rc = unsafe {
            libc::fgetxattr(fd.as_fd().as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ENODATA) => return Ok(None),
            Err(Errno::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// Reads extended attribute `name` of `path` without following a final symlink.
pub fn lgetxattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let name = c_name(name)?;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: `path` and `name` are NUL-terminated; `buf` is writable for `buf.len()` bytes and
    // outlives the call.
    let rc = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    match Errno::result(rc) {
        Ok(n) => {
            buf.truncate(n as usize);
            Ok(Some(buf))
        }
        Err(Errno::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lists the extended attribute names of `path` without following a final symlink.
pub fn llistxattr(path: &Path) -> Result<Vec<String>, Errno> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `path` is NUL-terminated; `buf` is writable for `buf.len()` bytes and outlives the call.
        let rc = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(n as usize);
                let names = buf.split(|b| *b == 0).filter(|n| !n.is_empty());
                return Ok(names.map(|n| String::from_utf8_lossy(n).into_owned()).collect());
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Err(Errno::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_dir(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_DIRECTORY | OFlag::O_PATH, Mode::empty()).unwrap()
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(outer.path().join("secret"), b"outside").unwrap();
        std::fs::write(root.join("secret"), b"inside").unwrap();
        symlink("/", root.join("up")).unwrap();
        symlink("../../..", root.join("etc/dots")).unwrap();
        let fd = open_dir(&root);
        for p in ["../secret", "/../secret", "up/secret", "etc/dots/secret", "/secret"] {
            let f = open_in_root(&fd, Path::new(p), OFlag::O_RDONLY, Mode::empty()).unwrap();
            let got = std::fs::read_to_string(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
            assert_eq!(got, "inside", "{p}");
        }
    }

    #[test]
    fn magic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/proc/self/root", dir.path().join("m")).unwrap();
        let fd = open_dir(dir.path());
        // The symlink resolves in-root to "<root>/proc/self/root", which does not exist: never the host.
        assert!(open_in_root(&fd, Path::new("m/etc"), OFlag::O_RDONLY, Mode::empty()).is_err());
    }
}
