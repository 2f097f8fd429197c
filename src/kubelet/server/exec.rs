//! `exec` over the WebSocket channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every
//! binary message starts with its channel — 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`,
//! 4 resize (`{"Width":…,"Height":…}`), 255 close (v5: `[255, 0]` ends stdin). Without a tty the
//! process gets pipes; with one, a pty from the container (the runtime's console-socket
//! protocol) whose size follows the resize channel.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::runtime::tty::{Console, WindowSize};
use crate::runtime::{ExecRequest, Runtime};

/// Subprotocols we speak, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The kubelet's exec query (`command` repeated, `input output error tty` as `1`/`true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecParams {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecParams {
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        let on = |name: &str| pairs.iter().any(|(k, v)| k == name && (v == "1" || v == "true"));
        ExecParams {
            command: pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
            stdin: on("input") || on("stdin"),
            stdout: on("output") || on("stdout"),
            stderr: on("error") || on("stderr"),
            tty: on("tty"),
        }
    }
}

/// The `Status` written on channel 3 for an exit code (`message` for an exec that failed).
pub fn exit_status(code: Result<i32, String>) -> Value {
    match code {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}}),
        Err(message) => {
            json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
        }
    }
}

/// A resize message's size.
pub fn parse_resize(data: &[u8]) -> Option<WindowSize> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let w = v.get("Width")?.as_u64()?;
    let h = v.get("Height")?.as_u64()?;
    Some(WindowSize { rows: u16::try_from(h).ok()?, cols: u16::try_from(w).ok()? })
}

/// A non-blocking fd (pipe end or pty master) for async reads and writes.
struct AsyncFile(AsyncFd<OwnedFd>);

impl AsyncFile {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(AsyncFile(crate::sys::pty::async_fd(fd)?))
    }

    /// Reads some bytes; 0 at end of file (EIO from a pty whose slave is closed counts as such).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match nix::unistd::read(self.0.get_ref().as_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(nix::Error::EAGAIN) => guard.clear_ready(),
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EIO) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match nix::unistd::write(self.0.get_ref(), data) {
                Ok(n) => data = &data[n..],
                Err(nix::Error::EAGAIN) => guard.clear_ready(),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dev_null(write: bool) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new().read(!write).write(write).open("/dev/null")?;
    Ok(f.into())
}

/// Copies `from` into `out` as messages on `channel` until end of file.
async fn pump(from: Arc<AsyncFile>, channel: u8, out: mpsc::UnboundedSender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf[0] = channel;
                if out.send(Message::Binary(buf[..=n].to_vec().into())).is_err() {
                    return;
                }
            }
        }
    }
}

/// What the process is connected to on our side.
struct Ends {
    stdin: Option<Arc<AsyncFile>>,
    outputs: Vec<(Arc<AsyncFile>, u8)>,
    /// The pty master (tty only), for resizes.
    pty: Option<Arc<AsyncFile>>,
}

/// Runs the exec on an upgraded socket: the process in container `id` with the socket's
/// channels as its stdio, then the exit status on channel 3 and a normal close.
pub async fn run(socket: WebSocket, runtime: Runtime, id: String, params: ExecParams) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(PROTOCOLS[0]);
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (code, ends) = match start(&runtime, &id, &params).await {
        Ok(started) => started,
        Err(e) => {
            finish(&out_tx, exit_status(Err(e)));
            drop(out_tx);
            let _ = writer.await;
            await_close(&mut incoming).await;
            return;
        }
    };
    let pumps: Vec<_> =
        ends.outputs.iter().map(|(f, ch)| tokio::spawn(pump(f.clone(), *ch, out_tx.clone()))).collect();
    let mut stdin = ends.stdin;
    let pty = ends.pty;
    let input = async {
        while let Some(Ok(msg)) = incoming.next().await {
            let data = match msg {
                Message::Binary(d) => d.to_vec(),
                Message::Text(t) => t.as_str().as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            match channel {
                STDIN => {
                    if let Some(f) = &stdin
                        && f.write_all(payload).await.is_err()
                    {
                        stdin = None;
                    }
                }
                RESIZE => {
                    if let (Some(p), Some(size)) = (&pty, parse_resize(payload)) {
                        let _ = crate::sys::pty::set_window_size(p.fd(), size);
                    }
                }
                CLOSE if v5 && payload.first() == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        // The client is gone (or closed): stdin ends, and a terminal hangs up as when its user
        // logs out (SIGHUP to its foreground process group), as closing the master would.
        stdin = None;
        if let Some(p) = &pty
            && let Ok(group) = nix::unistd::tcgetpgrp(p.fd())
            && group.as_raw() > 1
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-group.as_raw()),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
        std::future::pending::<()>().await
    };
    let code = tokio::select! {
        code = code => code,
        _ = input => unreachable!("input never completes"),
    };
    for p in pumps {
        let _ = p.await;
    }
    drop(pty);
    finish(&out_tx, exit_status(code));
    drop(out_tx);
    let _ = writer.await;
    await_close(&mut incoming).await;
}

/// The closing handshake's second half: after our Close, reads (and discards) what the client
/// still sends until its Close arrives. Dropping the socket before that would reset the
/// connection while a resize or keystroke is in flight, and a reset can discard the status
/// still on its way to the client (kubectl then reports close 1006 and exits 1).
async fn await_close(incoming: &mut futures_util::stream::SplitStream<WebSocket>) {
    let drain = async {
        while let Some(Ok(msg)) = incoming.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

fn finish(out: &mpsc::UnboundedSender<Message>, status: Value) {
    let mut msg = vec![ERROR];
    msg.extend_from_slice(status.to_string().as_bytes());
    let _ = out.send(Message::Binary(msg.into()));
    let _ = out.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() })));
}

type ExitFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i32, String>> + Send>>;

/// Starts the process; returns a future of its exit code and our ends of its stdio.
async fn start(runtime: &Runtime, id: &str, params: &ExecParams) -> Result<(ExitFuture, Ends), String> {
    let io = |e: std::io::Error| format!("exec: {e}");
    let mut req = ExecRequest { args: params.command.clone(), ..Default::default() };
    let runtime = runtime.clone();
    let id = id.to_string();
    if params.tty {
        let (console, ours) = Console::pair(None).map_err(|e| e.to_string())?;
        req.terminal = Some(console);
        let exec = tokio::task::spawn_blocking(move || runtime.exec(&id, &req).map_err(|e| e.to_string()));
        // The console is dropped with the request when exec returns: a failure before the
        // terminal was sent ends this wait with an error.
        let master = tokio::task::spawn_blocking(move || crate::runtime::tty::receive_fd(ours.as_fd()))
            .await
            .map_err(|e| e.to_string())?;
        let exit: ExitFuture = Box::pin(async move { exec.await.map_err(|e| e.to_string()).and_then(|r| r) });
        let master = match master {
            Ok(m) => m,
            Err(e) => {
                let code = exit.await;
                return Err(code.err().unwrap_or_else(|| e.to_string()));
            }
        };
        let master = Arc::new(AsyncFile::new(master).map_err(io)?);
        let stdin = params.stdin.then(|| master.clone());
        let outputs = if params.stdout { vec![(master.clone(), STDOUT)] } else { vec![] };
        return Ok((exit, Ends { stdin, outputs, pty: Some(master) }));
    }
    let (stdin_theirs, stdin_ours) = if params.stdin {
        let (r, w) = pipe().map_err(io)?;
        (r, Some(Arc::new(AsyncFile::new(w).map_err(io)?)))
    } else {
        (dev_null(false).map_err(io)?, None)
    };
    let mut outputs = Vec::new();
    let mut theirs = vec![stdin_theirs];
    for (wanted, channel) in [(params.stdout, STDOUT), (params.stderr, STDERR)] {
        if wanted {
            let (r, w) = pipe().map_err(io)?;
            outputs.push((Arc::new(AsyncFile::new(r).map_err(io)?), channel));
            theirs.push(w);
        } else {
            theirs.push(dev_null(true).map_err(io)?);
        }
    }
    let stdio: [OwnedFd; 3] = theirs.try_into().map_err(|_| "exec: stdio".to_string())?;
    tracing::debug!(fds = ?stdio.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>(), "exec stdio");
    req.stdio = Some(Arc::new(stdio));
    // The request (with the process's ends of the pipes) is dropped when exec returns, so the
    // outputs reach end of file once the process and its children are gone.
    let exec = tokio::task::spawn_blocking(move || runtime.exec(&id, &req).map_err(|e| e.to_string()));
    let exit: ExitFuture = Box::pin(async move { exec.await.map_err(|e| e.to_string()).and_then(|r| r) });
    Ok((exit, Ends { stdin: stdin_ours, outputs, pty: None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_query() {
        let q: Vec<(String, String)> = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "exit 3"),
            ("input", "1"),
            ("output", "1"),
            ("tty", "1"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let p = ExecParams::from_query(&q);
        assert_eq!(p.command, ["sh", "-c", "exit 3"]);
        assert!(p.stdin && p.stdout && p.tty && !p.stderr);
    }

    #[test]
    fn statuses_make_kubectl_exit_with_the_code() {
        assert_eq!(exit_status(Ok(0)), json!({"metadata": {}, "status": "Success"}));
        let s = exit_status(Ok(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        assert_eq!(exit_status(Err("boom".into()))["message"], "boom");
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some(WindowSize { rows: 24, cols: 80 }));
        assert_eq!(parse_resize(b"{}"), None);
    }
}
