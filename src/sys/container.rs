//! Raw syscalls the container runtime needs and nix does not wrap: namespace clone without a new
//! stack, `close_range`, detached read-only or id-mapped bind mounts (`open_tree` +
//! `mount_setattr`, `move_mount`), seccomp filter installation without forcing no_new_privs (and
//! with a notification listener), `pidfd_getfd`, and `fork`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::unistd::Pid;

/// Which side of a fork or clone the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

fn forked_from(ret: libc::c_long) -> io::Result<Forked> {
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// `fork(2)` through glibc, from a process that may have other threads. glibc's fork handlers
/// keep malloc usable in the child, but a lock another thread held at the fork stays held there:
/// the child must take none (no `tracing`, no `std::io` stdio, no `std::env`; report errors with
/// [`write_stderr`] or over a pipe), and end with `exec` or [`exit_now`].
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; glibc resets its own locks in
    // the child, and the contract above keeps the child off every other lock.
    let ret = unsafe { libc::fork() };
    forked_from(ret as libc::c_long)
}

/// Proof that the calling process had exactly one thread when it was made: the precondition of
/// [`clone_with_namespaces`] (a new user namespace needs it, and a child of a threaded process
/// could find locks held forever by threads it does not have). Only [`SingleThreaded::check`]
/// makes one, and it is neither `Send` nor `Sync`, so it cannot reach another thread.
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// `Some` when `/proc/self/task` lists only the calling thread.
    pub fn check() -> Option<SingleThreaded> {
        let threads = std::fs::read_dir("/proc/self/task").ok()?.count();
        (threads == 1).then_some(SingleThreaded(std::marker::PhantomData))
    }
}

/// `clone(2)` with `flags | SIGCHLD` and no new stack: fork semantics plus new namespaces. The
/// caller proves it is single-threaded (a freshly forked monitor is).
pub fn clone_with_namespaces(_single: &SingleThreaded, flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: without CLONE_VM the child gets a copy-on-write copy of the address space and
    // continues on its own copy of the current stack, exactly like fork; a null stack is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    forked_from(ret)
}

