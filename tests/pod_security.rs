//! Root integration tests: pod security under `rkubelet run` on a test node. Seccomp is
//! RuntimeDefault unless the pod asks otherwise (or the node runs with --seccomp-default=false),
//! Localhost profiles come from `<root>/seccomp`, runAsNonRoot gives the kubelet's message, and
//! fields rkube does not implement are refused with their path before anything is created.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use pod::{PodNode, pod_yaml};

/// What a container sees of its confinement, one line per probe:
/// seccomp mode, user namespace creation, mount, kmsg, block devices, leaked fds, masked kcore.
const PROBES: &str = "grep '^Seccomp:' /proc/self/status | tr -d '\\t '; \
    unshare -U true 2>/dev/null && echo userns:yes || echo userns:no; \
    mount -t tmpfs none /mnt 2>/dev/null && echo mount:yes || echo mount:no; \
    head -c1 /dev/kmsg >/dev/null 2>&1 && echo kmsg:yes || echo kmsg:no; \
    ls -l /dev | grep -q '^b' && echo blockdev:yes || echo blockdev:no; \
    echo fds:$(ls /proc/self/fd | tr '\\n' ' '); \
    head -c1 /proc/kcore 2>/dev/null | wc -c | sed 's/^/kcore:/'; \
    sleep 3600";

fn probe_pod(name: &str, security: &str) -> String {
    pod_yaml(name, security, &format!("    command: [\"sh\", \"-c\", \"{PROBES}\"]"))
}

/// Runs the probe pod and returns its output lines (once all seven are there).
fn probe(node: &PodNode, name: &str, security: &str, extra_flags: &[&str]) -> Vec<String> {
    let path = node.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, probe_pod(name, security)).unwrap();
    let mut args = vec![path.to_str().unwrap(), "--no-agent"];
    args.extend_from_slice(extra_flags);
    node.ok("run", &args, &[]);
    let mut lines = Vec::new();
    pod::wait_for(std::time::Duration::from_secs(10), || {
        let out = node.rk("logs", &[name], &[]);
        lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        lines.len() >= 7
    });
    node.ok("rm", &[name, "--time=0"], &[]);
    node.assert_pod_gone(name);
    lines
}

fn field<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

#[test]
fn a_pod_without_security_context_is_confined_and_unconfined_is_not() {
    let node = PodNode::new(58);
    let confined = probe(&node, "plain", "", &[]);
    assert_eq!(field(&confined, "Seccomp"), "2", "RuntimeDefault filter: {confined:?}");
    assert_eq!(field(&confined, "userns"), "no", "{confined:?}");
    assert_eq!(field(&confined, "mount"), "no", "{confined:?}");
    assert_eq!(field(&confined, "kmsg"), "no", "{confined:?}");
    assert_eq!(field(&confined, "blockdev"), "no", "{confined:?}");
    // ls's own directory fd is the only one besides stdio.
    assert_eq!(field(&confined, "fds").split_whitespace().count(), 4, "{confined:?}");
    assert_eq!(field(&confined, "kcore"), "0", "{confined:?}");

    // The pod asked for Unconfined: no filter, and creating a user namespace reaches the kernel.
    let unconfined = probe(&node, "open", "  securityContext: {seccompProfile: {type: Unconfined}}", &[]);
    assert_eq!(field(&unconfined, "Seccomp"), "0", "{unconfined:?}");
    assert_eq!(field(&unconfined, "userns"), "yes", "{unconfined:?}");
    assert_eq!(field(&unconfined, "kcore"), "0", "masked paths stay masked: {unconfined:?}");

    // A node started with --seccomp-default=false leaves pods that name no profile unconfined;
    // the issue's pod names RuntimeDefault at both levels and is confined either way.
    let legacy = probe(&node, "legacy", "", &["--seccomp-default=false"]);
    assert_eq!(field(&legacy, "Seccomp"), "0", "{legacy:?}");
    let asked = "  securityContext: {seccompProfile: {type: RuntimeDefault}}";
    let asked = probe(&node, "asked", asked, &["--seccomp-default=false"]);
    assert_eq!(field(&asked, "Seccomp"), "2", "{asked:?}");
    assert_eq!(field(&asked, "userns"), "no", "{asked:?}");
}

