//! Terminals on the real kernel: `run` with `process.terminal` and a console socket the test
//! listens on, `exec` with a terminal through the API and the CLI's console socket, the CLI's own
//! relay driven from a pty the test owns (the "user's terminal"), `rkubelet exec -it|-i` on a pod,
//! and the console flag errors.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/runtime.rs"]
mod runtime;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rkube::runtime::tty::{self, Console, WindowSize};
use rkube::sys::pty::{set_window_size, window_size};
use runtime::{Bundle, TestRuntime};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Kills and reaps a spawned CLI if the test ends before it does.
struct ChildGuard(Child);

impl ChildGuard {
    /// Waits for the exit code, with a deadline.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("rkubelet did not exit in time");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads from a terminal master until `output` contains `want`; returns everything read.
fn expect(master: BorrowedFd<'_>, output: &mut String, want: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    while !output.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {want:?}; terminal showed {output:?}");
        let mut fds = [PollFd::new(master, PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).unwrap() == 0 {
            continue;
        }
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::Error::EIO) => panic!("terminal closed before {want:?}; it showed {output:?}"),
            Ok(n) => output.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("read terminal: {e}"),
        }
    }
    output.clone()
}

fn type_line(master: BorrowedFd<'_>, line: &str) {
    let mut data = line.as_bytes();
    while !data.is_empty() {
        let n = nix::unistd::write(master, data).unwrap();
        data = &data[n..];
    }
}

/// A busybox bundle with `tty` and `stty` available.
fn terminal_bundle(rt: &TestRuntime, id: &str, args: &[&str]) -> Bundle {
    let bundle = rt.bundle(id, args);
    for applet in ["tty", "stty"] {
        std::os::unix::fs::symlink("busybox", bundle.rootfs().join("bin").join(applet)).unwrap();
    }
    bundle
}

/// `rkubelet runtime …` against the test runtime, spawned with the given stdio.
fn spawn_cli(rt: &TestRuntime, args: &[&str], stdio: [Stdio; 3]) -> ChildGuard {
    let [stdin, stdout, stderr] = stdio;
    let child = Command::new(runtime::rkubelet())
        .arg("runtime")
        .arg("--root")
        .arg(&rt.runtime.root)
        .args(["--cgroup-parent", &rt.parent])
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// Accepts one connection on `listener` (with a deadline) and receives the terminal master.
/// On failure, shows how the CLI ended and what it wrote to `stderr`.
fn accept_master(listener: &UnixListener, cli: &mut ChildGuard, stderr: &Path) -> OwnedFd {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, PollTimeout::from(20_000u16)).unwrap(),
        1,
        "nobody connected to the console socket"
    );
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tty::receive_fd(stream.as_fd()).unwrap_or_else(|e| {
        let code = cli.wait();
        panic!("{e}; rkubelet exited {code:?}: {}", std::fs::read_to_string(stderr).unwrap_or_default())
    })
}

/// Leftovers of a test runtime: containers in its state dir.
fn assert_no_containers(rt: &TestRuntime) {
    assert!(rt.runtime.list().unwrap().is_empty(), "containers left behind");
}

#[test]
fn run_sends_the_terminal_to_the_console_socket() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tty-run");
    let script = "stty size; read x; echo got:$x; tty; [ -t 0 ] && [ -t 1 ] && echo in-and-out-are-ttys; \
        stty size; exit 4";
    let mut bundle = terminal_bundle(&rt, &id, &["sh", "-c", script]);
    bundle.spec["process"]["terminal"] = true.into();
    bundle.spec["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 90});
    bundle.write();
    let socket = rt.run_dir.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let bundle_path = bundle.path().to_str().unwrap();
    let err = rt.run_dir.path().join("run.err");
    let mut cli = spawn_cli(
        &rt,
        &["run", "--console-socket", socket.to_str().unwrap(), "-b", bundle_path, &id],
        [Stdio::null(), Stdio::null(), std::fs::File::create(&err).unwrap().into()],
    );
    let master = accept_master(&listener, &mut cli, &err);
    let mut out = String::new();
    // The size from process.consoleSize is in place before the program starts.
    expect(master.as_fd(), &mut out, "30 90");
    set_window_size(master.as_fd(), WindowSize { rows: 40, cols: 100 }).unwrap();
    type_line(master.as_fd(), "hello\n");
    let shown = expect(master.as_fd(), &mut out, "40 100");
    assert!(shown.contains("got:hello"), "{shown:?}");
    assert!(shown.contains("/dev/pts/0"), "{shown:?}");
    assert!(shown.contains("in-and-out-are-ttys"), "{shown:?}");
    assert_eq!(cli.wait(), Some(4), "{}", std::fs::read_to_string(&err).unwrap());
    assert_no_containers(&rt);
}

