//! Controllers: each a pure `reconcile(desired, observed) -> Vec<Action>` plus a thin executor over
//! [`ClusterApi`](crate::master::client::ClusterApi).

pub mod clusterdns;
pub mod deployment;
pub mod deployment_util;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod manager;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owner;
pub mod replicaset;
pub mod runner;
pub mod serviceaccounts;
pub mod servicelb;

#[cfg(test)]
mod flow_tests;
