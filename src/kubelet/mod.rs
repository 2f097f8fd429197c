//! The node agent: pod state machine, sync loop, volumes, probes, logs/exec.

pub mod agent;
pub mod backoff;
pub mod command;
pub mod env;
pub mod expand;
pub mod fields;
pub mod images;
pub mod joined;
pub mod manifest;
pub mod node;
pub mod pod;
pub mod probe;
pub mod prober;
pub mod projection;
pub mod reset;
pub mod resources;
pub mod restart;
pub mod sandbox;
pub mod security;
pub mod server;
pub mod spdy;
pub mod spec;
pub mod state;
pub mod userns;
pub mod volumes;
