//! Network sysctls (`/proc/sys/net/...`), which act in the calling thread's network namespace.

use std::fs;
use std::io;
use std::path::PathBuf;

/// Error writing a sysctl.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}={value}: {source}")]
pub struct SysctlError {
    pub key: String,
    pub value: String,
    pub source: io::Error,
}

fn path_of(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Reads a sysctl such as `net.ipv4.ip_forward`; `None` if it does not exist.
pub fn read(key: &str) -> Option<String> {
    fs::read_to_string(path_of(key)).ok().map(|s| s.trim().to_string())
}

/// Sets `key` to `value` unless it already has it.
pub fn set(key: &str, value: &str) -> Result<(), SysctlError> {
    if read(key).as_deref() == Some(value) {
        return Ok(());
    }
    fs::write(path_of(key), value).map_err(|source| SysctlError {
        key: key.into(),
        value: value.into(),
        source,
    })
}

/// Sets `key` only if it exists (e.g. bridge sysctls exist only with br_netfilter loaded).
pub fn set_if_present(key: &str, value: &str) -> Result<bool, SysctlError> {
    if read(key).is_none() {
        return Ok(false);
    }
    set(key, value).map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths() {
        assert_eq!(path_of("net.ipv4.ip_forward"), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(read("net.no.such.key"), None);
    }
}
