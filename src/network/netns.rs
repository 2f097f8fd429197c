//! Network namespaces pinned by a bind mount (no pause process), and running code inside one.
//!
//! A namespace is created on a dedicated OS thread that `unshare(CLONE_NEWNET)`s and bind-mounts
//! `/proc/thread-self/ns/net` onto a file; the mount keeps the namespace alive after the thread exits.
//! Work inside a namespace also runs on a dedicated thread that `setns()`es, so the caller's
//! threads (and any async runtime's pool) never change namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Errors from creating, entering or deleting a pinned network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns {path}: create pin directory: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("netns {path}: create pin file: {source}")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("netns {path}: unshare network namespace: {source}")]
    Unshare { path: PathBuf, source: nix::Error },
    #[error("netns {path}: bind-mount namespace: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("netns {path}: unmount: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("netns {path}: remove pin file: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("netns {path}: open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("netns {path}: enter (setns): {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("netns {path}: worker thread panicked")]
    ThreadPanicked { path: PathBuf },
    #[error("netns id {id:?} is not a valid name (use letters, digits, '-', '_' or '.')")]
    BadId { id: String },
}

/// Pinned network namespaces stored as files in one directory (default `/run/rkube/netns`).
#[derive(Debug, Clone)]
pub struct NetnsStore {
    dir: PathBuf,
}

impl NetnsStore {
    /// A store whose pin files live in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding the pin files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the pin file for `id` (whether or not it exists).
    pub fn path(&self, id: &str) -> Result<PathBuf, NetnsError> {
        validate_id(id)?;
        Ok(self.dir.join(id))
    }

    /// True if `id` is pinned (its file is a mounted namespace).
    pub fn exists(&self, id: &str) -> bool {
        self.path(id).map(|p| is_netns_mount(&p)).unwrap_or(false)
    }

    /// Creates and pins a new network namespace for `id`; if it is already pinned, returns its path.
    #[tracing::instrument(level = "debug", name = "netns", skip(self))]
    pub fn create(&self, id: &str) -> Result<PathBuf, NetnsError> {
        let path = self.path(id)?;
        if is_netns_mount(&path) {
            return Ok(path);
        }
        fs::create_dir_all(&self.dir)
            .map_err(|source| NetnsError::CreateDir { path: self.dir.clone(), source })?;
        create_pinned(&path)?;
        Ok(path)
    }

    /// Unmounts and removes the pin of `id`; succeeds if it is already gone.
    pub fn delete(&self, id: &str) -> Result<(), NetnsError> {
        delete_pinned(&self.path(id)?)
    }

    /// Makes the pin directory a shared mount (bound onto itself first if it is not a mount
    /// point), as iproute2 does for `/run/netns`, so pins made later propagate into mount
    /// namespaces created earlier and unmounts propagate too. Returns true if it added the bind mount.
    pub fn make_dir_shared(&self) -> Result<bool, NetnsError> {
        fs::create_dir_all(&self.dir)
            .map_err(|source| NetnsError::CreateDir { path: self.dir.clone(), source })?;
        let mount_err = |source| NetnsError::Mount { path: self.dir.clone(), source };
        let bound = !is_mount_point(&self.dir);
        if bound {
            mount(Some(&self.dir), &self.dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(mount_err)?;
        }
        mount(None::<&str>, &self.dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
            .map_err(mount_err)?;
        Ok(bound)
    }

    /// Removes the self bind mount added by [`Self::make_dir_shared`] (pins must be deleted first).
    pub fn unshare_dir(&self) -> Result<(), NetnsError> {
        if is_mount_point(&self.dir) {
            umount2(&self.dir, MntFlags::MNT_DETACH)
                .map_err(|source| NetnsError::Unmount { path: self.dir.clone(), source })?;
        }
        Ok(())
    }
}

/// True if `dir` is listed as a mount point in `/proc/self/mountinfo`.
fn is_mount_point(dir: &Path) -> bool {
    let Ok(canonical) = fs::canonicalize(dir) else { return false };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let wanted = canonical.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Pin names become file names: keep them plain.
fn validate_id(id: &str) -> Result<(), NetnsError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(NetnsError::BadId { id: id.to_string() }) }
}

/// Creates a new network namespace and bind-mounts it onto `path` (which must not be pinned yet).
pub fn create_pinned(path: &Path) -> Result<(), NetnsError> {
    let owned = path.to_path_buf();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), NetnsError> {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&owned)
                    .map_err(|source| NetnsError::CreateFile { path: owned.clone(), source })?;
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Unshare { path: owned.clone(), source })?;
                mount(
                    Some(Path::new("/proc/thread-self/ns/net")),
                    owned.as_path(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| NetnsError::Mount { path: owned.clone(), source })
            })
            .join()
    });
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let _ = fs::remove_file(path);
            Err(e)
        }
        Err(_) => Err(NetnsError::ThreadPanicked { path: path.to_path_buf() }),
    }
}

/// Unmounts and removes a pin file; a missing file is not an error.
pub fn delete_pinned(path: &Path) -> Result<(), NetnsError> {
    if !path.exists() {
        return Ok(());
    }
    if is_netns_mount(path) {
        umount2(path, MntFlags::MNT_DETACH)
            .map_err(|source| NetnsError::Unmount { path: path.into(), source })?;
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove { path: path.into(), source }),
    }
}

/// True if `path` is a mount of a network namespace (an nsfs inode), not a plain file.
pub fn is_netns_mount(path: &Path) -> bool {
    // A bind-mounted namespace lives on nsfs; a plain empty file does not.
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `work` on a fresh OS thread that first enters the network namespace at `netns`
/// (or stays in the caller's namespace when `None`). The caller's thread is never moved.
pub fn run_in_netns<T, F>(netns: Option<&Path>, work: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let label = netns.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("(current)"));
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<T, NetnsError> {
                if let Some(path) = netns {
                    let file =
                        File::open(path).map_err(|source| NetnsError::Open { path: path.into(), source })?;
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|source| NetnsError::Enter { path: path.into(), source })?;
                }
                Ok(work())
            })
            .join()
    });
    joined.unwrap_or(Err(NetnsError::ThreadPanicked { path: label }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_file_names() {
        assert!(validate_id("pod-1_a.b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_joins_dir_and_id() {
        let store = NetnsStore::new("/run/x");
        assert_eq!(store.path("p1").unwrap(), PathBuf::from("/run/x/p1"));
        assert!(store.path("../etc").is_err());
    }
}
