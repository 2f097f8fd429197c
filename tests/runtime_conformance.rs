//! OCI runtime spec conformance, one property per test, as root on the real kernel: recursive
//! mount attributes, process fields, hooks, namespaces, cgroup controllers, seccomp notify,
//! network devices.

#[path = "support/runtime.rs"]
mod runtime;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use runtime::TestRuntime;

/// A directory on the host (`rkube-test-…` under the temp dir) with a tmpfs mounted at `sub`, so
/// a recursive bind of it has a submount; unmounted and removed on drop.
struct NestedSource {
    dir: tempfile::TempDir,
}

impl NestedSource {
    fn new(sub_options: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("rkube-test-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let flags = if sub_options.contains("noatime") { MsFlags::MS_NOATIME } else { MsFlags::empty() };
        nix::mount::mount(Some("tmpfs"), &sub, Some("tmpfs"), flags, Some("mode=755,size=16m")).unwrap();
        NestedSource { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `binary` to `<dir>/<name>` and `<dir>/sub/<name>` with `mode`.
    fn install(&self, binary: &Path, name: &str, mode: u32) {
        for dir in [self.path().to_path_buf(), self.path().join("sub")] {
            let target = dir.join(name);
            let copied = std::process::Command::new("cp").arg(binary).arg(&target).status().unwrap();
            assert!(copied.success());
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

impl Drop for NestedSource {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir.path().join("sub"), MntFlags::MNT_DETACH);
    }
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> serde_json::Value {
    serde_json::json!({"destination": destination, "source": source, "options": options})
}

/// Runs `sh -c script` with `edit` applied; returns (exit code, stdout lines).
fn run_sh(rt: &TestRuntime, script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (i32, Vec<String>) {
    let id = runtime::unique("conf");
    let mut bundle = rt.bundle(&id, &["sh", "-c", script]);
    edit(&mut bundle.spec);
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    eprintln!("container log:\n{log}");
    (exit.code, TestRuntime::stdout_lines(&log))
}

/// Host libraries read-only inside, for dynamically linked host binaries.
fn add_host_libs(spec: &mut serde_json::Value) {
    let mounts = spec["mounts"].as_array_mut().unwrap();
    for dir in ["/lib", "/lib64", "/usr"] {
        if Path::new(dir).exists() {
            mounts.push(serde_json::json!({"destination": dir, "type": "bind", "source": dir,
                "options": ["rbind", "ro", "nosuid", "nodev"]}));
        }
    }
}

fn coreutils_id() -> PathBuf {
    ["/usr/bin/id", "/bin/id"].iter().map(PathBuf::from).find(|p| p.exists()).expect("coreutils id")
}

#[test]
fn rnosuid_runs_a_setuid_binary_with_the_callers_uid_at_every_level() {
    let rt = TestRuntime::new();
    let src = NestedSource::new("");
    // A setuid-root copy of coreutils `id` (busybox drops setuid itself, so it would prove nothing).
    src.install(&coreutils_id(), "id", 0o4755);
    let script = "/nosuid/id -u; /nosuid/sub/id -u; /plain/id -u; /plain/sub/id -u";
    let (code, out) = run_sh(&rt, script, |spec| {
        add_host_libs(spec);
        spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
        spec["process"]["noNewPrivileges"] = false.into();
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(bind("/nosuid", src.path(), &["rbind", "rnosuid"]));
        mounts.push(bind("/plain", src.path(), &["rbind"]));
    });
    assert_eq!(code, 0, "{out:?}");
    // Without rnosuid the same binaries do run setuid (so the test can fail).
    assert_eq!(out, vec!["1000", "1000", "0", "0"]);
}

#[test]
fn rnoexec_makes_files_at_every_level_unexecutable() {
    let rt = TestRuntime::new();
    let src = NestedSource::new("");
    src.install(Path::new("/bin/busybox"), "busybox", 0o755);
    let script = "for p in /noexec/busybox /noexec/sub/busybox /plain/busybox /plain/sub/busybox; do \
        $p true 2>/dev/null && echo RAN || echo DENIED; done";
    let (code, out) = run_sh(&rt, script, |spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(bind("/noexec", src.path(), &["rbind", "rnoexec"]));
        mounts.push(bind("/plain", src.path(), &["rbind"]));
    });
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out, vec!["DENIED", "DENIED", "RAN", "RAN"]);
}

#[test]
fn rro_reaches_submounts_where_ro_does_not() {
    let rt = TestRuntime::new();
    let src = NestedSource::new("");
    let script = "for p in /rro/f /rro/sub/f /ro/f /ro/sub/f; do \
        (touch $p) 2>/dev/null && echo WROTE || echo DENIED; done";
    let (code, out) = run_sh(&rt, script, |spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(bind("/rro", src.path(), &["rbind", "rro"]));
        // runc's semantics: `ro` is a remount of the top mount only.
        mounts.push(bind("/ro", src.path(), &["rbind", "ro"]));
    });
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out, vec!["DENIED", "DENIED", "DENIED", "WROTE"]);
}

#[test]
fn rnodev_refuses_device_nodes_below_the_mount() {
    let rt = TestRuntime::new();
    // The host's /dev has submounts (pts, shm, mqueue); its null is 1:3, allowed by the cgroup.
    let script = "for p in /nodev/null /plain/null; do \
        (echo x > $p) 2>/dev/null && echo OPENED || echo DENIED; done; \
        (echo x > /nodev/pts/ptmx) 2>/dev/null && echo OPENED || echo DENIED";
    let (code, out) = run_sh(&rt, script, |spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(bind("/nodev", Path::new("/dev"), &["rbind", "rnodev"]));
        mounts.push(bind("/plain", Path::new("/dev"), &["rbind"]));
    });
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out, vec!["DENIED", "OPENED", "DENIED"]);
}

/// The per-mount options (mountinfo field 6) of every mount point in `lines`.
fn mount_options(lines: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(4)?.to_string(), f.get(5)?.split(',').map(str::to_string).collect()))
        })
        .collect()
}

#[test]
fn recursive_atime_diratime_and_symfollow_attributes_reach_submounts() {
    let rt = TestRuntime::new();
    // The submount starts noatime on the host, so rrelatime visibly changes it.
    let src = NestedSource::new("noatime");
    let (code, out) = run_sh(&rt, "cat /proc/self/mountinfo", |spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(bind("/a", src.path(), &["rbind", "rnoatime"]));
        mounts.push(bind("/s", src.path(), &["rbind", "rstrictatime"]));
        mounts.push(bind("/r", src.path(), &["rbind", "rrelatime"]));
        mounts.push(bind("/d", src.path(), &["rbind", "rnodiratime"]));
        mounts.push(bind("/y", src.path(), &["rbind", "rnosymfollow"]));
        mounts.push(bind("/p", src.path(), &["rbind"]));
        mounts.push(bind("/n", src.path(), &["rbind", "rnorelatime"]));
    });
    assert_eq!(code, 0);
    let opts = mount_options(&out);
    let has = |mount: &str, opt: &str| opts.get(mount).is_some_and(|o| o.iter().any(|x| x == opt));
    for level in ["", "/sub"] {
        let at = |m: &str| format!("{m}{level}");
        assert!(has(&at("/a"), "noatime"), "{opts:?}");
        assert!(!has(&at("/s"), "noatime") && !has(&at("/s"), "relatime"), "strictatime: {opts:?}");
        assert!(has(&at("/r"), "relatime") && !has(&at("/r"), "noatime"), "{opts:?}");
        assert!(has(&at("/d"), "nodiratime"), "{opts:?}");
        assert!(has(&at("/y"), "nosymfollow"), "{opts:?}");
    }
    // Untouched: the submount keeps its own noatime, nothing else is added.
    assert!(has("/p/sub", "noatime") && !has("/p/sub", "nodiratime") && !has("/p", "nosymfollow"));
    // rnorelatime clears relatime's value 0 (runc, crun): every level keeps its own atime mode.
    assert_eq!(opts.get("/n"), opts.get("/p"), "{opts:?}");
    assert_eq!(opts.get("/n/sub"), opts.get("/p/sub"), "{opts:?}");
}

