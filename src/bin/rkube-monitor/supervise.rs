//! Supervise mode: copies the container's stdout/stderr pipes into its CRI log until both end,
//! reaps init and writes `exit.json` atomically (temp file + rename), with OOMKilled taken from
//! the cgroup's OOM-kill counter. Mirrors `rkube::runtime::monitor::supervise`.

use core::ffi::CStr;

use crate::cpath::{CPath, decimal, parse_decimal};
use crate::cri::{LineSplitter, MAX_RECORD, RecordHeader};
use crate::exit_report::{ExitJson, decode_wait_status, oom_kills};
use crate::sys::{self, Fd};

/// What to supervise, from the command line.
pub struct Job {
    init_pid: i32,
    state_dir: &'static CStr,
    oom_counter: &'static CStr,
    log: Option<(&'static CStr, [i32; 2])>,
}

impl Job {
    /// `<init-pid> <state-dir> <oom-counter-file> [<cri-log> <stdout-fd> <stderr-fd>]`.
    pub fn parse(args: sys::Args) -> Option<Job> {
        let number = |i: usize| args.get(i).and_then(|a| parse_decimal(a.to_bytes()));
        let log = match args.len() {
            4 => None,
            7 => Some((args.get(4)?, [number(5)?, number(6)?])),
            _ => return None,
        };
        Some(Job { init_pid: number(1)?, state_dir: args.get(2)?, oom_counter: args.get(3)?, log })
    }
}

/// Runs the job; returns the exit code.
pub fn run(job: &Job) -> i32 {
    if let Some((path, fds)) = job.log {
        pump_logs(path, fds);
    }
    let (code, signal) = wait_exit(job.init_pid);
    let exit = ExitJson::new(code, signal, oom_killed(job.oom_counter));
    match write_exit(job.state_dir.to_bytes(), exit.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Copies both streams into the CRI log until both reach end of file.
fn pump_logs(path: &CStr, fds: [i32; 2]) {
    let streams = fds.map(Fd::adopt);
    let Ok(log) = sys::open(path, sys::O_WRONLY | sys::O_CREAT | sys::O_APPEND | sys::O_CLOEXEC, 0o666)
    else {
        return;
    };
    let names = ["stdout", "stderr"];
    let mut splitters = [LineSplitter::default(), LineSplitter::default()];
    let mut open = [true, true];
    let mut buf = [0u8; MAX_RECORD];
    while open[0] || open[1] {
        let mut polled =
            streams.each_ref().map(|s| sys::PollFd { fd: s.raw(), events: sys::POLLIN, revents: 0 });
        for (poll_fd, is_open) in polled.iter_mut().zip(open) {
            if !is_open {
                poll_fd.fd = -1;
            }
        }
        match sys::poll(&mut polled) {
            Ok(_) => {}
            Err(sys::EINTR | sys::EAGAIN) => continue,
            Err(_) => return,
        }
        for i in 0..2 {
            if !open[i] || polled[i].revents == 0 {
                continue;
            }
            let name = names[i];
            let mut emit = |partial: bool, content: &[u8]| {
                let (secs, nanos) = sys::now();
                let header = RecordHeader::new(secs, nanos, name, partial);
                let _ = sys::write_all(log.raw(), &[header.as_bytes(), content, b"\n"]);
            };
            match sys::read(streams[i].raw(), &mut buf) {
                Ok(0) => {
                    open[i] = false;
                    splitters[i].finish(&mut emit);
                }
                Ok(n) => splitters[i].feed(&buf[..n], &mut emit),
                Err(sys::EINTR | sys::EAGAIN) => {}
                Err(_) => {
                    open[i] = false;
                    splitters[i].finish(&mut emit);
                }
            }
        }
    }
}

/// Reaps init; returns its exit code and terminating signal (code 255 if it cannot be waited for).
fn wait_exit(pid: i32) -> (i32, Option<i32>) {
    loop {
        match sys::wait4(pid, 0) {
            Ok((_, status)) => {
                if let Some(exit) = decode_wait_status(status) {
                    return exit;
                }
            }
            Err(sys::EINTR) => {}
            Err(_) => return (255, None),
        }
    }
}

/// True if the cgroup recorded an OOM kill (the killed task may be any process of the container).
fn oom_killed(counter: &CStr) -> bool {
    let Ok(file) = sys::open(counter, sys::O_RDONLY | sys::O_CLOEXEC, 0) else { return false };
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match sys::read(file.raw(), &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    oom_kills(&buf[..len]) > 0
}

/// Writes `<state-dir>/exit.json` through `exit.tmp<pid>` and a rename, like the runtime's
/// `write_atomic`, so readers never see half a file.
fn write_exit(state_dir: &[u8], json: &[u8]) -> Result<(), sys::Errno> {
    let mut digits = [0u8; 10];
    let pid = decimal(sys::getpid() as u32, &mut digits);
    let (Some(tmp), Some(target)) =
        (CPath::join(state_dir, &[b"/exit.tmp", pid]), CPath::join(state_dir, &[b"/exit.json"]))
    else {
        return Err(sys::ENAMETOOLONG);
    };
    {
        let file =
            sys::open(tmp.as_cstr(), sys::O_WRONLY | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC, 0o666)?;
        sys::write_all(file.raw(), &[json])?;
    }
    sys::rename(tmp.as_cstr(), target.as_cstr())
}
