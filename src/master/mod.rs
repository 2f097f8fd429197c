//! rkube-master: API server, store, scheduler and controllers.

pub mod apiserver;
pub mod client;
pub mod controllers;
pub mod fakenodes;
pub mod metrics;
pub mod scheduler;
pub mod store;
pub mod tls;
