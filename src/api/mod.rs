//! Kubernetes object types, manifest loading, defaults, validation, selectors and quantities.
//! Pure code: no IO beyond parsing bytes handed in.

pub mod strict;
