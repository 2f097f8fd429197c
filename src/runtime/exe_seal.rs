//! Protection of the runtime binary against being overwritten through `/proc/<pid>/exe`
//! (CVE-2019-5736). Before any process of ours enters a container, the runtime re-executes
//! itself from a detached, read-only bind mount of its own binary (`open_tree` clone +
//! `mount_setattr(MOUNT_ATTR_RDONLY)`): zero copy, nothing attached to the host's mount tree,
//! and every open for writing through the exe link fails with EROFS.
//!
//! `run` into a new pid namespace skips the re-exec (it costs a second start of a large binary):
//! init execs its program through `rkube-monitor exec` started from a read-only clone (see
//! `runtime::init`), and until then init is alone in its pid namespace.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

/// Environment marker set on the re-executed process (guards against a re-exec loop).
pub const SEALED_MARKER: &str = "_RKUBE_EXE_SEALED";
/// Environment variable carrying the binary's original path across the re-exec.
pub const ORIGINAL_EXE_ENV: &str = "_RKUBE_ORIGINAL_EXE";

/// Errors while sealing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A step failed.
    #[error("protect runtime binary: {step}: {source}")]
    Step {
        /// Step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Still writable after the re-exec.
    #[error("protect runtime binary: still writable after re-exec")]
    NotSealed,
}

/// True when the running binary sits on a read-only mount.
pub fn is_sealed() -> bool {
    exe_is_read_only("/proc/self/exe")
}

/// True when the binary of process `pid` sits on a read-only mount.
pub fn process_is_sealed(pid: i32) -> bool {
    exe_is_read_only(&format!("/proc/{pid}/exe"))
}

fn exe_is_read_only(link: &str) -> bool {
    nix::sys::statvfs::statvfs(link)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Re-executes the current process from a read-only clone of its binary unless already sealed.
/// Returns only when the binary is sealed (or on error).
#[tracing::instrument(level = "debug", name = "seal binary")]
pub fn ensure_sealed() -> Result<(), SealError> {
    if is_sealed() {
        return Ok(());
    }
    if std::env::var_os(SEALED_MARKER).is_some() {
        return Err(SealError::NotSealed);
    }
    let fd = crate::sys::container::open_readonly_clone(std::path::Path::new("/proc/self/exe"))
        .map_err(|source| SealError::Step { step: "clone binary mount", source })?;
    let to_c = |b: &[u8]| CString::new(b).unwrap_or_default();
    let argv: Vec<CString> = std::env::args_os().map(|a| to_c(a.as_bytes())).collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            to_c(&kv)
        })
        .collect();
    envp.push(to_c(format!("{SEALED_MARKER}=1").as_bytes()));
    if let Ok(original) = std::env::current_exe() {
        let mut kv = format!("{ORIGINAL_EXE_ENV}=").into_bytes();
        kv.extend_from_slice(original.as_os_str().as_bytes());
        envp.push(to_c(&kv));
    }
    let source = crate::sys::container::exec_fd(fd.as_fd(), &argv, &envp);
    Err(SealError::Step { step: "re-exec", source })
}

/// The path this program was started from, before any sealing re-exec.
pub fn original_exe() -> Option<std::path::PathBuf> {
    std::env::var_os(ORIGINAL_EXE_ENV).map(std::path::PathBuf::from).or_else(|| std::env::current_exe().ok())
}

/// A command running this program afresh from its original path; it seals itself again when needed.
pub fn self_command() -> std::io::Result<std::process::Command> {
    let exe = original_exe().ok_or_else(|| std::io::Error::other("cannot find this program's path"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.env_remove(SEALED_MARKER).env_remove(ORIGINAL_EXE_ENV);
    Ok(cmd)
}
