//! User namespaces with id maps (real kernel, as root): container root is an unprivileged host
//! uid, the maps are visible inside, host-root files stay protected, capabilities only count
//! inside, exec joins the namespace, bad maps fail with one line, delete leaves nothing.

#[path = "support/runtime.rs"]
mod runtime;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime::{Bundle, TestRuntime};

/// Container uid 0 is this host uid; gid 0 this host gid (different, to tell the maps apart).
const HOST_UID: u32 = 200000;
const HOST_GID: u32 = 300000;
const RANGE: u32 = 65536;
/// The bundle's `/etc/group` (tests/support/runtime.rs).
const GROUP_FILE: &str = "root:x:0:\nnogroup:x:65534:\nweb:x:1000:\naudio:x:29:web\n";

/// A busybox bundle with a new user namespace mapping 0..65536 to HOST_UID/HOST_GID, its rootfs
/// owned by the mapped root (as runc expects) and the bundle dir searchable by it.
fn userns_bundle(rt: &TestRuntime, id: &str, args: &[&str]) -> Bundle {
    let mut bundle = rt.bundle(id, args);
    set_maps(&mut bundle, (0, HOST_UID, RANGE), (0, HOST_GID, RANGE));
    chown_tree(&bundle.rootfs(), HOST_UID, HOST_GID);
    std::fs::set_permissions(bundle.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bundle
}

fn set_maps(bundle: &mut Bundle, uid: (u32, u32, u32), gid: (u32, u32, u32)) {
    let line = |(c, h, s): (u32, u32, u32)| serde_json::json!([{"containerID": c, "hostID": h, "size": s}]);
    let linux = &mut bundle.spec["linux"];
    let namespaces = linux["namespaces"].as_array_mut().unwrap();
    if !namespaces.iter().any(|n| n["type"] == "user") {
        namespaces.push(serde_json::json!({"type": "user"}));
    }
    linux["uidMappings"] = line(uid);
    linux["gidMappings"] = line(gid);
    bundle.write();
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

/// Waits until `path` holds at least `lines` lines and returns them.
fn wait_lines(path: &Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got = TestRuntime::stdout_lines(&text);
        if got.len() >= lines {
            return got;
        }
        assert!(Instant::now() < deadline, "container wrote only {got:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(real, effective, saved, fs)` ids from a `Uid:` or `Gid:` line of `/proc/<pid>/status`.
fn status_ids(pid: i32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line[key.len()..].split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(parent))
        .filter(|d| d.exists())
        .collect()
}

#[test]
fn container_root_is_the_mapped_host_uid_and_sees_its_maps() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let script = "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; echo ready; exec sleep 30";
    let bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let lines = wait_lines(&bundle.path().join("ctr.log"), 5);
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "0");
    assert_eq!(words(&lines[2]), ["0", "200000", "65536"]);
    assert_eq!(words(&lines[3]), ["0", "300000", "65536"]);
    let pid = rt.runtime.record(&id).unwrap().pid;
    assert_eq!(status_ids(pid, "Uid:"), [HOST_UID; 4]);
    assert_eq!(status_ids(pid, "Gid:"), [HOST_GID; 4]);
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_ne!(std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(), host_ns);
    rt.runtime.delete(&id, true).unwrap();
}

#[test]
fn a_plain_spec_user_gets_exactly_its_additional_gids_even_with_one_mapped_id() {
    // As runc (and youki's root_readonly_true_in_userns): only id 0 is mapped, and /etc/group
    // lists root in an unmapped group; a spec's uid:gid user gets only additionalGids, so
    // setgroups never sees it.
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let mut bundle = rt.bundle(&id, &["sh", "-c", "id -G; cat /proc/self/uid_map"]);
    std::fs::write(bundle.rootfs().join("etc/group"), format!("{GROUP_FILE}wheel:x:10:root\n")).unwrap();
    for mount in bundle.spec["mounts"].as_array_mut().unwrap() {
        if mount["type"] == "devpts" {
            // gid 5 (tty) is not mapped either.
            mount["options"].as_array_mut().unwrap().retain(|o| o != "gid=5");
        }
    }
    set_maps(&mut bundle, (0, HOST_UID, 1), (0, HOST_GID, 1));
    chown_tree(&bundle.rootfs(), HOST_UID, HOST_GID);
    std::fs::set_permissions(bundle.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    let lines = TestRuntime::stdout_lines(&log);
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", &HOST_UID.to_string(), "1"]);
}

#[test]
fn host_root_files_stay_read_only_for_container_root() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let host_file = rt.run_dir.path().join("host-owned");
    std::fs::write(&host_file, "original\n").unwrap();
    std::fs::set_permissions(&host_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::set_permissions(rt.run_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = "echo changed > /host-owned && echo wrote || echo denied; stat -c '%u %g' /host-owned";
    let mut bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    bundle.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/host-owned", "type": "bind", "source": host_file, "options": ["bind", "rw"]}));
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    // Host uid/gid 0 are not mapped: the file shows the overflow ids and cannot be written.
    assert_eq!(TestRuntime::stdout_lines(&log), ["denied", "65534 65534"], "{log}");
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "original\n");
}

#[test]
fn full_capabilities_count_only_inside_the_user_namespace() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let script = "grep CapEff /proc/self/status; \
        mkdir -p /tmp/m; mount -t tmpfs none /tmp/m && echo tmpfs-ok; \
        mount -t debugfs none /tmp/m 2>/dev/null && echo debugfs-mounted || echo debugfs-denied; \
        mknod /tmp/null c 1 3 2>/dev/null && echo mknod-done || echo mknod-denied; \
        hostname inside && hostname";
    let mut bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    let all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    let process = &mut bundle.spec["process"];
    for set in ["bounding", "effective", "permitted"] {
        process["capabilities"][set] = serde_json::json!(all);
    }
    bundle.spec["annotations"]["io.rkube.seccomp"] = "unconfined".into();
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    let lines = TestRuntime::stdout_lines(&log);
    let full = caps::all().into_iter().fold(0u64, |m, c| m | (1 << c.index()));
    assert_eq!(lines[0], format!("CapEff:\t{full:016x}"), "{log}");
    assert_eq!(lines[1..], ["tmpfs-ok", "debugfs-denied", "mknod-denied", "inside"], "{log}");
}

#[test]
fn exec_joins_the_user_namespace_with_container_ids() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let bundle = userns_bundle(&rt, &id, &["sleep", "30"]);
    let out = rt.cli(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rt.cli(&["start", &id]).status.success());
    let init = rt.runtime.record(&id).unwrap().pid;
    let script = "id -u; id -g; readlink /proc/self/ns/user; cat /proc/self/uid_map";
    let out = rt.cli(&["exec", &id, "sh", "-c", script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let init_ns = std::fs::read_link(format!("/proc/{init}/ns/user")).unwrap();
    assert_eq!(lines[..3], ["0", "0", init_ns.to_str().unwrap()], "{stdout}");
    assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["0", "200000", "65536"]);
    // A detached exec runs as the mapped host uid, like init.
    let pid_file = rt.run_dir.path().join("exec.pid");
    let out = rt.cli(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), &id, "sleep", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_eq!(status_ids(pid, "Uid:"), [HOST_UID; 4]);
    assert_eq!(status_ids(pid, "Gid:"), [HOST_GID; 4]);
    // With a terminal: the pty slave belongs to container root, not to the unmapped `nobody`.
    let (console, ours) = rkube::runtime::tty::Console::pair(None).unwrap();
    let req = rkube::runtime::ExecRequest {
        args: vec!["sh".into(), "-c".into(), "stat -c owner-%u:%g $(tty)".into()],
        terminal: Some(console),
        ..Default::default()
    };
    let shown = std::thread::scope(|s| {
        let exec = s.spawn(|| rt.runtime.exec(&id, &req).unwrap());
        let ours = std::os::unix::net::UnixStream::from(ours);
        ours.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let master = std::fs::File::from(rkube::runtime::tty::receive_fd(ours.as_fd()).unwrap());
        let mut out = Vec::new();
        // Reading the master ends with EIO once the process and its slave are gone.
        let _ = std::io::Read::read_to_end(&mut &master, &mut out);
        assert_eq!(exec.join().unwrap(), 0);
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(shown.contains("owner-0:0"), "{shown:?}");
    assert!(rt.cli(&["delete", "--force", &id]).status.success());
}

#[test]
fn cli_run_with_a_user_namespace_and_nothing_left_after_delete() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let bundle = userns_bundle(&rt, &id, &["sh", "-c", "touch /tmp/made; stat -c '%u' /tmp/made; exit 7"]);
    let out = rt.cli(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    // The file exists on the host, owned by the mapped uid and gid.
    let meta = std::fs::metadata(bundle.rootfs().join("tmp/made")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (HOST_UID, HOST_GID));
    assert!(!rt.runtime.root.join(&id).exists());
    assert!(cgroup_dirs(&rt.parent).is_empty());
    assert!(runtime::mounts_containing(bundle.path().to_str().unwrap()).is_empty());
}

fn assert_one_line_failure(rt: &TestRuntime, bundle: &Bundle, id: &str, expect: &str) {
    let out = rt.cli(&["create", "--bundle", bundle.path().to_str().unwrap(), id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    assert!(!rt.runtime.root.join(id).exists(), "state left behind");
    assert!(cgroup_dirs(&rt.parent).is_empty(), "cgroups left behind");
    assert!(runtime::mounts_containing(bundle.path().to_str().unwrap()).is_empty());
}

#[test]
fn bad_maps_fail_with_one_line_and_leave_nothing() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let mut bundle = userns_bundle(&rt, &id, &["true"]);
    bundle.spec["linux"]["uidMappings"] = serde_json::json!([
        {"containerID": 0, "hostID": 200000, "size": 1000},
        {"containerID": 500, "hostID": 400000, "size": 10}]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.uidMappings: line 1: container ids overlap line 0");

    bundle.spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 0}]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "size must be greater than 0");

    bundle.spec["linux"]["uidMappings"] = serde_json::json!([]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.uidMappings: required with a new user namespace");

    // Valid maps, but gid 5 (devpts's gid=5) is not mapped: init fails inside, nothing is left.
    let mut bundle = userns_bundle(&rt, &id, &["true"]);
    set_maps(&mut bundle, (0, HOST_UID, RANGE), (0, HOST_GID, 1));
    assert_one_line_failure(&rt, &bundle, &id, "/dev/pts");
}

#[test]
fn overlay_rootfs_works_inside_a_user_namespace() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    // The image layer stays owned by host root on disk; upper and work go to the mapped root.
    let script = "echo new > /new-file && head -1 /etc/passwd; stat -c '%u %g' /etc/group; \
        echo x >> /etc/group && echo modified";
    let bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    let layer = bundle.path().join("layer");
    std::fs::rename(bundle.rootfs(), &layer).unwrap();
    chown_tree(&layer, 0, 0);
    let (upper, work, target) = (bundle.path().join("upper"), bundle.path().join("work"), bundle.rootfs());
    for dir in [&upper, &work, &target] {
        std::fs::create_dir(dir).unwrap();
    }
    let mut req = rt.request(&id, &bundle);
    req.rootfs = Some(rkube::runtime::rootfs::RootfsSource::Overlay {
        lower: vec![layer.clone()],
        upper: upper.clone(),
        work,
        target,
    });
    rt.runtime.create(&req).unwrap();
    rt.runtime.start(&id).unwrap();
    let exit = rt.runtime.wait(&id, Some(Duration::from_secs(30))).unwrap();
    rt.runtime.delete(&id, true).unwrap();
    let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap();
    assert_eq!(exit.code, 0, "{log}");
    // The layer is id-mapped: host root's files are container root's, and copy-up works.
    assert_eq!(TestRuntime::stdout_lines(&log), ["root:x:0:0:root:/root:/bin/sh", "0 0", "modified"]);
    for file in ["new-file", "etc/group"] {
        let meta = std::fs::metadata(upper.join(file)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (HOST_UID, HOST_GID), "{file}");
    }
    // The shared layer is never written, whatever the container did.
    assert!(!layer.join("new-file").exists());
    assert_eq!(std::fs::read_to_string(layer.join("etc/group")).unwrap(), GROUP_FILE);
    assert!(runtime::mounts_containing(bundle.path().to_str().unwrap()).is_empty());
}

#[test]
fn joins_a_network_namespace_by_path_and_binds_sys_read_only() {
    let rt = TestRuntime::new();
    // A plain container holds the network namespace, as a pod's sandbox does.
    let holder = runtime::unique("uns");
    let holder_bundle = rt.bundle(&holder, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&holder, &holder_bundle)).unwrap();
    let holder_pid = rt.runtime.record(&holder).unwrap().pid;
    let netns = format!("/proc/{holder_pid}/ns/net");
    let id = runtime::unique("uns");
    let script = "readlink /proc/self/ns/net; touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro; \
        exec sleep 30";
    let mut bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    for ns in bundle.spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = netns.clone().into();
        }
    }
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let lines = wait_lines(&bundle.path().join("ctr.log"), 2);
    let held = std::fs::read_link(&netns).unwrap();
    assert_eq!(lines, [held.to_str().unwrap(), "sys-ro"]);
    let out = rt.cli(&["exec", &id, "sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/user"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let init = rt.runtime.record(&id).unwrap().pid;
    let user_ns = std::fs::read_link(format!("/proc/{init}/ns/user")).unwrap();
    let expected = format!("{}\n{}\n", held.display(), user_ns.display());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    rt.runtime.delete(&id, true).unwrap();
    rt.runtime.delete(&holder, true).unwrap();
}

#[test]
fn setgroups_deny_is_written_when_asked() {
    let rt = TestRuntime::new();
    let id = runtime::unique("uns");
    let script = "cat /proc/self/setgroups; grep ^Groups: /proc/self/status";
    let mut bundle = userns_bundle(&rt, &id, &["sh", "-c", script]);
    bundle.spec["annotations"]["io.rkube.userns.setgroups"] = "deny".into();
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    let lines = TestRuntime::stdout_lines(&log);
    assert_eq!(lines[0], "deny", "{log}");
    // No host group (such as the runtime's gid 0) was carried into the namespace.
    assert_eq!(lines[1].trim_end(), "Groups:", "{log}");
    // A user with supplementary groups cannot have them: one clear line, nothing left.
    let id = runtime::unique("uns");
    let mut bundle = userns_bundle(&rt, &id, &["true"]);
    bundle.spec["annotations"]["io.rkube.userns.setgroups"] = "deny".into();
    bundle.spec["annotations"]["io.rkube.user"] = "web".into();
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "setgroups is denied in this user namespace");
}
