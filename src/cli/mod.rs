//! Command-line front ends shared by the binaries: argument types and their handlers.
//! Each subcommand group lives in its own file and exposes `Args` plus `run`.

pub mod build;
pub mod cloudbuild;
pub mod image;
pub mod join;
pub mod pod;
pub mod runtime;
pub mod signals;
pub mod terminal;
