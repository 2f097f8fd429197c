//! Talking to `rkube-master` as a client, shared by nodes and tools (never imports `master`):
//! joining a node (CA pinning, certificates) and the credentials a joined node keeps.

pub mod join;
