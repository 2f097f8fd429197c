//! Isolation and security properties, observed from inside a busybox container (root, real kernel).

#[path = "support/runtime.rs"]
mod runtime;

use runtime::TestRuntime;

/// Runs `sh -c script` in a fresh container; returns the exit and stdout lines.
fn run_sh(
    rt: &TestRuntime,
    script: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (rkube::runtime::ExitInfo, Vec<String>) {
    let id = runtime::unique("iso");
    let mut bundle = rt.bundle(&id, &["sh", "-c", script]);
    edit(&mut bundle.spec);
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    eprintln!("container log:\n{log}");
    (exit, TestRuntime::stdout_lines(&log))
}

#[test]
fn sees_only_its_own_pids() {
    let rt = TestRuntime::new();
    let (exit, out) = run_sh(&rt, "echo $$; ls /proc | grep -c '^[0-9]'", |_| {});
    assert_eq!(exit.code, 0, "{out:?}");
    assert_eq!(out[0], "1", "the shell must be pid 1");
    let visible: usize = out[1].parse().unwrap();
    assert!(visible <= 4, "only the container's processes are visible, saw {visible}");
}

#[test]
fn hostname_is_set() {
    let rt = TestRuntime::new();
    let (exit, out) = run_sh(&rt, "hostname", |_| {});
    assert_eq!(exit.code, 0);
    assert_eq!(out, vec!["rkube-test"]);
}

fn caps_of(out: &[String]) -> std::collections::BTreeMap<String, u64> {
    out.iter()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

#[test]
fn capability_sets_are_exactly_as_configured() {
    let rt = TestRuntime::new();
    let default_mask = 0x0000_0000_a804_25fb;
    let (exit, out) = run_sh(&rt, "grep ^Cap /proc/self/status", |_| {});
    assert_eq!(exit.code, 0);
    let caps = caps_of(&out);
    assert_eq!(caps["CapBnd"], default_mask, "{out:?}");
    assert_eq!(caps["CapEff"], default_mask);
    assert_eq!(caps["CapPrm"], default_mask);
    assert_eq!(caps["CapInh"], 0);
    assert_eq!(caps["CapAmb"], 0);

    // A custom set (kill, chown, net_raw).
    let (_, out) = run_sh(&rt, "grep ^Cap /proc/self/status", |spec| {
        let set = serde_json::json!(["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"]);
        spec["process"]["capabilities"] = serde_json::json!({"bounding": set, "effective": set, "permitted": set, "inheritable": [], "ambient": []});
    });
    let caps = caps_of(&out);
    let mask = (1 << 5) | (1 << 0) | (1 << 13);
    assert_eq!((caps["CapBnd"], caps["CapEff"], caps["CapPrm"]), (mask, mask, mask), "{out:?}");

    // A non-root user gets no inheritable or ambient capabilities (CVE-2022-29162 class).
    let (_, out) = run_sh(&rt, "id -u; grep ^Cap /proc/self/status", |spec| {
        spec["annotations"]["io.rkube.user"] = "web".into();
    });
    assert_eq!(out[0], "1000");
    let caps = caps_of(&out[1..]);
    assert_eq!((caps["CapInh"], caps["CapAmb"], caps["CapEff"]), (0, 0, 0), "{out:?}");
}

#[test]
fn user_and_supplementary_groups_come_from_the_image() {
    let rt = TestRuntime::new();
    let (exit, out) = run_sh(&rt, "id -u; id -g; id -G", |spec| {
        spec["annotations"]["io.rkube.user"] = "web".into();
        spec["process"]["user"]["additionalGids"] = serde_json::json!([5]);
    });
    assert_eq!(exit.code, 0);
    assert_eq!(out[0], "1000");
    assert_eq!(out[1], "1000");
    let groups: Vec<&str> = out[2].split_whitespace().collect();
    assert!(groups.contains(&"29") && groups.contains(&"5"), "{out:?}");
}

#[test]
fn masked_paths_are_empty_and_readonly_paths_unwritable() {
    let rt = TestRuntime::new();
    // The host's timer_list is not empty, so an unmasked one would show.
    assert!(!std::fs::read_to_string("/proc/timer_list").unwrap().is_empty());
    let script = "wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
        (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo WROTE || echo DENIED; \
        (echo x > /proc/sysrq-trigger) 2>/dev/null && echo WROTE || echo DENIED";
    let (exit, out) = run_sh(&rt, script, |_| {});
    assert_eq!(exit.code, 0, "{out:?}");
    assert_eq!(out, vec!["0", "0", "DENIED", "DENIED"]);
}

#[test]
fn sys_is_read_only() {
    let rt = TestRuntime::new();
    let script = "(mkdir /sys/kernel/rkube-x) 2>/dev/null && echo WROTE || echo DENIED; \
        (mkdir /sys/fs/cgroup/memory/x) 2>/dev/null && echo WROTE || echo DENIED; \
        grep ' /sys ' /proc/mounts | grep -c ' ro,'";
    let (_, out) = run_sh(&rt, script, |_| {});
    assert_eq!(out, vec!["DENIED", "DENIED", "1"]);
}

#[test]
fn only_fds_0_to_2_are_open_at_exec() {
    let rt = TestRuntime::new();
    let id = runtime::unique("fds");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    let state = rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    // Wait for the exec (the exe link turns into busybox), then list the fds from the host.
    let exe = format!("/proc/{}/exe", state.pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_link(&exe).map(|p| p.ends_with("busybox")).unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "container never exec'd");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", state.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, vec![0, 1, 2]);
    rt.runtime.delete(&id, true).unwrap();
}

#[test]
fn read_only_rootfs_cannot_be_written() {
    let rt = TestRuntime::new();
    let (_, out) = run_sh(
        &rt,
        "(touch /rkube-file) 2>/dev/null && echo WROTE || echo DENIED; touch /dev/shm/ok && echo TMPFS",
        |spec| {
            spec["root"]["readonly"] = true.into();
        },
    );
    assert_eq!(out, vec!["DENIED", "TMPFS"]);
}

#[test]
fn exit_codes_and_signals_propagate() {
    let rt = TestRuntime::new();
    let (exit, _) = run_sh(&rt, "exit 42", |_| {});
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (42, None, false));
    // A child killed by a signal: the shell reports 128 + 9.
    let (exit, _) = run_sh(&rt, "sh -c 'kill -9 $$'; exit $?", |_| {});
    assert_eq!((exit.code, exit.signal), (137, None));

    // A signal sent through the runtime reaches the process, which handles it.
    let id = runtime::unique("sig");
    let bundle =
        rt.bundle(&id, &["sh", "-c", "trap 'exit 7' TERM; echo ready; while true; do sleep 0.05; done"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    let log = bundle.path().join("ctr.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("ready") {
        assert!(std::time::Instant::now() < deadline, "container never became ready");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    rt.runtime.kill(&id, nix::sys::signal::Signal::SIGTERM, false).unwrap();
    let exit = rt.runtime.wait(&id, Some(std::time::Duration::from_secs(10))).unwrap();
    assert_eq!(exit.code, 7);
    rt.runtime.delete(&id, false).unwrap();

    // SIGKILL from outside ends init itself: reported as signal 9.
    let id = runtime::unique("kill");
    let bundle = rt.bundle(&id, &["sleep", "30"]);
    rt.runtime.create(&rt.request(&id, &bundle)).unwrap();
    rt.runtime.start(&id).unwrap();
    rt.runtime.kill(&id, nix::sys::signal::Signal::SIGKILL, false).unwrap();
    let exit = rt.runtime.wait(&id, Some(std::time::Duration::from_secs(10))).unwrap();
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (137, Some(9), false));
    rt.runtime.delete(&id, false).unwrap();
}