#[test]
fn unknown_and_unsupported_mount_options_are_refused_by_name() {
    let rt = TestRuntime::new();
    for (option, expect) in [
        ("rnosiud", "unknown mount option \"rnosiud\" for a bind mount"),
        ("idmap", "mount option \"idmap\" is not supported"),
        ("ridmap", "mount option \"ridmap\" is not supported"),
    ] {
        let id = runtime::unique("badopt");
        let mut bundle = rt.bundle(&id, &["true"]);
        bundle.spec["mounts"].as_array_mut().unwrap().push(bind("/x", Path::new("/tmp"), &["rbind", option]));
        bundle.write();
        assert_one_line_failure(&rt, &bundle, &id, expect);
    }
}

fn assert_one_line_failure(rt: &TestRuntime, bundle: &runtime::Bundle, id: &str, expect: &str) {
    let out = rt.cli(&["create", "--bundle", bundle.path().to_str().unwrap(), id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains(expect), "{expect:?} not in {stderr}");
    assert!(!rt.runtime.root.join(id).exists(), "state left behind");
    let cgroups = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .any(|h| h.path().join(&rt.parent).join(id).exists());
    assert!(!cgroups, "cgroups left behind");
}

#[test]
fn duplicate_additional_gids_and_rlimits_are_refused() {
    let rt = TestRuntime::new();
    let id = runtime::unique("gids");
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["process"]["user"]["additionalGids"] = serde_json::json!([5, 29, 5]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "process.user.additionalGids: gid 5 is listed twice");

    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["process"]["rlimits"] = serde_json::json!([
        {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
        {"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512}]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "process.rlimits: RLIMIT_NOFILE is given twice");
}

#[test]
fn lsm_fields_are_refused_on_a_host_without_the_lsm() {
    let rt = TestRuntime::new();
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim().starts_with('Y'));
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    let id = runtime::unique("lsm");
    if !apparmor {
        let mut bundle = rt.bundle(&id, &["true"]);
        bundle.spec["process"]["apparmorProfile"] = "docker-default".into();
        bundle.write();
        assert_one_line_failure(&rt, &bundle, &id, "process.apparmorProfile: AppArmor is not enabled");
    }
    if !selinux {
        let mut bundle = rt.bundle(&id, &["true"]);
        bundle.spec["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
        bundle.write();
        assert_one_line_failure(&rt, &bundle, &id, "process.selinuxLabel: SELinux is not enabled");
    }
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["intelRdt"] = serde_json::json!({"closID": "rkube"});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.intelRdt: is not supported");
}

#[test]
fn rlimits_and_oom_score_adj_are_applied() {
    let rt = TestRuntime::new();
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().to_string();
    let script = "cat /proc/self/oom_score_adj; grep -E 'open files|core file size' /proc/self/limits";
    let (code, out) = run_sh(&rt, script, |spec| {
        spec["process"]["oomScoreAdj"] = 543.into();
        spec["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "hard": 1000, "soft": 700},
            {"type": "RLIMIT_CORE", "hard": 4096, "soft": 2048}]);
    });
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0], "543");
    let limits = |name: &str| -> Vec<String> {
        let line = out.iter().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].split_whitespace().take(2).map(str::to_string).collect()
    };
    // /proc/self/limits shows core file size in bytes.
    assert_eq!(limits("Max core file size"), vec!["2048", "4096"]);
    assert_eq!(limits("Max open files"), vec!["700", "1000"]);
    // Without the field the process keeps its creator's value (not the monitor's -999).
    let (_, out) = run_sh(&rt, "cat /proc/self/oom_score_adj", |_| {});
    assert_eq!(out, vec![own]);
}

/// A hook that appends `<tag> <mount ns> <state JSON>` to `file` (the namespace as its own
/// `/proc/self/ns/mnt` names it).
fn hook(tag: &str, file: &Path) -> serde_json::Value {
    let script = format!("read -r s; echo \"{tag} $(readlink /proc/self/ns/mnt) $s\" >> {}", file.display());
    serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", script], "timeout": 10})
}

/// (tag, mount namespace, state) of each line a hook wrote.
fn hook_lines(file: &Path) -> Vec<(String, String, serde_json::Value)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (tag, ns, state) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            (tag.to_string(), ns.to_string(), serde_json::from_str(state).unwrap())
        })
        .collect()
}

#[test]
fn hooks_run_in_order_in_their_namespaces_and_see_the_state() {
    let rt = TestRuntime::new();
    let id = runtime::unique("hooks");
    let mut bundle = rt.bundle(&id, &["true"]);
    let host_file = bundle.path().join("hooks.log");
    // startContainer runs after pivot_root: its path and file are the container's.
    let inner = Path::new("/hooks.log");
    bundle.spec["annotations"]["rkube.test/hooks"] = "yes".into();
    bundle.spec["hooks"] = serde_json::json!({
        "prestart": [hook("prestart1", &host_file), hook("prestart2", &host_file)],
        "createRuntime": [hook("createRuntime", &host_file)],
        "createContainer": [hook("createContainer", &host_file)],
        "startContainer": [hook("startContainer", inner)],
        "poststart": [hook("poststart1", &host_file), hook("poststart2", &host_file)],
        "poststop": [hook("poststop1", &host_file), hook("poststop2", &host_file)],
    });
    bundle.write();
    let created = rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    let host_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap().display().to_string();
    let container_ns =
        std::fs::read_link(format!("/proc/{}/ns/mnt", created.pid)).unwrap().display().to_string();
    assert_ne!(host_ns, container_ns);
    let lines = hook_lines(&host_file);
    let tags: Vec<&str> = lines.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(tags, vec!["prestart1", "prestart2", "createRuntime", "createContainer"]);
    for (tag, ns, state) in &lines {
        assert_eq!(state["id"], id.as_str(), "{tag}");
        assert_eq!(state["status"], "creating", "{tag}");
        assert_eq!(state["bundle"], bundle.path().to_str().unwrap(), "{tag}");
        assert_eq!(state["annotations"]["rkube.test/hooks"], "yes", "{tag}");
        if tag == "createContainer" {
            // In the container's namespaces: its pid there is 1.
            assert_eq!((ns, state["pid"].as_i64()), (&container_ns, Some(1)), "{tag}");
        } else {
            assert_eq!((ns, state["pid"].as_i64()), (&host_ns, Some(i64::from(created.pid))), "{tag}");
        }
    }

    rt.runtime.start(&id).unwrap();
    let lines = hook_lines(&host_file);
    let tags: Vec<&str> = lines.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(&tags[4..], ["poststart1", "poststart2"]);
    for (_, ns, state) in &lines[4..] {
        assert_eq!(
            (ns, state["status"].as_str(), state["pid"].as_i64()),
            (&host_ns, Some("running"), Some(i64::from(created.pid)))
        );
    }
    let exit = rt.runtime.wait(&id, Some(std::time::Duration::from_secs(10))).unwrap();
    assert_eq!(exit.code, 0);
    // As runc, `start` does not wait for it; it ran before the program.
    let started = hook_lines(&bundle.rootfs().join("hooks.log"));
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].0, "startContainer");
    assert_eq!(started[0].1, container_ns);
    assert_eq!((started[0].2["status"].as_str(), started[0].2["pid"].as_i64()), (Some("created"), Some(1)));
    assert!(hook_lines(&host_file).len() == 6, "poststop runs on delete, not before");
    rt.runtime.delete(&id, false).unwrap();
    let lines = hook_lines(&host_file);
    let tags: Vec<&str> = lines.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(&tags[6..], ["poststop1", "poststop2"]);
    for (_, _, state) in &lines[6..] {
        assert_eq!(state["status"], "stopped");
        assert!(state.get("pid").is_none());
    }
}

