//! Container terminals, runtime side: the runc console-socket protocol. The container's process
//! opens `/dev/ptmx` after it has entered the container's mount namespace (so the pty comes from
//! the container's own devpts instance), sends the master over a connected unix socket in one
//! `SCM_RIGHTS` message, and keeps the slave as stdin/stdout/stderr and controlling terminal.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};

pub use crate::sys::pty::WindowSize;

/// Errors of terminal setup and the console socket.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// `process.terminal` without a socket to send the master to.
    #[error("process.terminal is true: --console-socket is required")]
    SocketRequired,
    /// A socket but no terminal requested.
    #[error("--console-socket given but process.terminal is false (use a terminal or drop the socket)")]
    SocketWithoutTerminal,
    /// Connecting to the console socket.
    #[error("connect to console socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A step of pty setup or fd passing.
    #[error("terminal: {step}: {source}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the socket without sending a terminal.
    #[error("terminal: the container process ended before sending its terminal")]
    NoMaster,
}

fn step<E: Into<std::io::Error>>(what: &'static str) -> impl FnOnce(E) -> TtyError {
    move |e| TtyError::Step { step: what, source: e.into() }
}

/// runc's rule: a terminal needs a console socket, and a console socket needs a terminal.
pub fn check_console_flags(terminal: bool, has_socket: bool) -> Result<(), TtyError> {
    match (terminal, has_socket) {
        (true, false) => Err(TtyError::SocketRequired),
        (false, true) => Err(TtyError::SocketWithoutTerminal),
        _ => Ok(()),
    }
}

/// Where a container process sends its terminal master, and the size to start with.
#[derive(Debug, Clone)]
pub struct Console {
    /// A connected unix socket (shared so requests stay cheap to clone).
    pub socket: Arc<OwnedFd>,
    /// Initial window size; `None` leaves the kernel default (0x0).
    pub size: Option<WindowSize>,
}

impl Console {
    /// Connects to the console socket at `path` (a listening `SOCK_STREAM` unix socket).
    pub fn connect(path: &Path, size: Option<WindowSize>) -> Result<Self, TtyError> {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .map_err(|source| TtyError::Connect { path: path.to_path_buf(), source })?;
        Ok(Console { socket: Arc::new(stream.into()), size })
    }

    /// A connected socket pair: the console for the container, and our end to receive on.
    pub fn pair(size: Option<WindowSize>) -> Result<(Self, OwnedFd), TtyError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .map_err(step("create console socket pair"))?;
        Ok((Console { socket: Arc::new(theirs), size }, ours))
    }
}

/// In the container process (session leader, inside the container's mount namespace): allocates
/// a pty from `/dev/ptmx`, sets its size, gives the slave to `owner` (uid, gid: the user the
/// process will run as, so it may change its own terminal's mode), sends the master over the
/// console socket and makes the slave fds 0-2 and the controlling terminal.
pub fn attach_new_terminal(console: &Console, owner: (u32, u32)) -> Result<(), TtyError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(step("open /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(step("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(step("unlockpt"))?;
    let master = OwnedFd::from(master);
    if let Some(size) = console.size {
        crate::sys::pty::set_window_size(master.as_fd(), size).map_err(step("set window size"))?;
    }
    let slave = crate::sys::pty::open_peer(master.as_fd()).map_err(step("open pty slave"))?;
    let (uid, gid) = (nix::unistd::Uid::from_raw(owner.0), nix::unistd::Gid::from_raw(owner.1));
    match nix::unistd::fchown(slave.as_fd(), Some(uid), Some(gid)) {
        // As runc: in a user namespace the ids or the slave's owner may be unmapped; the
        // terminal then keeps its owner rather than failing the process.
        Ok(()) | Err(nix::Error::EPERM | nix::Error::EINVAL) => {}
        Err(e) => return Err(step("chown pty slave")(e)),
    }
    send_fd(console.socket.as_fd(), master.as_fd(), b"/dev/ptmx")?;
    drop(master);
    nix::unistd::dup2_stdin(slave.as_fd()).map_err(step("pty slave as stdin"))?;
    nix::unistd::dup2_stdout(slave.as_fd()).map_err(step("pty slave as stdout"))?;
    nix::unistd::dup2_stderr(slave.as_fd()).map_err(step("pty slave as stderr"))?;
    drop(slave);
    crate::sys::pty::set_controlling_terminal(std::io::stdin().as_fd())
        .map_err(step("set controlling terminal"))
}

/// Sends `fd` over the unix socket `socket` in one message whose payload is `name`.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &[u8]) -> Result<(), TtyError> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(step("send terminal over console socket"))?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`] (or by runc-compatible peers) on `socket`.
pub fn receive_fd(socket: BorrowedFd<'_>) -> Result<OwnedFd, TtyError> {
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(step("receive terminal from console socket"))?;
    let cmsgs = msg.cmsgs().map_err(step("read console socket message"))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            let mut owned = fds.into_iter().filter_map(|fd| crate::sys::container::adopt_fd(fd).ok());
            if let Some(first) = owned.next() {
                return Ok(first);
            }
        }
    }
    Err(TtyError::NoMaster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_and_console_socket_go_together() {
        assert!(check_console_flags(false, false).is_ok());
        assert!(check_console_flags(true, true).is_ok());
        assert!(matches!(check_console_flags(true, false), Err(TtyError::SocketRequired)));
        assert!(matches!(check_console_flags(false, true), Err(TtyError::SocketWithoutTerminal)));
    }

    #[test]
    fn passes_a_descriptor_over_a_socket_pair() {
        let (console, ours) = Console::pair(None).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fd(console.socket.as_fd(), w.as_fd(), b"pipe").unwrap();
        drop(w);
        let received = receive_fd(ours.as_fd()).unwrap();
        nix::unistd::write(&received, b"x").unwrap();
        drop(received);
        let mut buf = [0u8; 2];
        assert_eq!(nix::unistd::read(r.as_fd(), &mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"x");
    }

    #[test]
    fn closed_socket_without_a_descriptor_is_an_error() {
        let (console, ours) = Console::pair(None).unwrap();
        drop(console);
        assert!(matches!(receive_fd(ours.as_fd()), Err(TtyError::NoMaster)));
    }
}
