//! On-disk container state under the run directory: `<root>/<id>/state.json` (written at create),
//! `exit.json` (written by the monitor), `exec.fifo` (present until start). Status is derived
//! from these plus a liveness check of the init pid (with its start time, against pid reuse).

use std::io;
use std::path::{Path, PathBuf};

use crate::runtime::cgroup::CgroupConfig;
use crate::runtime::config::ContainerConfig;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such container.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// Already exists.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// I/O on a state file.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A state file is corrupt.
    #[error("parse {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// OCI status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting for start.
    Created,
    /// Running.
    Running,
    /// Frozen by `pause` until `resume`.
    Paused,
    /// Exited.
    Stopped,
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// Exit code (128 + signal when killed by a signal).
    pub code: i32,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    /// Killed by the kernel OOM killer because of the memory limit.
    pub oom_killed: bool,
}

/// What `state.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the init process.
    pub pid: i32,
    /// Start time of the init process (field 22 of /proc/<pid>/stat).
    pub pid_start_time: u64,
    /// Pid of the monitor.
    pub monitor_pid: i32,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Annotations from the spec.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The cgroup (with the directories we created).
    pub cgroup: CgroupConfig,
    /// The plan (needed by exec).
    pub config: ContainerConfig,
    /// Without a mount namespace of its own: the id of the rootfs bind init left in the caller's
    /// namespace, which `delete` detaches (that mount only, found by id).
    #[serde(default)]
    pub host_root_mount: Option<u64>,
}

/// The OCI state as printed by `state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// OCI version.
    pub oci_version: String,
    /// Id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Init pid (0 when stopped).
    pub pid: i32,
    /// Bundle.
    pub bundle: PathBuf,
    /// Creation time.
    pub created: String,
    /// Annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The state directory of one container.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory for `id` under `root` (not created).
    pub fn new(root: &Path, id: &str) -> Self {
        StateDir { dir: root.join(id) }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory; fails if it exists.
    pub fn create(&self, id: &str) -> Result<(), StateError> {
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
                action: "create",
                path: parent.into(),
                source,
            })?;
        }
        match std::fs::create_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StateError::Exists(id.into())),
            Err(source) => Err(StateError::Io { action: "create", path: self.dir.clone(), source }),
        }
    }

    /// The exec fifo path.
    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    /// The exit file path.
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    /// Writes `state.json` atomically.
    pub fn write_record(&self, record: &Record) -> Result<(), StateError> {
        let data = serde_json::to_vec(record).expect("state serialises");
        write_atomic(&self.dir.join("state.json"), &data)
    }

    /// Reads `state.json`.
    pub fn read_record(&self, id: &str) -> Result<Record, StateError> {
        let path = self.dir.join("state.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StateError::NotFound(id.into())),
            Err(source) => return Err(StateError::Io { action: "read", path, source }),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Parse { path, source })
    }

    /// Reads `exit.json` if the container has exited.
    pub fn read_exit(&self) -> Option<ExitInfo> {
        std::fs::read(self.exit_file()).ok().and_then(|d| serde_json::from_slice(&d).ok())
    }

    /// Writes `exit.json` atomically.
    pub fn write_exit(&self, exit: &ExitInfo) -> Result<(), StateError> {
        write_atomic(&self.exit_file(), &serde_json::to_vec(exit).expect("exit serialises"))
    }

    /// Derives the status.
    pub fn status(&self, record: &Record) -> Status {
        if self.read_exit().is_some() || !process_alive(record.pid, record.pid_start_time) {
            Status::Stopped
        } else if self.fifo().exists() {
            Status::Created
        } else if record.cgroup.manager().frozen() {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { action: "remove", path: self.dir.clone(), source }),
        }
    }
}

/// Writes a file via a temp file and rename, so readers never see half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|source| StateError::Io {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| StateError::Io {
        action: "rename",
        path: path.into(),
        source,
    })
}

/// The start time (clock ticks since boot) of a process, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line (the command may contain spaces and parentheses).
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True if `pid` exists, is not a zombie, and started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            state != Some("Z") && parse_start_time(&stat) == Some(start_time)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
    }

    #[test]
    fn exit_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path(), "c1");
        s.create("c1").unwrap();
        assert!(matches!(s.create("c1"), Err(StateError::Exists(_))));
        assert!(s.read_exit().is_none());
        let exit = ExitInfo { code: 137, signal: Some(9), oom_killed: true };
        s.write_exit(&exit).unwrap();
        assert_eq!(s.read_exit(), Some(exit));
        s.remove().unwrap();
        assert!(!s.path().exists());
    }
}
