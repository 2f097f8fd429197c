//! `rkube-monitor`: the small per-container monitor the runtime's forked monitor execs into
//! after cloning the container's init (which stays its child). It copies the container's
//! stdout/stderr (fds 3 and 4) into a CRI log, reaps init and writes `exit.json`.
//! Kept tiny so each container costs little memory; see `rkube::runtime::monitor`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    rkube::runtime::monitor::small_monitor_main(&args)
}
