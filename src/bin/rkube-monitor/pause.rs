//! Pause mode: PID 1 of a pod's shared pid namespace. PID 1 receives only the signals it
//! handles, so SIGTERM, SIGINT and SIGCHLD are blocked and taken synchronously: SIGTERM and
//! SIGINT end it (exit 0, which makes the kernel kill the rest of the namespace), SIGCHLD reaps
//! every exited child, including orphans re-parented to us.

use crate::sys;

/// Sleeps until told to stop; returns the exit code.
pub fn run() -> i32 {
    let set = sys::signal_set(&[sys::SIGTERM, sys::SIGINT, sys::SIGCHLD]);
    if sys::block_signals(set).is_err() {
        return 1;
    }
    loop {
        // Reap before sleeping, too: children may have exited before the signals were blocked.
        reap_all();
        match sys::wait_signal(set) {
            Ok(sys::SIGTERM | sys::SIGINT) => return 0,
            Ok(_) | Err(sys::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

/// Collects every child that has exited, without waiting.
fn reap_all() {
    while let Ok((pid, _)) = sys::wait4(-1, sys::WNOHANG) {
        if pid <= 0 {
            break;
        }
    }
}
