//! Terminal ioctls nix does not wrap safely: the pty peer (`TIOCGPTPEER`), the controlling
//! terminal (`TIOCSCTTY`), the window size (`TIOCGWINSZ`/`TIOCSWINSZ`), and a signal handler
//! that reports signals on a pipe (resizes and termination requests for the terminal relay).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Opens the slave side of the pty whose master is `master` (`TIOCGPTPEER`): no path lookup,
/// so a container cannot swap `/dev/pts/N` for something else. Close-on-exec, no controlling tty.
pub fn open_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes an int of open flags by value and returns a new descriptor.
    let fd = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `tty` the controlling terminal of the calling session leader (`TIOCSCTTY`, no steal).
pub fn set_controlling_terminal(tty: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal from another session).
    check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) })?;
    Ok(())
}

/// The window size of terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<WindowSize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` into the valid, exclusively borrowed `ws`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) })?;
    Ok(WindowSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// Sets the window size of terminal `fd` (the kernel sends SIGWINCH to its foreground group).
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from `ws`, which outlives the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) })?;
    Ok(())
}

/// Write end of the signal pipe, or -1 when none is installed.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno is thread-local; saving and restoring it keeps the interrupted code's
        // value. write(2) is async-signal-safe and the byte lives on our stack.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = signal as u8;
            libc::write(fd, &byte as *const u8 as *const libc::c_void, 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// While alive, each of its signals writes its number (one byte) to a non-blocking pipe whose
/// read end is `reader` (the self-pipe trick, for a `poll` loop). Dropping it restores the
/// previous dispositions. One per process at a time.
#[derive(Debug)]
pub struct SignalPipe {
    /// Readable once a signal arrived; each byte is a signal number.
    pub reader: OwnedFd,
    writer: OwnedFd,
    previous: Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)>,
}

impl SignalPipe {
    /// Installs the handler for `signals`.
    pub fn install(signals: &[nix::sys::signal::Signal]) -> io::Result<Self> {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
        let (reader, writer) = nix::unistd::pipe2(flags)?;
        if SIGNAL_PIPE.compare_exchange(-1, writer.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "a signal pipe is already installed"));
        }
        let mut pipe = SignalPipe { reader, writer, previous: Vec::new() };
        let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
        for signal in signals {
            // SAFETY: the handler only loads an atomic and calls write(2), both async-signal-safe.
            let previous = unsafe { sigaction(*signal, &action) }?;
            pipe.previous.push((*signal, previous));
        }
        Ok(pipe)
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for (signal, previous) in &self.previous {
            // SAFETY: restores the disposition that was in place before `install`.
            let _ = unsafe { nix::sys::signal::sigaction(*signal, previous) };
        }
        let _ = SIGNAL_PIPE.compare_exchange(self.writer.as_raw_fd(), -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Registers an owned descriptor (a pty master or pipe end, already non-blocking) with tokio's
/// reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an open descriptor moved into the AsyncFd, which owns it until dropped;
    // an `OwnedFd` always returns the same descriptor from `as_raw_fd`.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}
