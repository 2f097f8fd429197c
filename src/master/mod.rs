//! rkube-master: API server, store, scheduler and controllers.

pub mod client;
pub mod store;
