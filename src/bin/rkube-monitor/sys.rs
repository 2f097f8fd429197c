//! Everything the monitor needs from the kernel, as raw x86_64 Linux syscalls, plus the process
//! entry point and the few symbols the compiler expects from a C library (`memcpy` and friends).
//! All of the monitor's `unsafe` is in this file.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("the freestanding rkube-monitor supports x86_64 Linux only");

use core::arch::{asm, global_asm};
use core::ffi::{CStr, c_char};

/// A failed syscall's error number.
pub type Errno = i32;

pub const EINTR: Errno = 4;
pub const EAGAIN: Errno = 11;
pub const ENAMETOOLONG: Errno = 36;

pub const O_RDONLY: usize = 0;
pub const O_WRONLY: usize = 0o1;
pub const O_CREAT: usize = 0o100;
pub const O_TRUNC: usize = 0o1000;
pub const O_APPEND: usize = 0o2000;
pub const O_CLOEXEC: usize = 0o2000000;

pub const POLLIN: i16 = 0x1;
pub const WNOHANG: usize = 1;

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;
pub const SIGCHLD: i32 = 17;

const SYS_READ: usize = 0;
const SYS_CLOSE: usize = 3;
const SYS_POLL: usize = 7;
const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_WRITEV: usize = 20;
const SYS_GETPID: usize = 39;
const SYS_WAIT4: usize = 61;
const SYS_RENAME: usize = 82;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_CLOCK_GETTIME: usize = 228;
const SYS_EXIT_GROUP: usize = 231;
const SYS_OPENAT: usize = 257;

const AT_FDCWD: isize = -100;
const CLOCK_REALTIME: usize = 0;
const SIG_BLOCK: usize = 0;
/// Size of the kernel's signal set (64 signals).
const SIGSET_SIZE: usize = 8;

/// Issues syscall `nr` with up to four arguments.
///
/// # Safety
/// The arguments must be valid for that syscall: every pointer points to memory of the size
/// and mutability the kernel will access, for the duration of the call.
unsafe fn syscall4(nr: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall instruction clobbers only rax (result), rcx and r11; memory
    // effects are the kernel's and covered by this function's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Maps the raw return value to a result (the kernel returns `-errno` on failure).
fn check(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) { Err(-ret as Errno) } else { Ok(ret as usize) }
}

/// An open file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    /// Takes ownership of an inherited descriptor number.
    pub fn adopt(fd: i32) -> Fd {
        Fd(fd)
    }

    /// The descriptor number.
    pub fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: close takes no pointers; the descriptor is ours.
        unsafe { syscall4(SYS_CLOSE, self.0 as usize, 0, 0, 0) };
    }
}

/// Opens `path` relative to the working directory.
pub fn open(path: &CStr, flags: usize, mode: usize) -> Result<Fd, Errno> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let ret = unsafe { syscall4(SYS_OPENAT, AT_FDCWD as usize, path.as_ptr() as usize, flags, mode) };
    check(ret).map(|fd| Fd(fd as i32))
}

/// Reads into `buf`.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    check(unsafe { syscall4(SYS_READ, fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0) })
}

/// `struct iovec`.
#[repr(C)]
struct IoVec {
    base: *const u8,
    len: usize,
}

