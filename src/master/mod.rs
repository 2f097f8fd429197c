//! rkube-master: API server, store, scheduler and controllers.

pub mod client;
pub mod controllers;
pub mod fakenodes;
pub mod scheduler;