#[test]
fn a_failing_create_hook_fails_create_and_poststop_still_runs() {
    let rt = TestRuntime::new();
    let id = runtime::unique("hookfail");
    let mut bundle = rt.bundle(&id, &["true"]);
    let file = bundle.path().join("hooks.log");
    bundle.spec["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}, hook("never", &file)],
        "poststop": [hook("poststop", &file)],
    });
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "hooks.createRuntime[0] /bin/sh: failed: exit status: 3: \"broken\"",
    );
    let tags: Vec<String> = hook_lines(&file).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(tags, vec!["poststop"]);

    // A hook past its timeout is killed and fails create the same way.
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["hooks"] = serde_json::json!({
        "prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "hooks.prestart[0] /bin/sleep: ran past its timeout of 1s");

    // A failing poststart is a warning: start succeeds and the container runs.
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["hooks"] = serde_json::json!({"poststart": [{"path": "/bin/false"}]});
    bundle.write();
    let (exit, _) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0);
}

#[test]
fn init_hooks_get_the_process_env_and_a_failing_start_hook_stops_the_container() {
    let rt = TestRuntime::new();
    let id = runtime::unique("hookstart");
    let mut bundle = rt.bundle(&id, &["sh", "-c", "echo the program ran"]);
    let file = bundle.path().join("hooks.log");
    bundle.spec["process"]["env"] = serde_json::json!(["PATH=/bin", "FROM_PROCESS=yes"]);
    // createContainer runs before pivot_root (host paths); startContainer after (the container's).
    let env_of = |tag: &str, file: &str| {
        let script = format!("echo \"{tag} ${{FROM_PROCESS:-unset}} ${{OWN:-unset}}\" >> {file}");
        serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", script]})
    };
    let mut own = env_of("own", "/hooks.log");
    own["env"] = serde_json::json!(["OWN=1"]);
    bundle.spec["hooks"] = serde_json::json!({
        "createContainer": [env_of("create", file.to_str().unwrap())],
        "startContainer": [env_of("start", "/hooks.log"), own,
            {"path": "/bin/sh", "args": ["sh", "-c", "echo start hook broken >&2; exit 4"]}],
        "poststart": [hook("poststart", &file)],
        "poststop": [hook("poststop", &file)],
    });
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    // As runc: `start` succeeds and runs poststart; the failing hook stops the container before
    // its program runs, with the error on the container's stderr.
    rt.runtime.start(&id).unwrap();
    let exit = rt.runtime.wait(&id, Some(std::time::Duration::from_secs(10))).unwrap();
    assert_ne!(exit.code, 0);
    rt.runtime.delete(&id, false).unwrap();
    let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap();
    assert!(TestRuntime::stdout_lines(&log).is_empty(), "the program must not run: {log}");
    let stderr = runtime::cri_lines(&log, "stderr").join("\n");
    assert!(
        stderr.contains("hooks.startContainer[2] /bin/sh: failed: exit status: 4: \"start hook broken\""),
        "{stderr}"
    );
    let host: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(host, ["create", "poststart", "poststop"]);
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("create yes unset\n"));
    // A hook without env gets the process's; one with its own gets only that.
    let inside = std::fs::read_to_string(bundle.rootfs().join("hooks.log")).unwrap();
    assert_eq!(inside, "start yes unset\nown unset 1\n");
}

fn ns_link(pid: &str, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// Mount points under `dir` in the test's (the host's) mount namespace.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    runtime::mounts_containing(dir.to_str().unwrap())
}

