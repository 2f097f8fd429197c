//! Kubernetes object types, manifest loading, defaults, validation, selectors and quantities.
//! Pure code: no IO beyond parsing bytes handed in.

pub mod defaults;
pub mod fieldpath;
pub mod meta;
pub mod names;
pub mod nodes;
pub mod podrefs;
pub mod podsecurity;
pub mod quantity;
pub mod selectors;
pub mod ssa;
pub mod strategic;
pub mod strict;
pub mod time;
pub mod validation;