#[test]
fn exec_with_a_terminal_through_the_api_and_the_console_socket() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tty-exec");
    let bundle = terminal_bundle(&rt, &id, &["sleep", "60"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let script = "read x; echo got:$x; tty; [ -t 0 ] && echo stdin-is-a-tty; stty size; exit 7";

    // In-process: the master comes back on our end of a socket pair while exec runs. As user
    // `web`, who owns the terminal.
    let (console, ours) = Console::pair(Some(WindowSize { rows: 25, cols: 70 })).unwrap();
    let as_web = format!("echo owner-$(stat -c %u:%g $(tty)); {script}");
    let req = rkube::runtime::ExecRequest {
        args: vec!["sh".into(), "-c".into(), as_web],
        user: Some("web".into()),
        terminal: Some(console),
        ..Default::default()
    };
    let code = std::thread::scope(|s| {
        let exec = s.spawn(|| rt.runtime.exec(&id, &req).unwrap());
        let ours = UnixStream::from(ours);
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();
        let master = tty::receive_fd(ours.as_fd()).unwrap();
        type_line(master.as_fd(), "api\n");
        let mut out = String::new();
        let shown = expect(master.as_fd(), &mut out, "25 70");
        assert!(shown.contains("got:api"), "{shown:?}");
        assert!(shown.contains("owner-1000:1000"), "{shown:?}");
        // The container's own devpts instance: its first pty.
        assert!(shown.contains("/dev/pts/0"), "{shown:?}");
        assert!(shown.contains("stdin-is-a-tty"), "{shown:?}");
        exec.join().unwrap()
    });
    assert_eq!(code, 7);

    // The CLI with --console-socket, runc's way.
    let socket = rt.run_dir.path().join("exec.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let err = rt.run_dir.path().join("exec.err");
    let mut cli = spawn_cli(
        &rt,
        &["exec", "-t", "--console-socket", socket.to_str().unwrap(), &id, "sh", "-c", script],
        [Stdio::null(), Stdio::null(), std::fs::File::create(&err).unwrap().into()],
    );
    let master = accept_master(&listener, &mut cli, &err);
    set_window_size(master.as_fd(), WindowSize { rows: 33, cols: 77 }).unwrap();
    type_line(master.as_fd(), "cli\n");
    let mut out = String::new();
    let shown = expect(master.as_fd(), &mut out, "33 77");
    assert!(shown.contains("got:cli"), "{shown:?}");
    assert_eq!(cli.wait(), Some(7), "{}", std::fs::read_to_string(&err).unwrap());
}

/// The terminal flags that raw mode changes, to compare before and after.
fn mode(fd: BorrowedFd<'_>) -> (u32, u32, u32) {
    let t = nix::sys::termios::tcgetattr(fd).unwrap();
    (t.input_flags.bits() as u32, t.output_flags.bits() as u32, t.local_flags.bits() as u32)
}

#[test]
fn cli_relays_our_terminal_and_restores_its_mode() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tty-cli");
    let bundle = terminal_bundle(&rt, &id, &["sleep", "60"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    // The test is the user: its pty's slave is the CLI's terminal.
    let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let before = mode(pty.slave.as_fd());
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut cli =
        spawn_cli(&rt, &["exec", "-t", &id, "sh"], [slave(&pty.slave), slave(&pty.slave), slave(&pty.slave)]);
    let master = pty.master.as_fd();
    let mut out = String::new();
    expect(master, &mut out, "# ");
    // The initial size is ours; the shell's answer (not the echo of our line) holds the sum.
    let start = out.len();
    type_line(master, "stty size; echo sum-$((6*7))\n");
    let shown = expect(master, &mut out, "sum-42");
    assert!(shown[start..].contains("24 80"), "{shown:?}");
    // A resize of our terminal reaches the container's (SIGWINCH, as a terminal emulator would send).
    let resized = WindowSize { rows: 50, cols: 132 };
    set_window_size(pty.slave.as_fd(), resized).unwrap();
    let cli_pid = nix::unistd::Pid::from_raw(cli.0.id() as i32);
    nix::sys::signal::kill(cli_pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    for round in 1000.. {
        let start = out.len();
        type_line(master, &format!("stty size; echo mark-$(({round}+1))\n"));
        let shown = expect(master, &mut out, &format!("mark-{}", round + 1));
        if shown[start..].contains("50 132") {
            break;
        }
        assert!(Instant::now() < deadline, "resize never arrived: {shown:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    type_line(master, "exit 3\n");
    assert_eq!(cli.wait(), Some(3), "terminal showed {out:?}");
    assert_eq!(mode(pty.slave.as_fd()), before, "terminal mode not restored");
    assert_eq!(window_size(pty.slave.as_fd()).unwrap(), resized);

    // A program that is not there: exec's own error and exit code, no wait for a terminal.
    let mut cli = spawn_cli(
        &rt,
        &["exec", "-t", &id, "no-such-program"],
        [slave(&pty.slave), slave(&pty.slave), slave(&pty.slave)],
    );
    assert_eq!(cli.wait(), Some(126));
    let mut out = String::new();
    expect(master, &mut out, "executable file not found");
    assert_eq!(mode(pty.slave.as_fd()), before, "terminal mode changed");

    // SIGTERM to the CLI: it hangs up the pty (the shell gets SIGHUP) and still restores our mode.
    let mut cli =
        spawn_cli(&rt, &["exec", "-t", &id, "sh"], [slave(&pty.slave), slave(&pty.slave), slave(&pty.slave)]);
    let mut out = String::new();
    expect(master, &mut out, "# ");
    assert_ne!(mode(pty.slave.as_fd()), before, "not in raw mode while relaying");
    let cli_pid = nix::unistd::Pid::from_raw(cli.0.id() as i32);
    nix::sys::signal::kill(cli_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(cli.wait(), Some(128 + libc::SIGHUP));
    assert_eq!(mode(pty.slave.as_fd()), before, "terminal mode not restored after SIGTERM");
}

#[test]
fn cli_run_in_the_foreground_relays_the_terminal_without_a_socket() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tty-fg");
    let mut bundle = terminal_bundle(&rt, &id, &["sh", "-c", "tty; stty size; read x; echo got-$x; exit 5"]);
    bundle.spec["process"]["terminal"] = true.into();
    bundle.write();
    let size = nix::pty::Winsize { ws_row: 22, ws_col: 66, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let before = mode(pty.slave.as_fd());
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let bundle_path = bundle.path().to_str().unwrap();
    let mut cli = spawn_cli(
        &rt,
        &["run", "-b", bundle_path, &id],
        [slave(&pty.slave), slave(&pty.slave), slave(&pty.slave)],
    );
    let master = pty.master.as_fd();
    let mut out = String::new();
    let shown = expect(master, &mut out, "22 66");
    assert!(shown.contains("/dev/pts/0"), "{shown:?}");
    type_line(master, "fg\n");
    expect(master, &mut out, "got-fg");
    assert_eq!(cli.wait(), Some(5), "terminal showed {out:?}");
    assert_eq!(mode(pty.slave.as_fd()), before, "terminal mode not restored");
    assert_no_containers(&rt);
}

/// Runs the CLI with null stdin and returns (exit code, stderr).
fn fails(rt: &TestRuntime, args: &[&str]) -> (Option<i32>, String) {
    let out = rt.cli(args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_line(err: &str, want: &str) {
    assert!(err.contains(want), "expected {want:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
}

#[test]
fn console_flags_must_match_the_terminal() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tty-err");
    let mut bundle = terminal_bundle(&rt, &id, &["sleep", "60"]);
    let path = bundle.path().to_str().unwrap().to_string();
    let socket = rt.run_dir.path().join("unused.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    let socket = socket.to_str().unwrap();

    // A console socket without process.terminal.
    let (code, err) = fails(&rt, &["run", "--console-socket", socket, "-b", &path, &id]);
    assert_eq!(code, Some(1));
    assert_one_line(&err, "--console-socket given but process.terminal is false");
    // process.terminal without a console socket, through the CLI and the API.
    bundle.spec["process"]["terminal"] = true.into();
    bundle.write();
    for args in [&["create", "-b", &path, &id][..], &["run", "-d", "-b", &path, &id]] {
        let (code, err) = fails(&rt, args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_one_line(&err, "--console-socket is required");
    }
    // A foreground run relays the terminal itself, which needs our stdin to be one.
    let (code, err) = fails(&rt, &["run", "-b", &path, &id]);
    assert_eq!(code, Some(1));
    assert_one_line(&err, "Unable to use a TTY - input is not a terminal");
    let api = rt.runtime.create(&rt.request(&id, &bundle)).unwrap_err();
    assert!(api.to_string().contains("--console-socket is required"), "{api}");
    assert_no_containers(&rt);
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/{}", rt.cgroup_path(&id))).exists());
    assert!(!Path::new(&format!("/sys/fs/cgroup/{}", rt.cgroup_path(&id))).exists());

    // exec: a socket without -t, and -t when our stdin is not a terminal.
    bundle.spec["process"]["terminal"] = false.into();
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let (code, err) = fails(&rt, &["exec", "--console-socket", socket, &id, "true"]);
    assert_eq!(code, Some(1));
    assert_one_line(&err, "--console-socket given but process.terminal is false");
    let (code, err) = fails(&rt, &["exec", "-t", &id, "true"]);
    assert_eq!(code, Some(1));
    assert_one_line(&err, "Unable to use a TTY - input is not a terminal");
}

#[test]
fn pod_exec_with_tty_and_interactive_stdin() {
    let node = pod::PodNode::new(61);
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: shell}}\nspec:\n  containers:\n  - name: c\n    \
         image: {}\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n",
        pod::IMAGE
    );
    let out = node.run_yaml("shell", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rk = |args: &[&str], stdio: [Stdio; 3]| {
        let [stdin, stdout, stderr] = stdio;
        let child = Command::new(runtime::rkubelet())
            .arg("exec")
            .args(args)
            .args(node.flags())
            .arg("--")
            .args(["sh"])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        ChildGuard(child)
    };

    // -it from a terminal: an interactive shell on the container's own pty.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut cli = rk(&["-it", "shell", "-c", "c"], [slave(&pty.slave), slave(&pty.slave), slave(&pty.slave)]);
    let master = pty.master.as_fd();
    let mut out = String::new();
    expect(master, &mut out, "# ");
    type_line(master, "tty; echo two-$((1+1))\n");
    let shown = expect(master, &mut out, "two-2");
    assert!(shown.contains("/dev/pts/0"), "{shown:?}");
    type_line(master, "exit 2\n");
    assert_eq!(cli.wait(), Some(2), "terminal showed {out:?}");

    // -i without a terminal: our stdin reaches the process; without -i it reads /dev/null.
    let dir = tempfile::tempdir().unwrap();
    for (flags, want) in [(&["-i"][..], "from-stdin\n"), (&[][..], "")] {
        let input = dir.path().join("in");
        std::fs::write(&input, "echo from-stdin\n").unwrap();
        let output = dir.path().join("out");
        let mut args = flags.to_vec();
        args.extend(["shell", "-c", "c"]);
        let files = [
            Stdio::from(std::fs::File::open(&input).unwrap()),
            Stdio::from(std::fs::File::create(&output).unwrap()),
            Stdio::null(),
        ];
        assert_eq!(rk(&args, files).wait(), Some(0), "{flags:?}");
        assert_eq!(std::fs::read_to_string(&output).unwrap(), want, "{flags:?}");
    }

    // -t when our stdin is not a terminal: kubectl's message, one line.
    let err = dir.path().join("err");
    let code =
        rk(&["-t", "shell"], [Stdio::null(), Stdio::null(), std::fs::File::create(&err).unwrap().into()])
            .wait();
    assert_eq!(code, Some(1));
    assert_one_line(&std::fs::read_to_string(&err).unwrap(), "Unable to use a TTY - input is not a terminal");
}