/// `delete` finds the rootfs bind by the mount id recorded at create, so it is also detached where
/// the mount's root is not the path it is mounted at (under a bind such as CI's `/tmp`).
#[test]
fn without_namespaces_the_container_shares_the_callers_and_lives_in_a_chroot() {
    let rt = TestRuntime::new();
    let id = runtime::unique("nons");
    let mut bundle = rt.bundle(&id, &["sleep", "30"]);
    let root_line = |info: &str| info.lines().find(|l| l.split(' ').nth(4) == Some("/")).unwrap().to_string();
    let host_root_before = root_line(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    // contest's ns_itype: no namespaces, no masked or read-only paths, no hostname.
    bundle.spec["linux"]["namespaces"] = serde_json::json!([]);
    bundle.spec["linux"]["maskedPaths"] = serde_json::json!([]);
    bundle.spec["linux"]["readonlyPaths"] = serde_json::json!([]);
    bundle.spec["root"]["readonly"] = true.into();
    bundle.spec.as_object_mut().unwrap().remove("hostname");
    bundle.write();
    let state = rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let pid = state.pid.to_string();
    for ns in
        ["cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"]
    {
        assert_eq!(ns_link(&pid, ns), ns_link("self", ns), "{ns} namespace");
    }
    // Its mounts are in the caller's namespace, under the rootfs only; `/` keeps its propagation.
    assert!(!host_mounts_under(&bundle.rootfs()).is_empty());
    assert_eq!(root_line(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()), host_root_before);
    // The process and an exec'd one see the rootfs as `/`, read-only.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, bundle.rootfs());
    let out =
        rt.cli(&["exec", &id, "sh", "-c", "grep -c ^web: /etc/passwd; touch /x 2>/dev/null || echo RO"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\nRO\n", "{}", String::from_utf8_lossy(&out.stderr));
    rt.runtime.delete(&id, true).unwrap();
    assert_eq!(host_mounts_under(bundle.path()), Vec::<String>::new(), "mounts left on the host");
}

#[test]
fn restrictions_that_need_a_namespace_are_refused_without_it() {
    let rt = TestRuntime::new();
    let id = runtime::unique("nons");
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
    bundle.spec.as_object_mut().unwrap().remove("hostname");
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "linux.maskedPaths: unable to restrict paths without a private mount namespace",
    );
    bundle.spec["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
    bundle.spec["hostname"] = "h".into();
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "hostname: unable to set the hostname without a private UTS namespace",
    );
    bundle.spec.as_object_mut().unwrap().remove("hostname");
    bundle.spec["domainname"] = "d".into();
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "domainname: unable to set the domainname without a private UTS namespace",
    );
    bundle.spec["linux"]["namespaces"] =
        serde_json::json!([{"type": "mount"}, {"type": "pid"}, {"type": "mount"}]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.namespaces: mnt is listed twice");
}

#[test]
fn domainname_io_priority_and_scheduler_are_applied() {
    let rt = TestRuntime::new();
    let script = "hostname; cat /proc/sys/kernel/domainname; busybox ionice -p $$; \
        grep -E '^policy' /proc/self/sched | tr -d ' '; cut -d' ' -f19 /proc/self/stat";
    let (code, out) = run_sh(&rt, script, |spec| {
        spec["domainname"] = "rkube.example".into();
        spec["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
        spec["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_BATCH", "nice": 7});
    });
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0], "rkube-test");
    assert_eq!(out[1], "rkube.example");
    assert_eq!(out[2], "idle");
    assert_eq!(out[3], "policy:3", "SCHED_BATCH");
    assert_eq!(out[4], "7", "nice");

    let (_, out) = run_sh(&rt, "busybox ionice -p $$", |spec| {
        spec["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    });
    assert_eq!(out, vec!["best-effort: prio 6"]);
    let id = runtime::unique("sched");
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_FIFO", "nice": 3});
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "process.scheduler.nice: only for SCHED_OTHER and SCHED_BATCH",
    );
}

#[test]
fn personality_and_memory_policy_reach_the_process_and_exec() {
    let rt = TestRuntime::new();
    let id = runtime::unique("persona");
    let mut bundle =
        rt.bundle(&id, &["sh", "-c", "busybox uname -m; head -1 /proc/self/numa_maps; exec sleep 30"]);
    bundle.spec["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
    bundle.spec["linux"]["memoryPolicy"] = serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let lines = stdout_lines_of(&bundle, 2);
    assert_eq!(lines[0], "i686");
    assert_eq!(lines[1].split(' ').nth(1), Some("interleave:0"), "{}", lines[1]);
    // exec's process gets them too.
    let out = rt.cli(&["exec", &id, "sh", "-c", "busybox uname -m; head -1 /proc/self/numa_maps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "i686", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines[1].split(' ').nth(1), Some("interleave:0"));
    rt.runtime.delete(&id, true).unwrap();

    // Without them: the host's.
    let (_, out) = run_sh(&rt, "busybox uname -m; head -1 /proc/self/numa_maps", |_| {});
    assert_eq!(out[0], std::env::consts::ARCH);
    assert_eq!(out[1].split(' ').nth(1), Some("default"));

    let cases = [
        (
            serde_json::json!({"memoryPolicy": {"mode": "MPOL_DEFAULT", "nodes": "0"}}),
            "linux.memoryPolicy: MPOL_DEFAULT takes no nodes and no flags",
        ),
        (
            serde_json::json!({"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0-9876543210"}}),
            "linux.memoryPolicy.nodes: \"9876543210\" is not a node number below 1024",
        ),
        (
            serde_json::json!({"memoryPolicy": {"mode": "MPOL_BIND"}}),
            "linux.memoryPolicy.nodes: MPOL_BIND needs at least one node",
        ),
        (
            serde_json::json!({"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0",
            "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}}),
            "linux.memoryPolicy.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
        ),
        (
            serde_json::json!({"personality": {"domain": "LINUX", "flags": ["NO_SUCH_FLAG"]}}),
            "linux.personality.flags: unknown flag \"NO_SUCH_FLAG\"",
        ),
    ];
    for (linux, expect) in cases {
        let id = runtime::unique("persona");
        let mut bundle = rt.bundle(&id, &["true"]);
        for (key, value) in linux.as_object().unwrap() {
            bundle.spec["linux"][key] = value.clone();
        }
        bundle.write();
        assert_one_line_failure(&rt, &bundle, &id, expect);
    }
    // A value the spec's types do not know is named by its path.
    let id = runtime::unique("persona");
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["memoryPolicy"] = serde_json::json!({"mode": "INTERLEAVE"});
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "config.json: linux.memoryPolicy.mode: unknown variant `INTERLEAVE`",
    );
}

#[test]
fn exec_cpu_affinity_holds_after_the_cgroup_join_for_the_process_and_exec() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs two CPUs to tell the initial from the final affinity");
        return;
    }
    let rt = TestRuntime::new();
    let id = runtime::unique("affinity");
    let mut bundle = rt.bundle(&id, &["sh", "-c", "grep Cpus_allowed_list /proc/self/status; exec sleep 30"]);
    bundle.spec["process"]["execCPUAffinity"] = serde_json::json!({"initial": "0", "final": "1"});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(words(&stdout_lines_of(&bundle, 1)[0]), ["Cpus_allowed_list:", "1"]);
    // exec: the container's setting, or the one of --process.
    let grep = ["grep", "Cpus_allowed_list", "/proc/self/status"];
    let out = rt.cli(&[&["exec", id.as_str()][..], &grep[..]].concat());
    assert_eq!(words(&String::from_utf8_lossy(&out.stdout)), ["Cpus_allowed_list:", "1"]);
    let process = rt.run_dir.path().join("affinity.json");
    std::fs::write(
        &process,
        serde_json::json!({"args": grep, "cwd": "/", "user": {"uid": 0, "gid": 0},
            "execCPUAffinity": {"initial": "1", "final": "0"}})
        .to_string(),
    )
    .unwrap();
    let out = rt.cli(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert_eq!(words(&String::from_utf8_lossy(&out.stdout)), ["Cpus_allowed_list:", "0"]);
    rt.runtime.delete(&id, true).unwrap();

    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["process"]["execCPUAffinity"] = serde_json::json!({"initial": "0-5000"});
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "process.execCPUAffinity: \"5000\" is not a CPU number below 1024",
    );
}

#[test]
fn preserve_fds_passes_the_callers_open_descriptors_and_nothing_else() {
    use std::os::fd::AsRawFd;
    let rt = TestRuntime::new();
    let id = runtime::unique("fds");
    let data = rt.run_dir.path().join("passed");
    std::fs::write(&data, "through the runtime\n").unwrap();
    // Rust opens with close-on-exec: clear it, as a caller passing descriptors does.
    let inherit = |f: &std::fs::File| {
        nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
        f.as_raw_fd()
    };
    let passed = std::fs::File::open(&data).unwrap();
    let fd = inherit(&passed);
    // A copy above it (F_DUPFD: the lowest free number from fd + 1, inheritable): a second open
    // could take a lower number that a parallel test just closed.
    let other = nix::fcntl::fcntl(&passed, nix::fcntl::FcntlArg::F_DUPFD(fd + 1)).unwrap();
    assert!(other > fd);
    let script = format!(
        "cat /proc/self/fd/{fd}; for n in $(busybox seq 3 {other}); do test -e /proc/self/fd/$n && echo open $n; done; true"
    );
    let mut bundle = rt.bundle(&id, &["sh", "-c", &script]);
    bundle.spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    bundle.write();
    let out_path = rt.run_dir.path().join("fds.out");
    let status = std::process::Command::new(runtime::rkubelet())
        .args(["runtime", "--root"])
        .arg(&rt.runtime.root)
        .args(["--cgroup-parent", &rt.parent, "run", "--preserve-fds", &(fd - 2).to_string(), "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .status()
        .unwrap();
    drop(passed);
    nix::unistd::close(other).unwrap();
    assert!(status.success());
    let out = std::fs::read_to_string(&out_path).unwrap();
    // Only the preserved one (and any other the test process left open below it), never `other`.
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("through the runtime"));
    let open: Vec<&str> = lines.collect();
    assert!(open.contains(&format!("open {fd}").as_str()), "{out}");
    assert!(!open.contains(&format!("open {other}").as_str()), "{out}");
}

#[test]
fn masked_paths_follow_symlinks_inside_the_root_and_proc_must_be_a_directory() {
    let rt = TestRuntime::new();
    fn with_rootfs(rt: &TestRuntime, edit: impl FnOnce(&Path)) -> (String, runtime::Bundle) {
        let id = runtime::unique("mask");
        let bundle = rt.bundle(&id, &["true"]);
        edit(&bundle.rootfs());
        (id, bundle)
    }
    // A masked symlink masks what it points to (inside the root), as runc's bind does.
    let (id, mut bundle) = with_rootfs(&rt, |root| {
        std::fs::write(root.join("secret"), "hidden\n").unwrap();
        std::os::unix::fs::symlink("/secret", root.join("link")).unwrap();
    });
    bundle.spec["process"]["args"] = serde_json::json!(["sh", "-c", "cat /secret; echo end"]);
    bundle.spec["linux"]["maskedPaths"] = serde_json::json!(["/link"]);
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!((exit.code, TestRuntime::stdout_lines(&log)), (0, vec!["end".to_string()]), "{log}");
    // A masked path that cannot be resolved (a loop) fails create.
    let (id, mut bundle) =
        with_rootfs(&rt, |root| std::os::unix::fs::symlink("../loop", root.join("loop")).unwrap());
    bundle.spec["linux"]["maskedPaths"] = serde_json::json!(["/loop"]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "open masked path /loop");
    // /proc as a symlink (runc's words).
    let (id, bundle) = with_rootfs(&rt, |root| {
        std::fs::remove_dir(root.join("proc")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("proc")).unwrap();
    });
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "mount proc on /proc: it is a symbolic link; proc must be mounted on ordinary directory",
    );
}

/// Waits until the container log of `bundle` has `n` stdout lines.
fn stdout_lines_of(bundle: &runtime::Bundle, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap_or_default();
        let lines = TestRuntime::stdout_lines(&log);
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_time_namespace_gets_its_offsets_and_exec_joins_it() {
    let rt = TestRuntime::new();
    let id = runtime::unique("timens");
    let mut bundle =
        rt.bundle(&id, &["sh", "-c", "cat /proc/self/timens_offsets /proc/uptime; exec sleep 30"]);
    bundle.spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "time"}));
    bundle.spec["linux"]["timeOffsets"] = serde_json::json!({
        "monotonic": {"secs": 86400}, "boottime": {"secs": 1_000_000, "nanosecs": 5}});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let lines = stdout_lines_of(&bundle, 3);
    assert_eq!(words(&lines[0]), ["monotonic", "86400", "0"]);
    assert_eq!(words(&lines[1]), ["boottime", "1000000", "5"]);
    let uptime: f64 = words(&lines[2])[0].parse().unwrap();
    assert!(uptime >= 1_000_000.0, "uptime {uptime} without the boottime offset");
    let pid = rt.runtime.record(&id).unwrap().pid;
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/time")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    // The monitor and the caller stay in theirs; exec joins the container's.
    let out = rt.cli(&["exec", &id, "cat", "/proc/self/timens_offsets"]);
    assert_eq!(
        words(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()),
        ["monotonic", "86400", "0"]
    );
    rt.runtime.delete(&id, true).unwrap();

    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["timeOffsets"] = serde_json::json!({"monotonic": {"secs": 1}});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.timeOffsets: only for a new time namespace");
    bundle.spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "time"}));
    bundle.spec["linux"]["timeOffsets"] = serde_json::json!({"realtime": {"secs": 1}});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.timeOffsets: \"realtime\" is not a clock");
}

