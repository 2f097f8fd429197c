//! `rkube-monitor`: the per-container monitor the runtime execs into after cloning a container's
//! init (which stays its child), and the pause process of pods that share a pid namespace.
//!
//! It is freestanding (`no_std`, no libc, raw syscalls, static and not position-independent) so
//! that a running monitor maps almost nothing: this kernel maps whole large folios of every file
//! a process touches, so even a static glibc program costs about 1 MB RSS, while this binary is
//! a few pages. `build.rs` compiles it with `panic=abort` (a `no_std` executable cannot be built
//! with the dev profile's unwinding) and places it next to the other binaries.
//!
//! Usage:
//! - `rkube-monitor <init-pid> <state-dir> <oom-counter-file> [<cri-log> <stdout-fd> <stderr-fd>]`:
//!   copies the container's output pipes into the CRI log, reaps init and writes
//!   `<state-dir>/exit.json`; see `rkube::runtime::monitor`.
//! - `rkube-monitor pause`: sleeps as PID 1 of a pod's pid namespace, reaping orphans, and exits
//!   0 on SIGTERM or SIGINT.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod cpath;
mod pause;
mod supervise;
mod sys;

#[path = "../../runtime/logfmt/cri.rs"]
mod cri;
#[path = "../../runtime/exit_report.rs"]
mod exit_report;

use core::ffi::CStr;

const USAGE: &[u8] = b"usage: rkube-monitor <init-pid> <state-dir> <oom-counter-file> \
    [<cri-log> <stdout-fd> <stderr-fd>] | rkube-monitor pause\n";

/// Runs the mode the arguments ask for; returns the exit code.
fn main(args: sys::Args) -> i32 {
    if args.len() == 2 && args.get(1).map(CStr::to_bytes) == Some(b"pause") {
        return pause::run();
    }
    match supervise::Job::parse(args) {
        Some(job) => supervise::run(&job),
        None => {
            let _ = sys::write_all(2, &[USAGE]);
            2
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    let _ = sys::write_all(2, &[b"rkube-monitor: internal error\n"]);
    sys::exit(101)
}
