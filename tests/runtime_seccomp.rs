//! Seccomp and privilege checks from inside a container: with the default profile (Docker's
//! semantics) the container cannot mount, unshare, load modules or use keyctl; `clone3` gets
//! ENOSYS. A probe (rkubelet's hidden `__probe`, with the host's libraries bound read-only)
//! reports the exact errno of each call.

#[path = "support/runtime.rs"]
mod runtime;

use runtime::TestRuntime;

fn probe_all(
    rt: &TestRuntime,
    calls: &[&str],
    profile: &str,
    caps: Option<serde_json::Value>,
) -> Vec<String> {
    let id = runtime::unique("sc");
    let script: String = calls.iter().map(|c| format!("/probe runtime __probe {c}; ")).collect();
    let mut bundle = rt.bundle(&id, &["sh", "-c", &script]);
    bundle.add_host_libs_and_probe(&runtime::rkubelet());
    bundle.spec["annotations"]["io.rkube.seccomp"] = profile.into();
    if let Some(c) = caps {
        bundle.spec["process"]["capabilities"] =
            serde_json::json!({"bounding": c, "effective": c, "permitted": c});
    }
    bundle.write();
    let (exit, log) = rt.run(&id, &bundle);
    assert_eq!(exit.code, 0, "{log}");
    TestRuntime::stdout_lines(&log).iter().map(|l| l.split(':').next().unwrap().to_string()).collect()
}

#[test]
fn default_profile_denies_keyctl_unshare_bpf_and_modules() {
    let rt = TestRuntime::new();
    let calls =
        ["keyctl", "add_key", "request_key", "unshare", "bpf", "init_module", "kexec_load", "userfaultfd"];
    let out = probe_all(&rt, &calls, "runtime/default", None);
    assert_eq!(out, vec!["EPERM"; calls.len()], "{calls:?}");
}

#[test]
fn clone3_reports_enosys_so_libc_falls_back_to_clone() {
    let rt = TestRuntime::new();
    assert_eq!(probe_all(&rt, &["clone3"], "runtime/default", None), vec!["ENOSYS"]);
}

#[test]
fn unconfined_container_reaches_the_kernel() {
    // The control case: without seccomp the same probes get the kernel's own answers, so the
    // EPERMs above come from the filter.
    let rt = TestRuntime::new();
    let all: Vec<String> =
        runtime::DEFAULT_CAPS.iter().map(|s| s.to_string()).chain(["CAP_SYS_ADMIN".into()]).collect();
    let out = probe_all(&rt, &["keyctl", "unshare"], "unconfined", Some(serde_json::json!(all)));
    assert_ne!(out[0], "EPERM");
    assert_eq!(out[1], "OK");
}

#[test]
fn cannot_mount_or_unshare_with_busybox() {
    let rt = TestRuntime::new();
    let id = runtime::unique("mnt");
    let script = "mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED || echo DENIED; \
        unshare -m true 2>/dev/null && echo UNSHARED || echo DENIED; \
        unshare -n true 2>/dev/null && echo UNSHARED || echo DENIED";
    let bundle = rt.bundle(&id, &["sh", "-c", script]);
    let (_, log) = rt.run(&id, &bundle);
    assert_eq!(TestRuntime::stdout_lines(&log), vec!["DENIED", "DENIED", "DENIED"], "{log}");
}