#[test]
fn rootfs_propagation_shared_and_unbindable_hold_for_the_containers_root() {
    let rt = TestRuntime::new();
    // The optional fields of `/`'s line in mountinfo (`shared:N`, `master:N`, `unbindable`).
    let root_fields = |propagation: &str| {
        let (code, out) = run_sh(&rt, "cat /proc/self/mountinfo", |spec| {
            spec["linux"]["rootfsPropagation"] = propagation.into();
        });
        assert_eq!(code, 0, "{propagation}: {out:?}");
        let line = out.iter().find(|l| l.split(' ').nth(4) == Some("/")).unwrap().clone();
        line.split(' ').skip(6).take_while(|f| *f != "-").map(str::to_string).collect::<Vec<_>>()
    };
    assert!(root_fields("shared").iter().any(|f| f.starts_with("shared:")));
    assert!(root_fields("rprivate").is_empty());
    assert_eq!(root_fields("unbindable"), ["unbindable"]);
    assert!(root_fields("slave").iter().any(|f| f.starts_with("master:")));
}

#[test]
fn a_bad_oci_version_and_capabilities_the_runtime_lacks_are_refused_by_name() {
    let rt = TestRuntime::new();
    let id = runtime::unique("version");
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["ociVersion"] = "invalid".into();
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "ociVersion: \"invalid\" is not a version 1.x.y");

    // A runtime started without CAP_SYS_NICE in its bounding set cannot grant it.
    let bundle = rt.bundle(&id, &["true"]);
    let mut spec = bundle.spec.clone();
    spec["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push("CAP_SYS_NICE".into());
    spec["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push("CAP_SYS_NICE".into());
    std::fs::write(bundle.path().join("config.json"), spec.to_string()).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_nice", "--"])
        .arg(runtime::rkubelet())
        .arg("runtime")
        .arg("--root")
        .arg(&rt.runtime.root)
        .args(["--cgroup-parent", &rt.parent, "run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("process.capabilities: CAP_SYS_NICE is not available to this runtime"),
        "{stderr}"
    );
    assert!(!rt.runtime.root.join(&id).exists(), "state left behind");
}

#[test]
fn exec_takes_runcs_cap_no_new_privs_gids_preserve_fds_and_the_process_files_settings() {
    let rt = TestRuntime::new();
    let id = runtime::unique("execflags");
    let mut bundle = rt.bundle(&id, &["sleep", "30"]);
    let none = serde_json::json!([]);
    bundle.spec["process"]["capabilities"] =
        serde_json::json!({"bounding": none, "effective": none, "permitted": none});
    bundle.spec["process"]["noNewPrivileges"] = false.into();
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let status = |out: &std::process::Output| -> std::collections::BTreeMap<String, String> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    };
    let before = status(&rt.cli(&["exec", &id, "cat", "/proc/self/status"]));
    assert_eq!((before["CapBnd"].as_str(), before["NoNewPrivs"].as_str()), ("0000000000000000", "0"));
    // CAP_KILL is bit 5, CAP_AUDIT_WRITE bit 29.
    let after = status(&rt.cli(&[
        "exec",
        "--cap",
        "CAP_KILL",
        "--cap=audit_write",
        "--no-new-privs",
        "-g",
        "7",
        "-g",
        "9",
        &id,
        "cat",
        "/proc/self/status",
    ]));
    for set in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(after[set], "0000000020000020", "{set}");
    }
    assert_eq!(
        (after["CapInh"].as_str(), after["CapAmb"].as_str()),
        ("0000000000000000", "0000000000000000")
    );
    assert_eq!((after["NoNewPrivs"].as_str(), after["Groups"].as_str()), ("1", "7 9"));
    let bad = rt.cli(&["exec", "--cap", "CAP_NOPE", &id, "true"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exec --cap: unknown capability \"CAP_NOPE\""));

    // --process: its capabilities and noNewPrivileges replace the container's.
    let process = rt.run_dir.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::json!({"args": ["cat", "/proc/self/status"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "noNewPrivileges": true, "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN"]}})
        .to_string(),
    )
    .unwrap();
    let from_file = status(&rt.cli(&["exec", "--process", process.to_str().unwrap(), &id]));
    assert_eq!((from_file["CapEff"].as_str(), from_file["NoNewPrivs"].as_str()), ("0000000000000001", "1"));

    // --preserve-fds: fd 3 of the caller is the process's fd 3; without it, nothing passes.
    let data = rt.run_dir.path().join("passed");
    std::fs::write(&data, "preserved\n").unwrap();
    let exec_with_fd3 = |extra: &str| {
        let script = format!(
            "exec \"$0\" runtime --root {} exec {extra} {id} cat /proc/self/fd/3 3<{}",
            rt.runtime.root.display(),
            data.display()
        );
        std::process::Command::new("sh").args(["-c", &script]).arg(runtime::rkubelet()).output().unwrap()
    };
    let out = exec_with_fd3("--preserve-fds 1");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "preserved\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec_with_fd3("");
    assert!(!out.status.success() && out.stdout.is_empty());
    rt.runtime.delete(&id, true).unwrap();
}

