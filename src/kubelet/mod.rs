//! The node agent: pod state machine, sync loop, volumes, probes, logs/exec.

pub mod backoff;
pub mod command;
pub mod env;
pub mod expand;
pub mod manifest;
pub mod probe;
pub mod projection;
pub mod resources;
pub mod restart;
