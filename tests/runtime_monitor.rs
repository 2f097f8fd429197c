//! The freestanding `rkube-monitor` (root): what it writes for a container (CRI log records with
//! partial lines, exit.json after a signal), that it is a static program costing well under
//! 1 MB RSS, and its pause mode as PID 1 of a new pid namespace.

#[path = "support/runtime.rs"]
mod runtime;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rkube::runtime::ExitInfo;
use rkube::runtime::state::StateDir;
use runtime::TestRuntime;

/// The monitor binary the tests' runtime execs.
fn monitor_binary() -> PathBuf {
    runtime::rkubelet().with_file_name("rkube-monitor")
}

/// Polls `condition` every 10 ms until it returns `Some` or the deadline passes.
fn poll<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `Key:  value kB` field of `/proc/<pid>/status`.
fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

#[test]
fn cri_log_splits_long_lines_and_keeps_stderr() {
    let rt = TestRuntime::new();
    let id = runtime::unique("mlog");
    // 40000 x's and a newline, a line on stderr, a 16384-byte line, then an unterminated tail.
    let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; echo oops >&2; \
        head -c 16384 /dev/zero | tr '\\0' y; echo; printf tail";
    let bundle = rt.bundle(&id, &["sh", "-c", script]);
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit, ExitInfo { code: 0, signal: None, oom_killed: false });
    let records: Vec<(&str, &str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""))
        })
        .collect();
    for (time, ..) in &records {
        assert!(time.len() == 30 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    }
    let stdout: Vec<(&str, String)> = records
        .iter()
        .filter(|r| r.1 == "stdout")
        .map(|r| (r.2, format!("{}x{}", r.3.chars().next().unwrap_or('-'), r.3.len())))
        .collect();
    let expected = [("P", "xx16384"), ("P", "xx16384"), ("F", "xx7232"), ("F", "yx16384"), ("F", "tx4")];
    let expected: Vec<(&str, String)> = expected.iter().map(|(t, s)| (*t, s.to_string())).collect();
    assert_eq!(stdout, expected);
    assert!(records.iter().any(|r| r.3 == "tail"));
    assert_eq!(runtime::cri_lines(&log, "stderr"), vec!["oops"]);
}

#[test]
fn exit_json_after_sigkill_reports_the_signal() {
    let rt = TestRuntime::new();
    let id = runtime::unique("mkill");
    let bundle = rt.bundle(&id, &["sleep", "60"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    rt.runtime.kill(&id, Signal::SIGKILL, false).unwrap();
    let exit = rt.runtime.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(exit, ExitInfo { code: 137, signal: Some(9), oom_killed: false });
    // Byte for byte what the runtime itself would write.
    let written = std::fs::read(StateDir::new(&rt.runtime.root, &id).exit_file()).unwrap();
    assert_eq!(written, serde_json::to_vec(&exit).unwrap());
    rt.runtime.delete(&id, false).unwrap();
}

#[test]
fn monitor_is_a_static_executable_without_interpreter() {
    let elf = std::fs::read(monitor_binary()).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(u16_at(16), 2, "ET_EXEC: not position-independent, needs no loader to relocate it");
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56) as usize);
    let types: Vec<u32> = (0..phnum)
        .map(|i| u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap()))
        .collect();
    assert!(!types.contains(&3), "PT_INTERP present: {types:?}");
    assert!(!types.contains(&2), "PT_DYNAMIC present: {types:?}");
    assert!(elf.len() < 64 * 1024, "monitor is {} bytes", elf.len());
    // Without arguments it explains itself in one line and fails.
    let out = Command::new(monitor_binary()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: rkube-monitor"));
}