fn cgroup_file(rt: &TestRuntime, id: &str, controller: &str, file: &str) -> String {
    let path = format!("/sys/fs/cgroup/{controller}/{}/{file}", rt.cgroup_path(id));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string()
}

/// Host huge page sizes as the hugetlb controller names them (`2MB`, `1GB`).
fn host_page_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse::<u64>()
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|kb| match kb {
            kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
            kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
            kb => format!("{kb}KB"),
        })
        .collect();
    sizes.sort();
    sizes
}

#[test]
fn hugetlb_limits_are_written_and_bad_page_sizes_refused() {
    let rt = TestRuntime::new();
    let id = runtime::unique("tlb");
    let sizes = host_page_sizes();
    assert!(!sizes.is_empty(), "this kernel has huge pages");
    let limits: Vec<serde_json::Value> =
        sizes.iter().map(|s| serde_json::json!({"pageSize": s, "limit": 1u64 << 30})).collect();
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["resources"]["hugepageLimits"] = limits.into();
    bundle.write();
    if !Path::new("/sys/fs/cgroup/hugetlb/cgroup.procs").exists() {
        // hack/setup.sh binds the controller; without it the limit is refused by name.
        assert_one_line_failure(&rt, &bundle, &id, "the hugetlb controller is not mounted");
        return;
    }
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    for size in &sizes {
        assert_eq!(cgroup_file(&rt, &id, "hugetlb", &format!("hugetlb.{size}.limit_in_bytes")), "1073741824");
        let rsvd =
            format!("/sys/fs/cgroup/hugetlb/{}/hugetlb.{size}.rsvd.limit_in_bytes", rt.cgroup_path(&id));
        if Path::new(&rsvd).exists() {
            assert_eq!(std::fs::read_to_string(&rsvd).unwrap().trim(), "1073741824");
        }
    }
    // init is a member.
    let procs = cgroup_file(&rt, &id, "hugetlb", "cgroup.procs");
    assert!(procs.lines().any(|p| p == rt.runtime.state(&id).unwrap().pid.to_string()), "{procs}");
    rt.runtime.delete(&id, true).unwrap();
    assert!(!Path::new(&format!("/sys/fs/cgroup/hugetlb/{}", rt.cgroup_path(&id))).exists());

    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["resources"]["hugepageLimits"] =
        serde_json::json!([{"pageSize": "3MB", "limit": 1024}]);
    bundle.write();
    assert_one_line_failure(
        &rt,
        &bundle,
        &id,
        "linux.resources.hugepageLimits: page size 3MB is not offered by this host's hugetlb controller",
    );
    assert!(!rt.cli(&["state", &id]).status.success());
    bundle.spec["linux"]["resources"]["hugepageLimits"] =
        serde_json::json!([{"pageSize": "2MiB", "limit": 1024}]);
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "linux.resources.hugepageLimits: page size \"2MiB\" is not");
}

#[test]
fn cpuset_cpus_and_mems_confine_the_container() {
    let rt = TestRuntime::new();
    let id = runtime::unique("cpuset");
    let mut bundle =
        rt.bundle(&id, &["sh", "-c", "grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status | tr -d '\\t'"]);
    bundle.spec["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "0", "mems": "0", "shares": 512});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    assert_eq!(cgroup_file(&rt, &id, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(cgroup_file(&rt, &id, "cpuset", "cpuset.mems"), "0");
    // The parent made on the way got the host's cpus, or no task could join below it.
    let parent = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuset/{}/cpuset.cpus", rt.parent)).unwrap();
    assert_eq!(parent.trim(), std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus").unwrap().trim());
    rt.runtime.start(&id).unwrap();
    rt.runtime.wait(&id, Some(std::time::Duration::from_secs(10))).unwrap();
    rt.runtime.delete(&id, false).unwrap();
    let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap();
    assert_eq!(TestRuntime::stdout_lines(&log), vec!["Cpus_allowed_list:0", "Mems_allowed_list:0"]);
}

/// `major:minor` of the block device holding `/`.
fn root_block_device() -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    // A partition's throttles go on its whole disk; read sysfs for it.
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).unwrap();
    let whole = if Path::new(&format!("/sys/dev/block/{major}:{minor}/partition")).exists() {
        std::fs::read_to_string(Path::new("/sys/dev/block").join(&link).parent().unwrap().join("dev"))
            .unwrap()
    } else {
        format!("{major}:{minor}")
    };
    whole.trim().to_string()
}

#[test]
fn blkio_weight_and_throttles_are_written_and_the_absent_refused() {
    let rt = TestRuntime::new();
    let id = runtime::unique("blkio");
    let dev = root_block_device();
    let (major, minor) = dev.split_once(':').unwrap();
    let (major, minor): (i64, i64) = (major.parse().unwrap(), minor.parse().unwrap());
    let throttle = |rate: u64| serde_json::json!([{"major": major, "minor": minor, "rate": rate}]);
    let mut bundle = rt.bundle(&id, &["true"]);
    bundle.spec["linux"]["resources"]["blockIO"] = serde_json::json!({
        "weight": 500,
        "throttleReadBpsDevice": throttle(102400),
        "throttleWriteBpsDevice": throttle(204800),
        "throttleReadIOPSDevice": throttle(300),
        "throttleWriteIOPSDevice": throttle(400),
    });
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    for (file, rate) in [("read_bps", 102400), ("write_bps", 204800), ("read_iops", 300), ("write_iops", 400)]
    {
        let content = cgroup_file(&rt, &id, "blkio", &format!("blkio.throttle.{file}_device"));
        assert_eq!(content, format!("{dev} {rate}"), "{file}");
    }
    let weight_dir = format!("/sys/fs/cgroup/blkio/{}", rt.cgroup_path(&id));
    let weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .find_map(|f| std::fs::read_to_string(Path::new(&weight_dir).join(f)).ok())
        .expect("a weight file");
    assert!(weight.split_whitespace().any(|w| w == "500"), "{weight}");
    rt.runtime.delete(&id, true).unwrap();

    // A knob the host's block layer lacks is refused by name, nothing is left.
    if !Path::new(&format!("/sys/fs/cgroup/blkio/{}", rt.parent)).join("blkio.leaf_weight").exists() {
        let mut bundle = rt.bundle(&id, &["true"]);
        bundle.spec["linux"]["resources"]["blockIO"] = serde_json::json!({"leafWeight": 300});
        bundle.write();
        assert_one_line_failure(
            &rt,
            &bundle,
            &id,
            "linux.resources.blockIO: blkio.leaf_weight is not offered by this host",
        );
    }
}

