//! Controllers: each a pure `reconcile(desired, observed) -> Vec<Action>` plus a thin executor over
//! [`ClusterApi`](crate::master::client::ClusterApi).

pub mod events;