#[test]
fn monitor_of_a_running_container_stays_under_one_megabyte() {
    let rt = TestRuntime::new();
    let id = runtime::unique("mrss");
    let bundle = rt.bundle(&id, &["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo; exec sleep 60"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let record = StateDir::new(&rt.runtime.root, &id).read_record(&id).unwrap();
    let monitor = record.monitor_pid;
    poll("the monitor to exec rkube-monitor", Duration::from_secs(10), || {
        let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).ok()?;
        (exe.file_name()? == "rkube-monitor").then_some(())
    });
    // Its buffers are in use once the long line is in the log.
    let log_path = bundle.path().join("ctr.log");
    poll("the long line in the log", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        (log.lines().count() >= 3).then_some(())
    });
    let rss = status_field(monitor, "VmRSS").unwrap();
    let kb: u64 = rss.trim_end_matches(" kB").parse().unwrap();
    eprintln!("rkube-monitor RSS: {kb} kB");
    assert!(kb < 1024, "monitor RSS {kb} kB");
    let maps = std::fs::read_to_string(format!("/proc/{monitor}/maps")).unwrap();
    assert!(!maps.contains("libc") && !maps.contains("ld-linux"), "{maps}");
    rt.runtime.kill(&id, Signal::SIGKILL, false).unwrap();
    rt.runtime.wait(&id, Some(Duration::from_secs(30))).unwrap();
    rt.runtime.delete(&id, false).unwrap();
}

/// `unshare --pid --fork rkube-monitor pause`: the pause process is PID 1 of a new pid
/// namespace. Dropping kills what is still running (the namespace dies with its PID 1).
struct PauseNamespace {
    unshare: Child,
    pause: i32,
}

impl PauseNamespace {
    fn start() -> Self {
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(monitor_binary())
            .arg("pause")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let parent = unshare.id() as i32;
        let mut ns = PauseNamespace { unshare, pause: 0 };
        ns.pause = poll("the pause process", Duration::from_secs(10), || {
            let pid = children_of(parent).into_iter().next()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            (exe.file_name()? == "rkube-monitor").then_some(pid)
        });
        assert_eq!(status_field(ns.pause, "NSpid").unwrap().split_whitespace().last(), Some("1"));
        ns
    }

    /// Runs a busybox shell command inside the namespace (not as a child of the pause process).
    fn run_inside(&self, script: &str) -> std::process::ExitStatus {
        Command::new("nsenter")
            .args(["--target", &self.pause.to_string(), "--pid", "--", "/bin/busybox", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
    }

    /// Waits for the namespace to end; returns unshare's exit code (the pause process's).
    fn wait_exit(&mut self) -> Option<i32> {
        let unshare = &mut self.unshare;
        let status = poll("pause to exit", Duration::from_secs(10), || unshare.try_wait().unwrap());
        status.code()
    }
}

impl Drop for PauseNamespace {
    fn drop(&mut self) {
        if self.unshare.try_wait().ok().flatten().is_none() {
            if self.pause > 0 && children_of(self.unshare.id() as i32).contains(&self.pause) {
                let _ = kill(Pid::from_raw(self.pause), Signal::SIGKILL);
            }
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// Host pids whose parent is `parent` (zombies included).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| status_field(*pid, "PPid").and_then(|p| p.parse().ok()) == Some(parent))
        .collect()
}

/// Orphans re-parented to the pause process: started inside the namespace by a shell that
/// exits at once, so their parent becomes the namespace's PID 1.
fn orphan_sleepers(ns: &PauseNamespace, count: usize) {
    let script = "/bin/busybox sleep 2 & ".repeat(count);
    let status = ns.run_inside(&script);
    assert!(status.success(), "{script}: {status}");
    assert_eq!(children_of(ns.pause).len(), count, "orphans adopted by the pause process");
}

#[test]
fn pause_reaps_orphans_and_exits_zero_on_sigterm() {
    let mut ns = PauseNamespace::start();
    // Several children ending together: one SIGCHLD may stand for all of them.
    orphan_sleepers(&ns, 5);
    poll("the orphans to be reaped", Duration::from_secs(10), || {
        children_of(ns.pause).is_empty().then_some(())
    });
    orphan_sleepers(&ns, 2);
    poll("the second orphans to be reaped", Duration::from_secs(10), || {
        children_of(ns.pause).is_empty().then_some(())
    });
    kill(Pid::from_raw(ns.pause), Signal::SIGTERM).unwrap();
    assert_eq!(ns.wait_exit(), Some(0));
}

#[test]
fn pause_exits_zero_on_sigint_sent_from_inside_its_namespace() {
    let mut ns = PauseNamespace::start();
    // Inside the namespace it is PID 1, which ignores signals it neither handles nor blocks.
    // The shell itself may die with the namespace before it exits on its own.
    ns.run_inside("/bin/busybox kill -INT 1");
    assert_eq!(ns.wait_exit(), Some(0));
}