fn notify_profile(agent: &Path) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": agent, "listenerMetadata": "rkube-test-meta",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]})
}

/// Accepts one connection on `socket` and receives one message with its fds, as a seccomp agent.
fn receive_as_agent(
    socket: &std::os::unix::net::UnixListener,
) -> (serde_json::Value, Vec<std::os::fd::OwnedFd>) {
    use std::os::fd::AsRawFd;
    let (conn, _) = socket.accept().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(|fd| rkube::sys::container::adopt_fd(fd).unwrap()));
        }
    }
    let len = msg.bytes;
    (serde_json::from_slice(&buf[..len]).unwrap(), fds)
}

#[test]
fn seccomp_notify_hands_the_listener_and_the_state_to_the_agent() {
    notified_calls_reach_the_agent(false);
}

/// Under a deny-by-default profile the notification still decides the notified calls: the
/// default's errno must not win over it.
#[test]
fn seccomp_notify_under_an_errno_default_still_reaches_the_agent() {
    notified_calls_reach_the_agent(true);
}

fn notified_calls_reach_the_agent(errno_default: bool) {
    use std::os::fd::AsRawFd;
    let rt = TestRuntime::new();
    let id = runtime::unique("notify");
    let mut bundle = rt.bundle(&id, &["sh", "-c", "echo started; mkdir /tmp/notified 2>&1; echo mkdir=$?"]);
    let agent_path = bundle.path().join("agent.sock");
    let mut profile = notify_profile(&agent_path);
    if errno_default {
        let allowed: Vec<&str> =
            rkube::runtime::syscalls::names().filter(|n| !["mkdir", "mkdirat"].contains(n)).collect();
        profile["defaultAction"] = "SCMP_ACT_ERRNO".into();
        profile["syscalls"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}));
    }
    bundle.spec["linux"]["seccomp"] = profile;
    bundle.write();
    let socket = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
    let agent = std::thread::spawn(move || receive_as_agent(&socket));
    let state = rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    let (message, fds) = agent.join().unwrap();
    assert_eq!(message["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(message["metadata"], "rkube-test-meta");
    assert_eq!(message["pid"], state.pid);
    assert_eq!(message["state"]["id"], id.as_str());
    assert_eq!(message["state"]["status"], "creating");
    assert_eq!(message["state"]["pid"], state.pid);
    assert_eq!(fds.len(), 1);
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fds[0].as_raw_fd())).unwrap();
    assert_eq!(link.to_string_lossy(), "anon_inode:seccomp notify");
    // The agent goes away without answering: with every listener closed, notified calls fail
    // with ENOSYS while the rest of the process runs.
    drop(fds);
    rt.runtime.start(&id).unwrap();
    let exit = rt.runtime.wait(&id, Some(std::time::Duration::from_secs(60))).unwrap();
    rt.runtime.delete(&id, true).unwrap();
    let log = std::fs::read_to_string(bundle.path().join("ctr.log")).unwrap_or_default();
    let lines = TestRuntime::stdout_lines(&log);
    assert_eq!(exit.code, 0, "{log}");
    assert_eq!(lines.first().map(String::as_str), Some("started"), "{log}");
    assert!(lines.iter().any(|l| l.contains("Function not implemented")), "{log}");
    assert_eq!(lines.last().map(String::as_str), Some("mkdir=1"), "{log}");
}

