//! rkube: a minimal Kubernetes node runtime and kubelet built directly on Linux primitives,
//! plus a thin Kubernetes-compatible control plane.
//!
//! The crate is a library; `src/bin/` holds thin mains. See ARCHITECTURE.md for the code map.

pub mod api;
pub mod build;
pub mod cli;
pub mod client;
pub mod dns;
pub mod image;
pub mod kubelet;
pub mod master;
pub mod network;
pub mod proxy;
pub mod runtime;
pub mod sys;