#[test]
fn a_localhost_profile_from_the_node_directory_applies() {
    let node = PodNode::new(59);
    let profiles = node.root().join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let yaml = pod_yaml(
        "nomkdir",
        "",
        "    securityContext:\n      seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}\n    \
         command: [sleep, \"3600\"]",
    );
    let out = node.run_yaml("nomkdir", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node.rk("exec", &["nomkdir", "-c", "c"], &["mkdir", "/tmp/x"]);
    assert!(!out.status.success(), "mkdir went through the profile");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    assert_eq!(node.exec("nomkdir", "c", &["sh", "-c", "touch /tmp/f && echo ok"]).trim(), "ok");
    node.ok("rm", &["nomkdir", "--time=0"], &[]);

    // A profile that is not there fails the start with the path, and nothing is created.
    let missing = yaml.replace("name: nomkdir", "name: noprofile").replace("deny-mkdir", "absent");
    let out = node.run_yaml("noprofile", &missing, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("securityContext.seccompProfile.localhostProfile: seccomp profile"), "{err}");
    assert!(err.contains("profiles/absent.json"), "{err}");
    node.assert_pod_gone("noprofile");
}

#[test]
fn run_as_non_root_with_a_root_image_fails_with_the_kubelets_message() {
    let node = PodNode::new(60);
    let yaml = pod_yaml("nonroot", "  securityContext: {runAsNonRoot: true}", "    command: [sleep, \"60\"]");
    let out = node.run_yaml("nonroot", &yaml, true);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default\", container: c)"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    node.assert_pod_gone("nonroot");
    assert_eq!(node.agent_pid(), None);
    // With a non-root user the same pod runs.
    let ok = yaml.replace("runAsNonRoot: true", "runAsNonRoot: true, runAsUser: 1000");
    let out = node.run_yaml("nonroot", &ok, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.exec("nonroot", "c", &["id", "-u"]).trim(), "1000");
    node.ok("rm", &["nonroot", "--time=0"], &[]);
}

#[test]
fn fields_rkube_does_not_implement_are_refused_by_name_and_create_nothing() {
    let node = PodNode::new(62);
    for (field, spec, container) in [
        ("spec.runtimeClassName", "  runtimeClassName: gvisor\n", ""),
        ("spec.activeDeadlineSeconds", "  activeDeadlineSeconds: 30\n", ""),
        ("spec.securityContext.fsGroup", "  securityContext: {fsGroup: 2000}\n", ""),
        (
            "spec.containers[0].securityContext.seLinuxOptions",
            "",
            "    securityContext: {seLinuxOptions: {level: \"s0:c1\"}}\n",
        ),
        (
            "spec.containers[0].securityContext.appArmorProfile.type",
            "",
            "    securityContext: {appArmorProfile: {type: RuntimeDefault}}\n",
        ),
        ("spec.containers[0].tty", "", "    tty: true\n"),
    ] {
        let yaml = pod_yaml("refused", spec, &format!("    command: [sleep, \"60\"]\n{container}"));
        let out = node.run_yaml("refused", &yaml, true);
        assert!(!out.status.success(), "{field} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{field}: ")) && err.contains("not supported by rkube"),
            "{field}: {err}"
        );
        node.assert_pod_gone("refused");
        assert_eq!(node.agent_pid(), None, "an agent was started for {field}");
    }
}

/// `readlink /proc/self/ns/<kind>` of a path holding a namespace (`net:[4026532001]`).
fn ns_id(kind: &str, path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{kind}:[{}]", std::fs::metadata(path).unwrap().ino())
}

