//! rkube-master: API server, store, scheduler and controllers.
