//! CVE-2019-5736: a container must not be able to overwrite the runtime binary through
//! `/proc/<pid>/exe`. The runtime re-executes itself from a detached read-only mount of its
//! binary, or (`run` into a new pid namespace) lets init exec through a read-only clone of
//! `rkube-monitor`, so every open for writing through an exe link fails with EROFS.
//! The test runs a private copy of rkubelet, so a regression cannot damage the build.

#[path = "support/runtime.rs"]
mod runtime;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use rkube::runtime::ExecRequest;
use runtime::TestRuntime;
use sha2::Digest;

fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn cli(binary: &Path, rt: &TestRuntime, args: &[&str]) -> (Option<i32>, String, String) {
    let out = rt.run_dir.path().join(runtime::unique("out"));
    let err = rt.run_dir.path().join(runtime::unique("err"));
    let status = Command::new(binary)
        .args(["runtime", "--root", rt.runtime.root.to_str().unwrap(), "--cgroup-parent", &rt.parent])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap())
}

#[test]
fn runtime_binary_cannot_be_overwritten_from_the_container() {
    let rt = TestRuntime::new();
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = bin_dir.path().join("rkubelet");
    std::fs::copy(runtime::rkubelet(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = sha256(&binary);

    // 1. The container's entrypoint is the runtime itself (`/proc/self/exe` of init), which then
    //    tries to open its own binary for writing.
    let id = runtime::unique("exe");
    let mut bundle = rt.bundle(&id, &["/proc/self/exe", "runtime", "__probe", "write-exe"]);
    bundle.add_host_libs_and_probe(&runtime::rkubelet());
    bundle.write();
    let (code, stdout, stderr) =
        cli(&binary, &rt, &["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("EROFS"), "expected EROFS, got {stdout:?} {stderr}");

    // 2. From the host, while init waits for start: the exe link of init is read-only too.
    let id = runtime::unique("exe");
    let bundle = rt.bundle(&id, &["true"]);
    let (code, _, stderr) = cli(&binary, &rt, &["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(code, Some(0), "{stderr}");
    let state = rt.runtime.state(&id).unwrap();
    let open =
        std::fs::OpenOptions::new().write(true).truncate(true).open(format!("/proc/{}/exe", state.pid));
    assert_eq!(open.unwrap_err().raw_os_error(), Some(libc::EROFS));
    let (code, _, stderr) = cli(&binary, &rt, &["delete", &id]);
    assert_eq!(code, Some(0), "{stderr}");

    assert_eq!(sha256(&binary), before, "the runtime binary changed");
}

/// `run` with `rkube-monitor` installed skips the sealing re-exec: init execs its program through
/// a read-only clone of the monitor. A container whose program is `/proc/self/exe` then runs that
/// clone (here in its pause mode), and its exe link is read-only from the host as well.
#[test]
fn run_without_re_exec_reaches_only_a_read_only_monitor() {
    let rt = TestRuntime::new();
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = bin_dir.path().join("rkubelet");
    let monitor = bin_dir.path().join("rkube-monitor");
    std::fs::copy(runtime::rkubelet(), &binary).unwrap();
    std::fs::copy(runtime::rkubelet().with_file_name("rkube-monitor"), &monitor).unwrap();
    let before = (sha256(&binary), sha256(&monitor));

    let id = runtime::unique("exe");
    let bundle = rt.bundle(&id, &["/proc/self/exe", "pause"]);
    let (code, _, stderr) =
        cli(&binary, &rt, &["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(code, Some(0), "{stderr}");
    let pid = rt.runtime.state(&id).unwrap().pid;
    let inode = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).unwrap();
    assert_eq!(inode(&format!("/proc/{pid}/exe")), inode(monitor.to_str().unwrap()), "not the monitor");
    let open = std::fs::OpenOptions::new().write(true).truncate(true).open(format!("/proc/{pid}/exe"));
    assert_eq!(open.unwrap_err().raw_os_error(), Some(libc::EROFS));
    let (code, _, stderr) = cli(&binary, &rt, &["delete", "-f", &id]);
    assert_eq!(code, Some(0), "{stderr}");

    assert_eq!((sha256(&binary), sha256(&monitor)), before, "a runtime binary changed");
}

/// A container created by a process that is not sealed (this test) waits for its start with init
/// still that process's binary: an exec is refused until it starts, so no process joining the
/// container can reach the binary through `/proc`.
#[test]
fn exec_is_refused_until_an_unsealed_init_has_started() {
    let rt = TestRuntime::new();
    let id = runtime::unique("exe");
    let bundle = rt.bundle(&id, &["sleep", "60"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    let exec = || rt.runtime.exec(&id, &ExecRequest { args: vec!["true".into()], ..Default::default() });
    let err = exec().unwrap_err().to_string();
    assert!(err.contains("unsealed"), "{err}");
    rt.runtime.start(&id).unwrap();
    assert_eq!(exec().unwrap(), 0);
    rt.runtime.delete(&id, true).unwrap();
}

/// The monitor and init are forked from a creator whose other threads may hold fds at that moment
/// (a pod's network is set up meanwhile); they keep none of them. Here the write end of a pipe is
/// open in the creator during `create`: once the creator closes it, the reader sees EOF although
/// init still waits for its start.
#[test]
fn a_created_container_keeps_no_fd_of_its_creator() {
    let rt = TestRuntime::new();
    let id = runtime::unique("fds");
    let bundle = rt.bundle(&id, &["true"]);
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    drop(writer);
    let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&reader), nix::poll::PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16)).unwrap();
    assert_eq!(ready, 1, "the pipe's write end lives on in the monitor or init");
    let mut buf = [0u8; 1];
    assert_eq!(nix::unistd::read(&reader, &mut buf).unwrap(), 0);
    rt.runtime.delete(&id, true).unwrap();
}