/// Writes all of `parts`, in order, retrying after short writes and interruptions.
pub fn write_all(fd: i32, parts: &[&[u8]]) -> Result<(), Errno> {
    let mut skip = 0usize;
    loop {
        let mut iov = [const { IoVec { base: core::ptr::null(), len: 0 } }; 4];
        let mut count = 0;
        let mut offset = skip;
        for part in parts {
            if offset >= part.len() {
                offset -= part.len();
                continue;
            }
            if count == iov.len() {
                break;
            }
            iov[count] = IoVec { base: part[offset..].as_ptr(), len: part.len() - offset };
            offset = 0;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        // SAFETY: each of the first `count` iovecs points into a live slice of `parts` with
        // its exact remaining length; the kernel only reads them.
        match check(unsafe { syscall4(SYS_WRITEV, fd as usize, iov.as_ptr() as usize, count, 0) }) {
            Ok(0) => return Err(EAGAIN),
            Ok(n) => skip += n,
            Err(EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Renames `from` to `to`, replacing `to`.
pub fn rename(from: &CStr, to: &CStr) -> Result<(), Errno> {
    // SAFETY: both paths are NUL-terminated and outlive the call.
    check(unsafe { syscall4(SYS_RENAME, from.as_ptr() as usize, to.as_ptr() as usize, 0, 0) }).map(drop)
}

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

/// Waits without timeout until one of `fds` is ready.
pub fn poll(fds: &mut [PollFd]) -> Result<usize, Errno> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs the kernel may update.
    check(unsafe { syscall4(SYS_POLL, fds.as_mut_ptr() as usize, fds.len(), -1isize as usize, 0) })
}

/// Waits for a child (`pid`, or any child for -1); returns its pid and wait status, or pid 0
/// with `WNOHANG` when no child has changed state.
pub fn wait4(pid: i32, options: usize) -> Result<(i32, i32), Errno> {
    let mut status = 0i32;
    // SAFETY: the kernel writes one int to `status`; the rusage pointer is null.
    let ret = unsafe { syscall4(SYS_WAIT4, pid as isize as usize, &raw mut status as usize, options, 0) };
    check(ret).map(|child| (child as i32, status))
}

/// This process's id.
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { syscall4(SYS_GETPID, 0, 0, 0, 0) as i32 }
}

/// The wall-clock time as seconds and nanoseconds since the UNIX epoch.
pub fn now() -> (i64, u32) {
    let mut ts = [0i64; 2];
    // SAFETY: the kernel writes one `struct timespec` (two 64-bit fields) to `ts`.
    unsafe { syscall4(SYS_CLOCK_GETTIME, CLOCK_REALTIME, ts.as_mut_ptr() as usize, 0, 0) };
    (ts[0], ts[1] as u32)
}

/// A set of signals in the kernel's layout.
pub fn signal_set(signals: &[i32]) -> u64 {
    signals.iter().fold(0, |set, sig| set | 1 << (sig - 1))
}

/// Blocks `set`, so those signals stay pending until [`wait_signal`] takes them.
pub fn block_signals(set: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads one signal set from `set`; the old-set pointer is null.
    check(unsafe { syscall4(SYS_RT_SIGPROCMASK, SIG_BLOCK, &raw const set as usize, 0, SIGSET_SIZE) })
        .map(drop)
}

/// Sleeps until a signal of the (blocked) `set` is pending and takes it.
pub fn wait_signal(set: u64) -> Result<i32, Errno> {
    // SAFETY: the kernel reads one signal set; the siginfo and timeout pointers are null.
    let ret = unsafe { syscall4(SYS_RT_SIGTIMEDWAIT, &raw const set as usize, 0, 0, SIGSET_SIZE) };
    check(ret).map(|sig| sig as i32)
}

/// Ends the process.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes no pointers and does not return.
        unsafe { syscall4(SYS_EXIT_GROUP, code as usize, 0, 0, 0) };
    }
}

/// The command line.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    argc: usize,
    argv: *const *const c_char,
}

impl Args {
    /// Argument `index`, if present.
    pub fn get(&self, index: usize) -> Option<&'static CStr> {
        if index >= self.argc {
            return None;
        }
        // SAFETY: the kernel placed `argc` pointers to NUL-terminated strings at `argv`; they
        // live, unmodified by us, for the whole process.
        Some(unsafe { CStr::from_ptr(*self.argv.add(index)) })
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.argc
    }
}

// The ELF entry point: the kernel starts us with `argc` at the stack pointer, followed by
// `argv`. Clear the frame pointer, align the stack as the C ABI requires, and enter Rust.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// Reads the command line from the initial stack and runs the monitor.
extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: `_start` passes the initial stack pointer, where the kernel put argc followed
    // by the argv array.
    let args = unsafe { Args { argc: *stack, argv: stack.add(1).cast() } };
    exit(crate::main(args))
}

// The C library symbols the compiler may call. `rep movsb`/`rep stosb` keep the compiler from
// turning these bodies back into calls to themselves.

/// Copies `n` bytes between non-overlapping buffers.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes and not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; the direction flag is clear per the ABI.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dest
}

/// Copies `n` bytes between possibly overlapping buffers.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: a forward copy never overwrites source bytes not yet read.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: `dest` lies inside the source range: copy backwards from the last byte, with the
    // direction flag set for the copy and cleared again as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _, options(nostack));
    }
    dest
}

/// Fills `n` bytes with `value`.
///
/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; the direction flag is clear per the ABI.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") value as u8,
            options(nostack, preserves_flags));
    }
    dest
}

/// Compares `n` bytes.
///
/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, within both ranges; volatile reads keep this a plain loop.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Compares `n` bytes for equality (zero when equal).
///
/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Length of a NUL-terminated string.
///
/// # Safety
/// `s` must point to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut len = 0;
    // SAFETY: the caller guarantees a NUL within the string; volatile reads keep this a plain loop.
    while unsafe { s.add(len).read_volatile() } != 0 {
        len += 1;
    }
    len
}

/// The unwinding personality the precompiled `core` refers to. This binary is built with
/// `panic=abort` and never unwinds, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
