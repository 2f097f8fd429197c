//! Resource limits: parse OCI names and apply them without ever raising above the current hard
//! limit (raising needs CAP_SYS_RESOURCE, which hosts like this one lack).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Errors while applying rlimits.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    /// The limit name is not known.
    #[error("unknown rlimit {0:?}")]
    Unknown(String),
    /// The kernel refused the change.
    #[error("set rlimit {name}: {source}")]
    Set {
        /// Limit name.
        name: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

/// One limit to set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// Name such as `RLIMIT_NOFILE`.
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Maps an OCI rlimit name to the resource.
pub fn resource(name: &str) -> Result<Resource, RlimitError> {
    Ok(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        other => return Err(RlimitError::Unknown(other.to_string())),
    })
}

/// Clamps a requested (soft, hard) pair below the current hard limit.
pub fn clamp(soft: u64, hard: u64, current_hard: u64) -> (u64, u64) {
    let hard = hard.min(current_hard);
    (soft.min(hard), hard)
}

/// Applies each limit, clamped to the current hard limit.
pub fn apply(limits: &[Rlimit]) -> Result<(), RlimitError> {
    for limit in limits {
        let res = resource(&limit.name)?;
        let (_, current_hard) =
            getrlimit(res).map_err(|source| RlimitError::Set { name: limit.name.clone(), source })?;
        let (soft, hard) = clamp(limit.soft, limit.hard, current_hard);
        setrlimit(res, soft, hard).map_err(|source| RlimitError::Set { name: limit.name.clone(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_raises_above_hard_limit() {
        assert_eq!(clamp(4096, 8192, 1024), (1024, 1024));
        assert_eq!(clamp(100, 200, 1024), (100, 200));
        assert_eq!(clamp(500, 200, 1024), (200, 200));
        assert!(resource("RLIMIT_BOGUS").is_err());
    }
}
