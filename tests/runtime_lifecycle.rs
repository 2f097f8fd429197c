//! Lifecycle through the runc-compatible CLI and the library API: create/start/state/kill/delete,
//! nothing left after delete, bad bundles fail with one line and leave nothing, a new runtime
//! instance re-attaches, CRI logs, exec, and bind mounts that a symlink cannot redirect.

#[path = "support/runtime.rs"]
mod runtime;

use std::path::Path;
use std::time::{Duration, Instant};

use runtime::TestRuntime;

fn state_of(rt: &TestRuntime, id: &str) -> serde_json::Value {
    let out = rt.cli(&["state", id]);
    assert!(out.status.success(), "state failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cgroup_dirs(parent: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = entry.path().join(parent);
        if dir.exists() {
            found.push(dir.display().to_string());
        }
    }
    found
}

#[test]
fn cli_lifecycle_leaves_nothing_after_delete() {
    let rt = TestRuntime::new();
    let id = runtime::unique("life");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    let pid_file = bundle.path().join("pid");
    let out = rt.cli(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = state_of(&rt, &id);
    assert_eq!(state["status"], "created");
    // Output into a pipe nobody reads (`state ID | head -1` once head is gone) ends the command by
    // SIGPIPE, as `cat`, not with a panic.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(runtime::rkubelet())
        .args(["runtime", "--root"])
        .arg(&rt.runtime.root)
        .args(["state", &id])
        .stdout(writer)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(state["pid"], pid);
    assert_eq!(state["ociVersion"], "1.2.0");
    assert!(rt.cli(&["start", &id]).status.success());
    assert_eq!(state_of(&rt, &id)["status"], "running");
    let out = rt.cli(&["delete", &id]);
    assert!(!out.status.success(), "a running container needs --force");
    assert!(rt.cli(&["kill", &id, "KILL"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(&rt, &id)["status"] != "stopped" {
        assert!(Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rt.cli(&["delete", &id]).status.success());
    // Nothing remains: state, cgroups, the process, mounts of the bundle.
    assert!(!rt.runtime.root.join(&id).exists());
    assert!(cgroup_dirs(&rt.parent).is_empty(), "{:?}", cgroup_dirs(&rt.parent));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(runtime::mounts_containing(bundle.path().to_str().unwrap()).is_empty());
    let out = rt.cli(&["state", &id]);
    assert!(!out.status.success());
}

#[test]
fn pause_freezes_every_process_resume_thaws_and_delete_leaves_nothing() {
    let rt = TestRuntime::new();
    let id = runtime::unique("pause");
    // Two processes writing to the log: init and a child it forked.
    let script = "(while :; do echo a; sleep 0.02; done) & while :; do echo b; sleep 0.02; done";
    let bundle = rt.bundle(&id, &["sh", "-c", script]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let lines = || {
        let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap_or_default();
        let out = TestRuntime::stdout_lines(&log);
        (out.iter().filter(|l| *l == "a").count(), out.iter().filter(|l| *l == "b").count())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(rt.cli(&["pause", &id]).status.success());
    assert_eq!(state_of(&rt, &id)["status"], "paused");
    std::thread::sleep(Duration::from_millis(100));
    let frozen = lines();
    assert!(frozen.0 > 0 && frozen.1 > 0, "{frozen:?}");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(lines(), frozen, "both processes are frozen");
    // Only the paused state allows resume; exec needs --ignore-paused.
    assert!(!rt.cli(&["pause", &id]).status.success());
    let out = rt.cli(&["exec", &id, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ignore-paused"));
    assert!(rt.cli(&["resume", &id]).status.success());
    assert_eq!(state_of(&rt, &id)["status"], "running");
    std::thread::sleep(Duration::from_millis(300));
    let thawed = lines();
    assert!(thawed.0 > frozen.0 && thawed.1 > frozen.1, "{frozen:?} then {thawed:?}");
    assert!(!rt.cli(&["resume", &id]).status.success());

    // A paused container dies of SIGKILL (it is thawed after it), and delete removes the freezer
    // cgroup made by pause.
    assert!(rt.cli(&["pause", &id]).status.success());
    assert!(rt.cli(&["kill", &id, "KILL"]).status.success());
    let exit = rt.runtime.wait(&id, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exit.signal, Some(9));
    assert!(rt.cli(&["delete", &id]).status.success());
    assert!(cgroup_dirs(&rt.parent).is_empty(), "{:?}", cgroup_dirs(&rt.parent));

    // delete --force of a paused container.
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    rt.runtime.pause(&id).unwrap();
    assert!(!rt.cli(&["delete", &id]).status.success(), "a paused container needs --force");
    rt.runtime.delete(&id, true).unwrap();
    assert!(cgroup_dirs(&rt.parent).is_empty(), "{:?}", cgroup_dirs(&rt.parent));
}

#[test]
fn delete_in_created_state_and_force_delete_of_running() {
    let rt = TestRuntime::new();
    let id = runtime::unique("del");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.delete(&id, false).unwrap();
    let id2 = runtime::unique("del");
    let bundle2 = rt.bundle(&id2, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&id2, &bundle2)).unwrap();
    rt.runtime.start(&id2).unwrap();
    rt.runtime.delete(&id2, true).unwrap();
    assert!(cgroup_dirs(&rt.parent).is_empty());
    assert!(rt.runtime.list().unwrap().is_empty());
}

fn assert_one_line_failure(rt: &TestRuntime, bundle: &runtime::Bundle, id: &str, expect: &str) {
    let out = rt.cli(&["create", "--bundle", bundle.path().to_str().unwrap(), id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(!rt.runtime.root.join(id).exists(), "state left behind");
    assert!(cgroup_dirs(&rt.parent).is_empty(), "cgroups left behind");
}

#[test]
fn bad_bundles_fail_with_one_line_and_leave_nothing() {
    let rt = TestRuntime::new();
    let id = runtime::unique("bad");
    let bundle = rt.bundle(&id, &["true"]);
    std::fs::remove_dir_all(bundle.rootfs()).unwrap();
    assert_one_line_failure(&rt, &bundle, &id, "does not exist");

    let bundle = rt.bundle(&id, &["true"]);
    std::fs::write(bundle.path().join("config.json"), "{ not json").unwrap();
    assert_one_line_failure(&rt, &bundle, &id, "config.json");

    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["annotations"]["io.rkube.user"] = "ghost".into();
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "unknown user \"ghost\"");

    let bundle = rt.bundle(&id, &["no-such-program"]);
    assert_one_line_failure(&rt, &bundle, &id, "executable file not found");
}

#[test]
fn a_new_runtime_instance_reattaches_and_reads_exit_codes() {
    let rt = TestRuntime::new();
    let id = runtime::unique("att");
    let bundle =
        rt.bundle(&id, &["sh", "-c", "trap 'exit 3' TERM; echo ready; while true; do sleep 0.05; done"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap_or_default().contains("ready") {
        assert!(Instant::now() < deadline, "container never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A second instance (as after an agent restart) sees the running container...
    let again = rkube::runtime::Runtime { ..rt.runtime.clone() };
    assert_eq!(again.state(&id).unwrap().status, rkube::runtime::Status::Running);
    again.kill(&id, nix::sys::signal::Signal::SIGTERM, false).unwrap();
    // ... and reads the exit code the monitor recorded (polling: the monitor is not its child).
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(e) = rkube::runtime::state::StateDir::new(&again.root, &id).read_exit() {
            break e;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(exit.code, 3);
    assert_eq!(again.state(&id).unwrap().status, rkube::runtime::Status::Stopped);
    again.delete(&id, false).unwrap();
}

#[test]
fn stdout_and_stderr_go_to_a_cri_log() {
    // Both monitor flavours: the small exec'd binary and the in-process fork.
    for small_monitor in [true, false] {
        let mut rt = TestRuntime::new();
        if !small_monitor {
            rt.runtime.monitor_binary = None;
        }
        let id = runtime::unique("log");
        let bundle = rt.bundle(&id, &["sh", "-c", "echo out1; echo err1 >&2; printf partial"]);
        let (exit, log) = rt.run(&id, &bundle);
        assert_eq!(exit.code, 0);
        assert_eq!(runtime::cri_lines(&log, "stdout"), vec!["out1", "partial"]);
        assert_eq!(runtime::cri_lines(&log, "stderr"), vec!["err1"]);
        for line in log.lines() {
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            assert!(fields[0].ends_with('Z') && fields[0].len() == 30, "{line}");
            assert_eq!(fields[2], "F");
        }
    }
}

#[test]
fn exec_joins_the_container() {
    let rt = TestRuntime::new();
    let id = runtime::unique("exec");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let out_file = bundle.rootfs().join("tmp/out");
    let script = "hostname > /tmp/out; cat /proc/1/cmdline | tr '\\0' ' ' >> /tmp/out; echo >> /tmp/out; \
        grep ^CapEff /proc/self/status >> /tmp/out; exit 3";
    let req = rkube::runtime::ExecRequest {
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    assert_eq!(rt.runtime.exec(&id, &req).unwrap(), 3);
    let out = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "rkube-test");
    assert_eq!(lines[1].trim(), "sleep 30");
    assert_eq!(lines[2], "CapEff:\t00000000a80425fb");
    // Through the CLI as well, with the exit code passed back.
    let out = rt.cli(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    // Detached, with a pid file holding the host pid (containerd's and conmon's way).
    let pid_file = rt.run_dir.path().join("exec.pid");
    let out = rt.cli(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &id, "sleep", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("sleep\0"), "{cmdline:?}");
    let members = rt.runtime.record(&id).unwrap().cgroup.manager().pids().unwrap();
    assert!(members.contains(&pid), "the exec'd process joined the container's cgroup");
    rt.runtime.delete(&id, true).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z ")
    );
}

#[test]
fn cli_run_returns_the_exit_code() {
    let rt = TestRuntime::new();
    let id = runtime::unique("run");
    let bundle = rt.bundle(&id, &["sh", "-c", "echo hi; exit 4"]);
    let out = rt.cli(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(!rt.runtime.root.join(&id).exists());
    assert!(cgroup_dirs(&rt.parent).is_empty());
}

#[test]
fn cli_writes_errors_to_the_json_log() {
    let rt = TestRuntime::new();
    let log = rt.run_dir.path().join("log.json");
    let out = rt.cli(&["--log", log.to_str().unwrap(), "--log-format", "json", "start", "missing"]);
    assert!(!out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
}

#[test]
fn bind_mount_through_a_symlink_stays_inside_the_rootfs() {
    let rt = TestRuntime::new();
    let id = runtime::unique("vol");
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("hello"), "from volume").unwrap();
    let host_target = tempfile::tempdir().unwrap();
    let mut bundle = rt.bundle(&id, &["cat", "/escape/hello"]);
    // A symlink in the image pointing at a host path: the mount must land inside the rootfs.
    std::os::unix::fs::symlink(host_target.path(), bundle.rootfs().join("escape")).unwrap();
    bundle.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/escape", "type": "bind", "source": volume.path(), "options": ["rbind", "ro"]}));
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    assert_eq!(runtime::cri_lines(&log, "stdout"), vec!["from volume"]);
    assert_eq!(std::fs::read_dir(host_target.path()).unwrap().count(), 0, "nothing created on the host path");
    assert!(bundle.rootfs().join(host_target.path().strip_prefix("/").unwrap()).is_dir());
}

#[test]
fn overlay_rootfs_keeps_image_layers_unchanged() {
    let rt = TestRuntime::new();
    let id = runtime::unique("ovl");
    let bundle =
        rt.bundle(&id, &["sh", "-c", "echo changed > /etc/passwd; echo new > /created; cat /etc/passwd"]);
    let layers = tempfile::tempdir().unwrap();
    let (upper, work, target) =
        (layers.path().join("upper"), layers.path().join("work"), layers.path().join("merged"));
    for d in [&upper, &work, &target] {
        std::fs::create_dir(d).unwrap();
    }
    let mut req = rt.request(&id, &bundle);
    req.rootfs = Some(rkube::runtime::rootfs::RootfsSource::Overlay {
        lower: vec![bundle.rootfs()],
        upper: upper.clone(),
        work,
        target: target.clone(),
    });
    rt.runtime.create(&req).unwrap();
    rt.runtime.start(&id).unwrap();
    let exit = rt.runtime.wait(&id, Some(Duration::from_secs(20))).unwrap();
    rt.runtime.delete(&id, false).unwrap();
    assert_eq!(exit.code, 0);
    let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap();
    assert_eq!(runtime::cri_lines(&log, "stdout"), vec!["changed"]);
    assert!(std::fs::read_to_string(bundle.rootfs().join("etc/passwd")).unwrap().starts_with("root:"));
    assert_eq!(std::fs::read_to_string(upper.join("created")).unwrap(), "new\n");
    // The overlay lived in the container's mount namespace only.
    assert!(runtime::mounts_containing(target.to_str().unwrap()).is_empty());
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let rt = TestRuntime::new();
    // A network namespace held by a helper process of this test.
    let mut holder = std::process::Command::new("unshare").args(["--net", "sleep", "30"]).spawn().unwrap();
    let ns_path = format!("/proc/{}/ns/net", holder.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let wanted = loop {
        let ns = std::fs::read_link(&ns_path).unwrap();
        if ns != host_ns {
            break ns;
        }
        assert!(Instant::now() < deadline, "helper never entered its namespace");
        std::thread::sleep(Duration::from_millis(5));
    };
    let id = runtime::unique("net");
    let mut bundle = rt.bundle(&id, &["readlink", "/proc/self/ns/net"]);
    let namespaces = bundle.spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    namespaces.push(serde_json::json!({"type": "network", "path": ns_path}));
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(exit.code, 0, "{log}");
    assert_eq!(runtime::cri_lines(&log, "stdout"), vec![wanted.to_str().unwrap().to_string()]);
}
