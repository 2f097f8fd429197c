//! The container runtime: config, namespaces, rootfs and mounts, cgroups, security, processes.
//!
//! Pure planning (`config`, `caps`, `seccomp`, `user`, `mounts::parse_options`, `logfmt`,
//! cgroup write plans) is separate from the code that performs syscalls (`init`, `rootfs`,
//! `monitor`, `exec`). [`container::Runtime`] is the API used by the CLI and by pods.

pub mod caps;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod exe_seal;
pub mod exec;
pub mod exit_report;
pub mod fields;
pub mod fsutil;
pub mod hooks;
pub mod init;
pub mod logfmt;
pub mod monitor;
pub mod mounts;
pub mod netdev;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod syscalls;
pub mod tty;
pub mod user;
pub mod userns;

pub use container::{CreateRequest, ExecOverrides, ExecRequest, Runtime, RuntimeError};
pub use state::{ExitInfo, OciState, Status};