/// A call init itself makes after installing the filter (here `setgroups`) is notified only once
/// the agent holds the listener: `create` cannot wait on a notification nobody can answer. This
/// agent closes the listener, so the call fails (ENOSYS) and `create` says which step failed.
#[test]
fn seccomp_notify_of_a_call_init_makes_reaches_the_agent_first() {
    let rt = TestRuntime::new();
    let id = runtime::unique("notify");
    let mut bundle = rt.bundle(&id, &["true"]);
    let agent_path = bundle.path().join("agent.sock");
    let mut profile = notify_profile(&agent_path);
    profile["syscalls"][0]["names"] = serde_json::json!(["setgroups"]);
    bundle.spec["linux"]["seccomp"] = profile;
    // Without no_new_privs the filter goes in before the user is set, as in runc.
    bundle.spec["process"]["noNewPrivileges"] = false.into();
    bundle.write();
    let socket = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
    // The agent closes the listener at once: the notified call then fails instead of waiting.
    let agent = std::thread::spawn(move || {
        let (message, fds) = receive_as_agent(&socket);
        (message, fds.len())
    });
    let err_path = bundle.path().join("create.err");
    let mut create = std::process::Command::new(runtime::rkubelet())
        .arg("runtime")
        .arg("--root")
        .arg(&rt.runtime.root)
        .args(["--cgroup-parent", &rt.parent, "create", "--bundle", bundle.path().to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = create.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = create.kill();
            panic!("create hangs on a call init made after its filter");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (message, fds) = agent.join().unwrap();
    assert_eq!(message["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(fds, 1);
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("set supplementary groups"), "{stderr}");
    assert!(!rt.runtime.root.join(&id).exists(), "state left behind");
}

#[test]
fn seccomp_notify_without_a_reachable_agent_or_with_a_bad_profile_fails_create_at_once() {
    let rt = TestRuntime::new();
    let id = runtime::unique("notify");
    let mut bundle = rt.bundle(&id, &["true"]);
    let agent_path = bundle.path().join("nobody-listens.sock");
    bundle.spec["linux"]["seccomp"] = notify_profile(&agent_path);
    bundle.write();
    let start = std::time::Instant::now();
    assert_one_line_failure(&rt, &bundle, &id, "linux.seccomp.listenerPath");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    for (edit, expect) in [
        (serde_json::json!({"listenerPath": null}), "SCMP_ACT_NOTIFY needs a listenerPath"),
        (serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}), "cannot be the defaultAction"),
        (
            serde_json::json!({"syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}),
            "cannot be used for the write syscall",
        ),
    ] {
        let mut profile = notify_profile(&agent_path);
        for (k, v) in edit.as_object().unwrap() {
            profile[k] = v.clone();
        }
        bundle.spec["linux"]["seccomp"] = profile;
        bundle.write();
        assert_one_line_failure(&rt, &bundle, &id, expect);
    }
}

#[test]
fn rkube_runc_is_the_runtime_cli_with_runcs_argument_order() {
    let rt = TestRuntime::new();
    let runc = runtime::rkubelet().with_file_name("rkube-runc");
    // A program of its own: callers that resolve the path they are given (OCI validation suites
    // do) still run it under its name.
    assert!(
        std::fs::canonicalize(&runc).unwrap().ends_with("rkube-runc"),
        "rkube-runc resolves to another name"
    );
    let id = runtime::unique("runc");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    let root = rt.runtime.root.to_str().unwrap().to_string();
    let call = |args: &[&str]| -> std::process::Output {
        let out_path = rt.run_dir.path().join(runtime::unique("out"));
        let status = std::process::Command::new(&runc)
            .args(["--root", &root, "--cgroup-parent", &rt.parent])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::process::Stdio::inherit())
            .status()
            .unwrap();
        std::process::Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: vec![] }
    };
    let version = std::process::Command::new(&runc).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rkube-runc version "));
    // contest's order: flags after the id.
    assert!(call(&["create", &id, "--bundle", bundle.path().to_str().unwrap()]).status.success());
    let state: serde_json::Value = serde_json::from_slice(&call(&["state", &id]).stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert!(call(&["start", &id]).status.success());
    let pid = state["pid"].as_i64().unwrap();
    // runc's process model: init is not a child of a monitor of ours.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i64 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let parent_exe =
        std::fs::read_link(format!("/proc/{ppid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    assert!(
        !parent_exe.contains("rkube-monitor") && !parent_exe.contains("rkubelet"),
        "init's parent is {parent_exe}"
    );
    assert!(call(&["kill", &id, "9"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state: serde_json::Value = serde_json::from_slice(&call(&["state", &id]).stdout).unwrap();
        if state["status"] == "stopped" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stopped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(call(&["delete", &id]).status.success());
    assert!(!rt.runtime.root.join(&id).exists());
    // Errors as runc prints them (logrus text), with its exit status.
    let gone = std::process::Command::new(&runc).args(["--root", &root, "kill", &id, "9"]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(stderr.starts_with("time=\"") && stderr.contains(" level=error msg=\"container "), "{stderr}");
}

/// The test process's own cgroup in a v1 hierarchy, without the leading `/`.
fn own_v1_cgroup(controller: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    own.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == controller).then(|| path.trim_start_matches('/').to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} line in /proc/self/cgroup"))
}

#[test]
fn the_cli_places_relative_and_absent_cgroups_paths_under_the_callers_cgroup_as_runc() {
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: no v1 memory hierarchy");
        return;
    }
    let rt = TestRuntime::new();
    // memory: where a caller (a service, a container) most often sits below the root.
    let own = Path::new("/sys/fs/cgroup/memory").join(own_v1_cgroup("memory"));
    let none = runtime::unique("cg-none");
    let relative = runtime::unique("cg-rel");
    // The CLI without --cgroup-parent (runc's command line): no cgroupsPath → `<own>/<id>`, a
    // relative one → `<own>/<path>`.
    let create = |id: &str, path: Option<String>| {
        let mut bundle = rt.bundle(id, &["true"]);
        bundle.spec["linux"]["cgroupsPath"] = path.map_or(serde_json::Value::Null, Into::into);
        bundle.write();
        let err = rt.run_dir.path().join(runtime::unique("stderr"));
        let status = std::process::Command::new(runtime::rkubelet())
            .args(["runtime", "--root"])
            .arg(&rt.runtime.root)
            .args(["create", "--bundle"])
            .arg(bundle.path())
            .arg(id)
            .env_remove("RKUBE_CGROUP_PARENT")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{}", std::fs::read_to_string(&err).unwrap());
        bundle
    };
    let _a = create(&none, None);
    let _b = create(&relative, Some(format!("{}/{relative}", rt.parent)));
    let in_none = own.join(&none);
    let in_relative = own.join(&rt.parent).join(&relative);
    let procs = |dir: &Path| std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    let pid = |id: &str| rt.runtime.state(id).unwrap().pid.to_string();
    assert!(procs(&in_none).lines().any(|p| p == pid(&none)), "{}", in_none.display());
    assert!(procs(&in_relative).lines().any(|p| p == pid(&relative)), "{}", in_relative.display());
    for id in [&none, &relative] {
        let out = rt.cli(&["delete", "--force", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!in_none.exists() && !in_relative.exists() && !own.join(&rt.parent).exists());
}

/// A veth pair on the host (this kernel has no dummy devices), removed on drop if still there.
struct HostVeth(String);

impl HostVeth {
    fn new(name: &str, peer: &str) -> HostVeth {
        ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
        HostVeth(peer.to_string())
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_has_link(name: &str) -> bool {
    std::process::Command::new("ip").args(["link", "show", "dev", name]).output().unwrap().status.success()
}

#[test]
fn net_devices_move_into_the_container_renamed_with_their_global_addresses_and_up() {
    let rt = TestRuntime::new();
    let n = std::process::id() % 100_000;
    let (a, b, c) = (format!("rkda{n}"), format!("rkdb{n}"), format!("rkdc{n}"));
    let _pair1 = HostVeth::new(&a, &format!("rkdp{n}"));
    let _pair2 = HostVeth::new(&b, &format!("rkdq{n}"));
    ip(&["addr", "add", "198.51.100.7/24", "dev", &a]);
    ip(&["addr", "add", "169.254.77.7/16", "scope", "link", "dev", &a]);

    let id = runtime::unique("netdev");
    let mut bundle = rt.bundle(&id, &["sleep", "30"]);
    bundle.spec["linux"]["netDevices"] = serde_json::json!({&a: {"name": "ctr0"}, &b: {}});
    bundle.write();
    let state = rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    let netns = format!("--net=/proc/{}/ns/net", state.pid);
    let inside = |args: &[&str]| {
        let out = std::process::Command::new("nsenter").arg(&netns).arg("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Moved at create: gone from the host, renamed (or not) inside, up, with only the permanent
    // global address (the link-scope one stays behind, as the spec says).
    assert!(!host_has_link(&a) && !host_has_link(&b), "the devices are still on the host");
    let addrs = inside(&["-o", "addr", "show", "dev", "ctr0"]);
    assert!(addrs.contains("inet 198.51.100.7/24"), "{addrs}");
    assert!(!addrs.contains("169.254.77.7"), "a link-scope address moved: {addrs}");
    for name in ["ctr0", b.as_str()] {
        let link = inside(&["-o", "link", "show", "dev", name]);
        assert!(link.contains(",UP"), "{name} is not up in the container: {link}");
    }
    rt.runtime.delete(&id, true).unwrap();
    // Virtual devices go with the namespace (the runtime does not move them back); the kernel
    // tears a namespace down in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host_has_link(&format!("rkdp{n}")) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!host_has_link(&a) && !host_has_link(&format!("rkdp{n}")), "the veth outlived the container");

    // Refused before anything moves: a device the host lacks, a name taken in a namespace joined
    // by path; there `%d` lets the kernel pick a free name.
    let mut bundle = rt.bundle(&id, &["sleep", "30"]);
    bundle.spec["linux"]["netDevices"] = serde_json::json!({&c: {}});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, &format!("linux.netDevices: {c}: no such network device"));
    let joined = format!("rkube-nd{n}");
    ip(&["netns", "add", &joined]);
    let _netns = scopeguard(|| {
        let _ = std::process::Command::new("ip").args(["netns", "del", &joined]).output();
    });
    ip(&["-n", &joined, "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr1"]);
    let _pair3 = HostVeth::new(&c, &format!("rkdr{n}"));
    let namespaces = bundle.spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "network");
    namespaces.push(serde_json::json!({"type": "network", "path": format!("/run/netns/{joined}")}));
    bundle.spec["linux"]["netDevices"] = serde_json::json!({&c: {"name": "ctr0"}});
    bundle.write();
    assert_one_line_failure(&rt, &bundle, &id, "already has a device called ctr0");
    assert!(host_has_link(&c), "a refused device moved");
    bundle.spec["linux"]["netDevices"] = serde_json::json!({&c: {"name": "ctr%d"}});
    bundle.write();
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    let links = ip(&["-n", &joined, "-o", "link", "show"]);
    assert!(links.contains(": ctr2@") && !host_has_link(&c), "{links}");
    rt.runtime.delete(&id, true).unwrap();
    // The joined namespace outlives the container: the device stays there.
    assert!(ip(&["-n", &joined, "-o", "link", "show"]).contains(": ctr2@"));
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
