//! The user's side of a container terminal (`exec -t` without a console socket): our terminal in
//! raw mode (restored on every exit path), bytes copied both ways between it and the pty master,
//! SIGWINCH turned into a resize of the pty, and SIGTERM/SIGHUP/SIGINT/SIGQUIT into a hangup of
//! the pty (the process gets SIGHUP) followed by a normal exit that restores our terminal.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};

use crate::runtime::tty::{self, Console};
use crate::sys::pty::{SignalPipe, set_window_size, window_size};

/// kubectl's wording for `-t` when stdin is not a terminal.
pub const NOT_A_TERMINAL: &str = "Unable to use a TTY - input is not a terminal";

/// Puts a terminal in raw mode; dropping it restores the saved mode.
#[derive(Debug)]
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Saves the mode of `fd` and switches it to raw (no echo, no line editing, no signals).
    pub fn enable(fd: BorrowedFd<'a>) -> nix::Result<Self> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Runs `exec` (which must start a process with the given console and wait for it) with a new
/// terminal relayed to our own stdin/stdout; returns its result once the process has ended.
/// `exec` must drop the console when it returns: that is how a failure before the terminal was
/// sent ends the wait for it.
pub fn run_attached<F>(exec: F) -> anyhow::Result<i32>
where
    F: FnOnce(Console) -> anyhow::Result<i32> + Send,
{
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        anyhow::bail!(NOT_A_TERMINAL);
    }
    let size = window_size(stdin.as_fd()).ok();
    let (console, ours) = Console::pair(size)?;
    std::thread::scope(|scope| {
        let process = scope.spawn(move || exec(console));
        let relayed = tty::receive_fd(ours.as_fd())
            .map_err(anyhow::Error::from)
            .map(|master| relay_while_open(master, stdin.as_fd(), stdout.as_fd()));
        let code = process.join().unwrap_or_else(|_| Err(anyhow::anyhow!("exec thread panicked")));
        match (code, relayed) {
            (Ok(code), Ok(Ok(()))) => Ok(code),
            // No terminal was sent: the process never started and exec already said why.
            (Ok(code), Err(_)) => Ok(code),
            (Err(e), _) | (Ok(_), Ok(Err(e))) => Err(e),
        }
    })
}

/// Raw mode and the copy loop; the master is closed on return (the process sees a hangup).
fn relay_while_open(master: OwnedFd, input: BorrowedFd<'_>, output: BorrowedFd<'_>) -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    let _raw = RawMode::enable(input).context("set terminal to raw mode")?;
    let signals = [Signal::SIGWINCH, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT];
    let signals = SignalPipe::install(&signals).ok();
    relay(master.as_fd(), input, output, signals.as_ref().map(|s| s.reader.as_fd())).context("relay terminal")
}

/// Copies `input` → `master` and `master` → `output` until the pty's slave side is closed by
/// every process (read gives EIO or end of file). `signals` (a [`SignalPipe`]) resizes the pty on
/// SIGWINCH and ends the relay on any other signal.
pub fn relay(
    master: BorrowedFd<'_>,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    signals: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut input_open = true;
    loop {
        let mut fds = vec![PollFd::new(master, PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        if let Some(s) = signals {
            fds.push(PollFd::new(s, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        if ready[0] {
            match read(master, &mut buf)? {
                0 => return Ok(()),
                n => write_all(output, &buf[..n])?,
            }
        }
        if input_open && ready[1] {
            match read(input, &mut buf)? {
                0 => input_open = false,
                n => write_all(master, &buf[..n])?,
            }
        }
        if let Some(s) = signals
            && ready[ready.len() - 1]
        {
            let mut received = [0u8; 64];
            let n = nix::unistd::read(s, &mut received).unwrap_or(0);
            if received[..n].iter().any(|sig| *sig != nix::sys::signal::Signal::SIGWINCH as u8) {
                return Ok(());
            }
            if let Ok(size) = window_size(input) {
                let _ = set_window_size(master, size);
            }
        }
    }
}

/// `read`, retrying on EINTR; EIO (a pty whose slave is closed) counts as end of file.
fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
            Err(nix::Error::EIO) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_copies_both_ways_until_the_slave_closes() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&in_w, b"ping\n").unwrap();
        drop(in_w);
        // The "program": answers on the slave side, then closes it.
        let slave = pty.slave;
        let mut raw = termios::tcgetattr(slave.as_fd()).unwrap();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(slave.as_fd(), SetArg::TCSANOW, &raw).unwrap();
        let program = std::thread::spawn(move || {
            let mut buf = [0u8; 5];
            let mut got = 0;
            while got < 5 {
                got += nix::unistd::read(slave.as_fd(), &mut buf[got..]).unwrap();
            }
            nix::unistd::write(&slave, b"pong:").unwrap();
            nix::unistd::write(&slave, &buf).unwrap();
        });
        relay(pty.master.as_fd(), in_r.as_fd(), out_w.as_fd(), None).unwrap();
        program.join().unwrap();
        drop(out_w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        assert_eq!(out, "pong:ping\n");
    }
}
