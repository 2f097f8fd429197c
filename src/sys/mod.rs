//! The only place with `unsafe`: small safe wrappers over syscalls that nix lacks.

pub mod arp;
pub mod container;
pub mod openat;
pub mod pty;
