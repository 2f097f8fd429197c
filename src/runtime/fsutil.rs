//! Path resolution confined to a root directory fd (openat2 `RESOLVE_IN_ROOT`), so a symlink in
//! the container can never redirect an operation onto the host. Mounts then target the opened fd
//! through `/proc/thread-self/fd/N`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// The magic-link path naming an open fd of the calling thread.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
}

/// Strips the leading `/` and rejects `..` so the path is a clean relative path.
pub fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, Component::Normal(_))).collect()
}

/// Opens `path` (relative to `root`, symlinks resolved inside `root`) with `flags`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    crate::sys::openat::open_in_root_across_mounts(root, &relative(path), flags).map_err(io::Error::from)
}

/// Opens `path` with O_PATH, following no symlink at all (for `/proc`-like destinations).
pub fn open_no_symlinks(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, &rel, how).map_err(io::Error::from)
}

/// Resolves `.` and `..` lexically, never above the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Creates every missing directory of `path` inside `root` and returns an O_PATH fd of it.
/// A dangling symlink on the way gets its target created inside `root` (never on the host).
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    mkdir_all_depth(root, path, 0)
}

fn mkdir_all_depth(root: BorrowedFd<'_>, path: &Path, depth: u32) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let rel = normalize(path);
    let mut prefix = PathBuf::new();
    let mut parent = open_in_root(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for comp in rel.components() {
        prefix.push(comp);
        let dir = match open_in_root(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match mkdirat(parent.as_fd(), comp.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                match open_in_root(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        // A dangling symlink: create its target, resolved inside the root.
                        let target = nix::fcntl::readlinkat(parent.as_fd(), comp.as_os_str())?;
                        let base = prefix.parent().unwrap_or(Path::new("")).to_path_buf();
                        let resolved = if Path::new(&target).is_absolute() {
                            PathBuf::from(&target)
                        } else {
                            base.join(&target)
                        };
                        drop(mkdir_all_depth(root, &resolved, depth + 1)?);
                        open_in_root(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY)?
                    }
                    other => other?,
                }
            }
            Err(e) => return Err(e),
        };
        parent = dir;
    }
    Ok(parent)
}

/// Creates an empty regular file at `path` inside `root` if missing; returns an O_PATH fd of it.
pub fn touch_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root, path, OFlag::O_PATH) {
        return Ok(fd);
    }
    let rel = relative(path);
    let parent = mkdir_all_in_root(root, rel.parent().unwrap_or(Path::new("")))?;
    let name = rel.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    drop(openat2(parent.as_fd(), name, how).map_err(io::Error::from)?);
    open_in_root(root, path, OFlag::O_PATH)
}

/// Reads a whole file confined to `root`; `None` when missing.
pub fn read_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<Option<String>> {
    match open_in_root(root, path, OFlag::O_RDONLY) {
        Ok(fd) => Ok(Some(std::io::read_to_string(std::fs::File::from(fd))?)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        let rootfd = std::fs::File::open(&root).unwrap();
        let fd = mkdir_all_in_root(rootfd.as_fd(), Path::new("/escape/made/here")).unwrap();
        drop(fd);
        assert!(root.join("made/here").is_dir());
        touch_in_root(rootfd.as_fd(), Path::new("escape/file")).unwrap();
        assert!(root.join("file").is_file());
        assert!(open_no_symlinks(rootfd.as_fd(), Path::new("escape")).is_err());
        assert_eq!(relative(Path::new("/a/../b/./c")), PathBuf::from("a/b/c"));
    }
}