/// An `execve` prepared before a fork: the strings and their NULL-terminated pointer arrays are
/// built in the parent, so the forked child only makes system calls on its way to the new program
/// (no allocation, no lock).
#[derive(Debug)]
pub struct PreparedExec {
    path: std::ffi::CString,
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl PreparedExec {
    /// `path` with `argv` (including argv[0]) and the environment `env` (`KEY=value` entries).
    pub fn new(path: &Path, argv: &[String], env: &[std::ffi::OsString]) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let c = |bytes: &[u8]| {
            std::ffi::CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let path = c(path.as_os_str().as_bytes())?;
        let args = argv.iter().map(|a| c(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let vars = env.iter().map(|e| c(e.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let pointers = |strings: &[std::ffi::CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>()
        };
        let (argv, envp) = (pointers(&args), pointers(&vars));
        let mut strings = args;
        strings.extend(vars);
        Ok(PreparedExec { path, _strings: strings, argv, envp })
    }

    /// In a forked child: lets `inherit` survive the exec (clears close-on-exec), then execs.
    /// Returns only on failure, with the errno; makes no allocation.
    pub fn exec(&self, inherit: &[RawFd]) -> i32 {
        for &fd in inherit.iter().filter(|fd| **fd >= 0) {
            // SAFETY: F_SETFD on a plain descriptor number only changes its flags (or fails).
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return io::Error::last_os_error().raw_os_error().unwrap_or(libc::EBADF);
            }
        }
        // SAFETY: the path and both arrays are NUL-/NULL-terminated and owned by `self`, which
        // outlives the call; execve only returns on error.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOEXEC)
    }
}

/// Gives every signal its default disposition and unblocks them all, for a process about to exec a
/// container's program: an ignored signal survives `execve`, and the runtime ignores SIGPIPE (as
/// every Rust program does at startup), which the program must not inherit.
pub fn reset_signals() -> io::Result<()> {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask and no flags: no handler
        // code is installed. Numbers the C library reserves for itself fail with EINVAL, harmlessly.
        let _ =
            unsafe { libc::sigaction(signal, &std::mem::zeroed::<libc::sigaction>(), std::ptr::null_mut()) };
    }
    // SAFETY: an empty set, initialised by sigemptyset, is passed by pointer for the call only.
    let ret = unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut())
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Gives SIGPIPE its default action (Rust starts with it ignored), so a command whose output pipe
/// closes early (`state ID | head -1`) ends quietly as `cat` does instead of panicking in
/// `println!`. Only for short commands that fork nothing long-lived.
pub fn default_sigpipe() {
    // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask and no flags.
    let _ = unsafe {
        libc::sigaction(libc::SIGPIPE, &std::mem::zeroed::<libc::sigaction>(), std::ptr::null_mut())
    };
}

/// Writes `message` to fd 2 with one `write(2)`, taking no lock (for forked children, where
/// `eprintln!` could wait forever on a stderr lock another thread of the parent held).
pub fn write_stderr(message: &str) {
    write_raw(2, message.as_bytes());
}

/// One `write(2)` of `bytes` to descriptor number `fd`, ignoring failure: no allocation, no lock.
pub fn write_raw(fd: RawFd, bytes: &[u8]) {
    // SAFETY: the buffer is valid for its length; writing to a closed fd just fails.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// Ends the calling process immediately, without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Marks every fd >= `first` close-on-exec (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes fd flags; arguments are plain integers.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Closes every fd >= 3 except those in `keep` (`close_range` over the gaps). A child forked from
/// a threaded process inherits whatever fds other threads had open at that moment (pipes of their
/// commands, sockets, lock files); one that does not exec at once must not keep them, or a pipe
/// never reports EOF to the thread reading it.
/// Allocation-free: it runs in a freshly forked child.
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut first = 3u32;
    loop {
        // The next fd to keep at or above `first`; everything from `first` below it is closed.
        let next = keep.iter().filter_map(|&fd| u32::try_from(fd).ok()).filter(|&fd| fd >= first).min();
        let last = match next {
            Some(fd) if fd == first => None,
            Some(fd) => Some(fd - 1),
            None => Some(u32::MAX),
        };
        if let Some(last) = last {
            // SAFETY: close_range only closes fds; arguments are plain integers.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
            if ret == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        match next {
            Some(fd) if fd < u32::MAX => first = fd + 1,
            _ => return Ok(()),
        }
    }
}

/// The descriptors in `range` that are open.
pub fn open_fds(range: std::ops::Range<RawFd>) -> Vec<RawFd> {
    // SAFETY: F_GETFD on a plain descriptor number only reads its flags (or fails with EBADF).
    range.filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1).collect()
}

/// Clears close-on-exec on each of `fds`, so a program exec'd next inherits them.
pub fn inherit_fds(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: F_SETFD on a plain descriptor number only changes its flags (or fails).
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens a detached, read-only bind mount of `path` (a clone not attached anywhere).
/// Writing through it (e.g. via `/proc/<pid>/exe` after exec) fails with EROFS.
pub fn open_readonly_clone(path: &Path) -> io::Result<OwnedFd> {
    open_clone_with(path, libc::MOUNT_ATTR_RDONLY, 0)
}

/// Opens a detached clone of the mount at `path` whose file ownership is seen through the id
/// maps of the user namespace `userns` (an id-mapped mount): files owned by host id 0 appear
/// owned by the host id that the namespace maps container id 0 to.
pub fn open_idmapped_clone(path: &Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_clone_with(path, libc::MOUNT_ATTR_IDMAP, userns.as_raw_fd() as u64)
}

/// `open_tree(OPEN_TREE_CLONE)` of `path`, then `mount_setattr` setting `attr_set` (with
/// `userns_fd` for an id map) on the detached clone.
fn open_clone_with(path: &Path, attr_set: u64, userns_fd: u64) -> io::Result<OwnedFd> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: cpath is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr { attr_set, attr_clr: 0, propagation: 0, userns_fd };
    // SAFETY: fd is a valid mount fd, `attr` outlives the call and its size is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE])` setting `set` and clearing `clear`
/// (`MOUNT_ATTR_*` bits) on the mount `fd` refers to, and with `recursive` on every mount below.
pub fn set_mount_attrs(fd: BorrowedFd<'_>, recursive: bool, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    let flags =
        libc::AT_EMPTY_PATH as libc::c_uint | if recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    // SAFETY: fd is an open descriptor, the path is an empty NUL-terminated string, `attr`
    // outlives the call and its size is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Attaches the detached mount `mount` on top of `target` (`move_mount` with an empty path).
pub fn move_mount_onto(mount: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let ctarget = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: both strings are valid NUL-terminated strings for the duration of the call and
    // `mount` is an open mount fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One classic BPF instruction, layout-compatible with `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BpfInstruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Immediate operand.
    pub k: u32,
}

/// Installs a seccomp filter on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`.
/// Unlike seccompiler's helper this does not set no_new_privs (CAP_SYS_ADMIN is then required).
pub fn install_seccomp_filter(program: &[BpfInstruction]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at `program`, which is layout-compatible with sock_filter and
    // outlives the call; the kernel copies the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// [`install_seccomp_filter`] with `SECCOMP_FILTER_FLAG_NEW_LISTENER`: returns the listener fd
/// (close-on-exec) on which the program's `SECCOMP_RET_USER_NOTIF` results are reported.
pub fn install_seccomp_listener(program: &[BpfInstruction]) -> io::Result<OwnedFd> {
    const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: as in `install_seccomp_filter`; with NEW_LISTENER the kernel returns a new fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// A copy of fd `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux 5.6), close-on-exec.
pub fn copy_fd_of_process(pid: i32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd is open; the call returns a new fd (close-on-exec) or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)` on a raw fd; returns only on error.
pub fn exec_fd(fd: BorrowedFd<'_>, argv: &[std::ffi::CString], envp: &[std::ffi::CString]) -> io::Error {
    match nix::unistd::execveat(fd, c"", argv, envp, nix::fcntl::AtFlags::AT_EMPTY_PATH) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}

/// Calls system call `nr` with all-zero arguments and returns the resulting errno (0 on success).
/// Used by the hidden probe command that tests run inside containers to check seccomp.
/// Callers must only pass calls for which zero arguments are harmless (they fail with
/// EINVAL/EFAULT or do nothing).
pub fn probe_syscall_with_zero_args(nr: i64) -> i32 {
    // SAFETY: every argument is zero (null pointers, zero lengths and flags); the kernel
    // validates them, and no memory of ours is passed.
    let ret = unsafe { libc::syscall(nr, 0usize, 0usize, 0usize, 0usize, 0usize, 0usize) };
    if ret == -1 { io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 }
}

/// Duplicates `fd` onto the number `target` (without close-on-exec), to hand it to an exec'd
/// program at a known number. The duplicate is deliberately not owned: it must survive the exec.
pub fn dup_onto(fd: BorrowedFd<'_>, target: i32) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the fd table; `fd` is a valid open descriptor and any
    // descriptor previously at `target` is one the caller chose to replace.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Takes ownership of an inherited descriptor number (e.g. a pipe placed on fd 3 by our parent).
/// Fails if the number is not open.
pub fn adopt_fd(fd: i32) -> io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        // SAFETY: only used for the F_GETFD probe below; ownership is taken after it succeeds.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(io::Error::from)?;
    // SAFETY: the descriptor is open (checked above) and was handed to this process to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_process_with_one_thread_proves_it() {
        // The test harness runs tests on threads of its own: never single-threaded here.
        let helper = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(SingleThreaded::check().is_none());
        match fork().unwrap() {
            Forked::Child => exit_now(if SingleThreaded::check().is_some() { 0 } else { 1 }),
            Forked::Parent(pid) => {
                assert_eq!(
                    nix::sys::wait::waitpid(pid, None).unwrap(),
                    nix::sys::wait::WaitStatus::Exited(pid, 0),
                    "a forked child has one thread"
                );
            }
        }
        helper.join().unwrap();
    }

    #[test]
    fn only_the_kept_fds_and_stdio_survive() {
        let is_open = |fd: RawFd| {
            // SAFETY: F_GETFD only reads the fd's flags.
            unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
        };
        // In a child: the test harness's own fds stay untouched.
        match fork().unwrap() {
            Forked::Child => {
                let fds: Vec<RawFd> = (0..6)
                    .map(|_| std::fs::File::open("/dev/null").map_or(-1, std::os::fd::IntoRawFd::into_raw_fd))
                    .collect();
                let keep = [fds[1], fds[4], -1];
                let kept = close_fds_except(&keep).is_ok()
                    && fds.iter().all(|&fd| is_open(fd) == keep.contains(&fd))
                    && (0..3).all(is_open);
                exit_now(if kept { 0 } else { 1 })
            }
            Forked::Parent(pid) => {
                assert_eq!(
                    nix::sys::wait::waitpid(pid, None).unwrap(),
                    nix::sys::wait::WaitStatus::Exited(pid, 0)
                );
            }
        }
    }
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level)` for the calling thread (inherited by
/// children and kept across `execve`).
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: plain integer arguments.
    let ret = unsafe {
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, (class << 13 | level) as libc::c_int)
    };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `struct sched_attr` (linux/sched/types.h, SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedAttr {
    /// Size of this struct.
    pub size: u32,
    /// `SCHED_*` policy.
    pub policy: u32,
    /// `SCHED_FLAG_*` bits.
    pub flags: u64,
    /// Nice value (OTHER, BATCH).
    pub nice: i32,
    /// Static priority (FIFO, RR).
    pub priority: u32,
    /// DEADLINE runtime, ns.
    pub runtime: u64,
    /// DEADLINE deadline, ns.
    pub deadline: u64,
    /// DEADLINE period, ns.
    pub period: u64,
    /// Utilization clamp minimum.
    pub util_min: u32,
    /// Utilization clamp maximum.
    pub util_max: u32,
}

/// `sched_setattr(0, attr, 0)` for the calling thread.
pub fn set_scheduler(attr: &SchedAttr) -> io::Result<()> {
    let mut attr = *attr;
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `attr` is a valid sched_attr whose size field matches, alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `setdomainname(2)` (the UTS namespace's NIS domain name).
pub fn set_domainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, alive for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `personality(2)`: the execution domain and its flags, kept across `execve`.
pub fn set_personality(persona: u64) -> io::Result<()> {
    // SAFETY: a plain integer argument.
    let ret = unsafe { libc::personality(persona as libc::c_ulong) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `set_mempolicy(2)` for the calling thread (inherited by children and kept across `execve`);
/// `nodes` holds 64 nodes per word, empty for no mask.
pub fn set_mempolicy(mode: i32, nodes: &[u64]) -> io::Result<()> {
    let (mask, maxnode) = match nodes {
        [] => (std::ptr::null(), 0),
        // The kernel reads `maxnode - 1` bits.
        words => (words.as_ptr(), words.len() as libc::c_ulong * 64 + 1),
    };
    // SAFETY: `mask` is null or points to `nodes`' words, which hold `maxnode - 1` bits and are
    // alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask, maxnode) };
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