#[test]
fn host_namespaces_are_the_nodes() {
    let node = PodNode::new(63);
    let me = std::process::id();
    let yaml = |name: &str, host: &str| {
        let spec = format!("{host}\n  hostAliases: [{{ip: 10.9.8.7, hostnames: [db.local]}}]");
        pod_yaml(name, spec.trim_start_matches('\n'), "    command: [sleep, \"3600\"]")
    };
    let look = "for n in net ipc pid; do readlink /proc/self/ns/$n; done; \
                test -d /proc/{me} && echo sees-node-process || echo own-pids; hostname; cat /proc/net/dev";
    let look = look.replace("{me}", &me.to_string());

    // hostNetwork, hostPID, hostIPC: the node's namespaces (the test node's network namespace).
    let out = node.run_yaml(
        "hostns",
        &yaml("hostns", "  hostNetwork: true\n  hostPID: true\n  hostIPC: true"),
        false,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = node.exec("hostns", "c", &["sh", "-c", &look]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], ns_id("net", &node.net.node_ns), "{seen}");
    assert_eq!(lines[1], ns_id("ipc", std::path::Path::new("/proc/self/ns/ipc")), "{seen}");
    assert_eq!(lines[2], ns_id("pid", std::path::Path::new("/proc/self/ns/pid")), "{seen}");
    assert_eq!(lines[3], "sees-node-process", "{seen}");
    let node_hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(lines[4], node_hostname, "the node's hostname");
    assert!(seen.contains("rktl63:"), "the node's LAN interface: {seen}");
    let hosts = node.exec("hostns", "c", &["cat", "/etc/hosts"]);
    let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(hosts.starts_with(&node_hosts), "the node's hosts file: {hosts}");
    assert!(hosts.contains("10.9.8.7\tdb.local"), "{hosts}");
    assert!(node.inspect("hostns")["ip"].is_null(), "no pod IP of its own");
    node.ok("rm", &["hostns", "--time=0"], &[]);
    node.assert_pod_gone("hostns");

    // Without them: namespaces of its own.
    let out = node.run_yaml("ownns", &yaml("ownns", ""), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = node.exec("ownns", "c", &["sh", "-c", &look]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_ne!(lines[0], ns_id("net", &node.net.node_ns), "{seen}");
    assert_ne!(lines[1], ns_id("ipc", std::path::Path::new("/proc/self/ns/ipc")), "{seen}");
    assert_eq!(lines[3], "own-pids", "{seen}");
    assert_eq!(lines[4], "ownns");
    assert!(!seen.contains("rktl63:"), "{seen}");
    node.ok("rm", &["ownns", "--time=0"], &[]);

    // hostPID and a shared pid namespace exclude each other, as in Kubernetes.
    let both = yaml("both", "  hostPID: true\n  shareProcessNamespace: true");
    let out = node.run_yaml("both", &both, false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ShareProcessNamespace and HostPID cannot both be enabled")
    );
    node.assert_pod_gone("both");
}

#[test]
fn safe_sysctls_apply_inside_the_pod_only_and_unsafe_ones_are_refused() {
    let node = PodNode::new(64);
    let yaml = |name: &str, sysctl: &str, value: &str| {
        let spec = format!("  securityContext:\n    sysctls: [{{name: {sysctl}, value: \"{value}\"}}]");
        pod_yaml(name, &spec, "    command: [sleep, \"3600\"]")
    };
    let read_node = || {
        rkube::network::netns::run_in_netns(Some(&node.net.node_ns), || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap()
        })
        .unwrap()
    };
    let before = read_node();
    let out = node.run_yaml("ports", &yaml("ports", "net.ipv4.ip_local_port_range", "40000 50000"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = node.exec("ports", "c", &["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    assert_eq!(inside.split_whitespace().collect::<Vec<_>>(), ["40000", "50000"]);
    assert_eq!(read_node(), before, "the node's own value is untouched");
    node.ok("rm", &["ports", "--time=0"], &[]);

    let out = node.run_yaml("unsafe", &yaml("unsafe", "kernel.msgmax", "65536"), true);
    assert!(!out.status.success(), "an unsafe sysctl was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.securityContext.sysctls[0]: forbidden sysctl: \"kernel.msgmax\" not allowlisted"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    node.assert_pod_gone("unsafe");
    assert_eq!(node.agent_pid(), None);
}

#[test]
fn host_users_false_gives_the_pod_an_unprivileged_id_range() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let node = PodNode::new(65);
    // The pod's own root must reach its files: the node's root is searchable, as /var/lib/rkube is.
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = pod_yaml(
        "userns",
        "  hostUsers: false\n  volumes: [{name: data, emptyDir: {}}]",
        "    securityContext: {procMount: Unmasked}\n    volumeMounts: [{name: data, mountPath: /data}]\n    \
         command: [\"sh\", \"-c\", \"touch /data/made-by-root && sleep 3600\"]",
    );
    let out = node.run_yaml("userns", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = node.exec(
        "userns",
        "c",
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; test -c /proc/timer_list && echo masked || echo unmasked",
        ],
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines[0], "0", "root inside: {inside}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    let base: u32 = map[1].parse().unwrap();
    assert_eq!((map[0], map[2]), ("0", "65536"), "{inside}");
    assert!(base >= 65536 && base.is_multiple_of(65536), "an unprivileged range: {base}");
    assert_eq!(lines[2], "unmasked", "procMount: Unmasked");
    // On the host the container's root is that unprivileged uid, and so are the files it makes.
    let id = node.inspect("userns")["containers"][0]["id"].as_str().unwrap().to_string();
    let record = std::fs::read(node.run_dir().join("runtime").join(&id).join("state.json")).unwrap();
    let pid = serde_json::from_slice::<serde_json::Value>(&record).unwrap()["pid"].as_i64().unwrap();
    assert_eq!(std::fs::metadata(format!("/proc/{pid}")).unwrap().uid(), base);
    let made = node.root().join("pods/userns/volumes/data/made-by-root");
    pod::wait_for(std::time::Duration::from_secs(5), || made.exists());
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base, base));
    node.ok("rm", &["userns", "--time=0"], &[]);
    node.assert_pod_gone("userns");
    assert!(!node.root().join("userns/1").exists(), "the range is given back");

    // Unmasked /proc needs a user namespace of the pod's own, as in Kubernetes.
    let out = node.run_yaml(
        "masked",
        &yaml.replace("name: userns", "name: masked").replace("  hostUsers: false\n", ""),
        false,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`hostUsers` must be false to use `Unmasked`"));
    node.assert_pod_gone("masked");
}

/// The syscall probes of `tests/runtime_seccomp.rs`, run inside pods: rkubelet's hidden `__probe`
/// with the host's libraries, all mounted read-only through hostPath volumes.
fn syscall_probes(node: &PodNode, name: &str, security: &str, calls: &[&str]) -> Vec<String> {
    let rkubelet = env!("CARGO_BIN_EXE_rkubelet");
    let script: String = calls.iter().map(|c| format!("/probe runtime __probe {c}; ")).collect();
    let spec = format!(
        "  restartPolicy: Never\n{security}\n  volumes:\n  - {{name: lib, hostPath: {{path: /lib}}}}\n  \
         - {{name: lib64, hostPath: {{path: /lib64}}}}\n  - {{name: usr, hostPath: {{path: /usr}}}}\n  \
         - {{name: probe, hostPath: {{path: {rkubelet}, type: File}}}}"
    );
    let container = format!(
        "    command: [\"sh\", \"-c\", \"{script} sleep 3600\"]\n    volumeMounts:\n    \
         - {{name: lib, mountPath: /lib, readOnly: true}}\n    - {{name: lib64, mountPath: /lib64, readOnly: true}}\n    \
         - {{name: usr, mountPath: /usr, readOnly: true}}\n    - {{name: probe, mountPath: /probe, readOnly: true}}"
    );
    let yaml = pod_yaml(name, &spec, &container);
    let out = node.run_yaml(name, &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = Vec::new();
    pod::wait_for(std::time::Duration::from_secs(10), || {
        let out = node.rk("logs", &[name], &[]);
        lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect();
        lines.len() >= calls.len()
    });
    node.ok("rm", &[name, "--time=0"], &[]);
    lines
}

#[test]
fn escape_syscalls_are_denied_in_a_default_pod_and_reach_the_kernel_when_unconfined() {
    let node = PodNode::new(67);
    let calls =
        ["keyctl", "add_key", "request_key", "unshare", "bpf", "init_module", "kexec_load", "userfaultfd"];
    let confined = syscall_probes(&node, "denied", "", &calls);
    assert_eq!(confined, vec!["EPERM"; calls.len()], "{calls:?}");
    let open = syscall_probes(
        &node,
        "open",
        "  securityContext: {seccompProfile: {type: Unconfined}}",
        &["keyctl", "unshare"],
    );
    assert_ne!(open[0], "EPERM", "keyctl reaches the kernel: {open:?}");
    assert_eq!(open[1], "OK", "unshare(0) reaches the kernel: {open:?}");
    // The probe cannot write the binary it runs from (a read-only hostPath here).
    assert_eq!(syscall_probes(&node, "exe", "", &["write-exe"]), ["EROFS"]);
}

#[test]
fn read_only_root_capabilities_and_no_privilege_escalation_apply() {
    let node = PodNode::new(69);
    let yaml = pod_yaml(
        "locked",
        "",
        "    command: [sleep, \"3600\"]\n    securityContext:\n      readOnlyRootFilesystem: true\n      \
         allowPrivilegeEscalation: false\n      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}",
    );
    let out = node.run_yaml("locked", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = node.exec(
        "locked",
        "c",
        &["sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"],
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "ro", "{seen}");
    // CAP_NET_BIND_SERVICE is bit 10: 0x400, and nothing else.
    assert!(
        lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["CapEff:", "0000000000000400"]),
        "{seen}"
    );
    assert!(
        lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["CapBnd:", "0000000000000400"]),
        "{seen}"
    );
    assert!(lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"]), "{seen}");
    // The program and an exec'd process start with SIGPIPE not ignored and no signal blocked:
    // rkubelet ignores SIGPIPE (every Rust program does), and an ignored signal survives exec.
    let signals =
        node.exec("locked", "c", &["grep", "-E", "^Sig(Ign|Blk)", "/proc/1/status", "/proc/self/status"]);
    let masks: Vec<u64> = signals
        .lines()
        .map(|l| u64::from_str_radix(l.rsplit(['\t', ' ']).next().unwrap(), 16).unwrap())
        .collect();
    assert_eq!(masks.len(), 4, "{signals}");
    assert!(masks.iter().all(|m| m & (1 << (libc::SIGPIPE - 1)) == 0), "SIGPIPE ignored: {signals}");
    assert_eq!((masks[0], masks[2]), (0, 0), "signals blocked: {signals}");
    node.ok("rm", &["locked", "--time=0"], &[]);
}
