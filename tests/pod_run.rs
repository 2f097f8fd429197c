//! Root integration tests: pods started by `rkubelet run` on a test node (own node netns, bridge,
//! CIDR, state dirs, cgroup parent), using a busybox image imported from the host.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pod::{IMAGE, PodNode, wait_for};
use rkube::network::link;

fn http_in_pod(node: &PodNode, pod: &str, container: &str, url: &str) -> Option<String> {
    let out = node.rk("exec", &[pod, "-c", container], &["timeout", "3", "wget", "-qO-", url]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_http(node: &PodNode, pod: &str, container: &str, url: &str) -> String {
    let mut answer = None;
    wait_for(Duration::from_secs(10), || {
        answer = http_in_pod(node, pod, container, url);
        answer.is_some()
    });
    answer.unwrap_or_else(|| panic!("{url} not reachable from {pod}/{container}"))
}

fn server(name: &str, port: u16, page: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo \"{page}\" > /www/index.html && exec httpd -f -p {port} -h /www"]
{extra}"#
    )
}

#[test]
fn containers_share_localhost_and_see_config_and_secrets() {
    let node = PodNode::new(41);
    let yaml = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: projectid}}
data: {{project.id: hello-docker}}
---
apiVersion: v1
kind: Secret
metadata: {{name: secretid}}
data: {{secret.id: c2VjcmV0LTEyMw==}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: cfg, configMap: {{name: projectid}}}}
  - {{name: sec, secret: {{secretName: secretid}}}}
  - {{name: shared, emptyDir: {{}}}}
  containers:
{}
  - name: client
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: cfg, mountPath: /config}}
    - {{name: sec, mountPath: /secret}}
    - {{name: shared, mountPath: /shared}}
"#,
        server(
            "server",
            8080,
            "$PROJECT_ID $SECRET_ID",
            r#"    env:
    - {name: PROJECT_ID, valueFrom: {configMapKeyRef: {name: projectid, key: project.id}}}
    - {name: SECRET_ID, valueFrom: {secretKeyRef: {name: secretid, key: secret.id}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: GREETING, value: "pod $(POD_IP)"}
    volumeMounts:
    - {name: shared, mountPath: /shared}
"#
        )
    );
    let out = node.run_yaml("web", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/web running"));
    let ip = node.pod_ip("web");
    // Two containers, one network namespace: the client reaches the server on localhost.
    assert_eq!(wait_http(&node, "web", "client", "http://127.0.0.1:8080/"), "hello-docker secret-123");
    assert_eq!(
        node.exec("web", "server", &["sh", "-c", "echo $POD_IP; echo $GREETING"]).trim(),
        format!("{ip}\npod {ip}")
    );
    assert_eq!(node.exec("web", "client", &["hostname"]).trim(), "web");
    assert!(node.exec("web", "client", &["cat", "/etc/hosts"]).contains(&format!("{ip}\tweb")));
    assert_eq!(node.exec("web", "client", &["cat", "/etc/resolv.conf"]).trim(), "nameserver 10.96.0.10");
    // Volumes: configMap and secret files (secret 0600 on tmpfs), a shared emptyDir.
    assert_eq!(node.exec("web", "client", &["cat", "/config/project.id"]), "hello-docker");
    assert_eq!(node.exec("web", "client", &["stat", "-L", "-c", "%a", "/secret/secret.id"]).trim(), "600");
    assert!(node.exec("web", "client", &["sh", "-c", "grep ' /secret ' /proc/mounts"]).contains("tmpfs"));
    node.exec("web", "server", &["sh", "-c", "echo from-server > /shared/x"]);
    assert_eq!(node.exec("web", "client", &["cat", "/shared/x"]).trim(), "from-server");
    // ps lists both containers with the pod IP.
    let ps = node.ok("ps", &[], &[]);
    assert!(
        ps.lines().filter(|l| l.starts_with("web ") && l.contains(&ip) && l.contains("Running")).count() == 2,
        "{ps}"
    );
    node.ok("rm", &["web"], &[]);
    node.assert_pod_gone("web");
}

#[test]
fn pods_reach_each_other_and_a_host_port_from_outside() {
    let node = PodNode::new(42);
    let pod_a = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n{}",
        server("web", 8080, "from-a", "    ports:\n    - {containerPort: 8080, hostPort: 18442}\n")
    );
    let pod_b = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n"
    );
    assert!(node.run_yaml("a", &pod_a, false).status.success());
    assert!(node.run_yaml("b", &pod_b, false).status.success());
    let ip_a = node.pod_ip("a");
    assert_ne!(ip_a, node.pod_ip("b"));
    assert_eq!(wait_http(&node, "b", "c", &format!("http://{ip_a}:8080/")), "from-a");
    // A client in a separate namespace (the test's LAN peer) reaches the hostPort on the node IP.
    let addr = SocketAddr::from((node.net.lan_node_ip(), 18442));
    let mut body = String::new();
    let reached = wait_for(Duration::from_secs(10), || {
        body = rkube::network::netns::run_in_netns(Some(&node.net.ext_ns), || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .unwrap()
        .unwrap_or_default();
        body.contains("from-a")
    });
    assert!(reached, "hostPort answer: {body:?}");
    // A second pod asking for the same hostPort is refused with one line and leaves nothing.
    let clash = pod_a.replace("name: a}", "name: clash}");
    let out = node.run_yaml("clash", &clash, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("18442"), "{err}");
    node.assert_pod_gone("clash");
    node.ok("rm", &["a", "b"], &[]);
    node.assert_pod_gone("a");
    node.assert_pod_gone("b");
}

#[test]
fn init_containers_run_first_in_order() {
    let node = PodNode::new(43);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: init}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
  - {{name: one, image: {IMAGE}, imagePullPolicy: Never, command: [sh, -c, "echo one >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: two, image: {IMAGE}, imagePullPolicy: Never, command: [sh, -c, "sleep 0.3; echo two >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  containers:
  - {{name: main, image: {IMAGE}, imagePullPolicy: Never, command: [sh, -c, "echo main >> /work/order; echo main-started; exec sleep 3600"], volumeMounts: [{{name: work, mountPath: /work}}]}}
"#
    );
    assert!(node.run_yaml("init", &yaml, false).status.success());
    let mut order = String::new();
    wait_for(Duration::from_secs(5), || {
        order = node.exec("init", "main", &["cat", "/work/order"]);
        order.lines().count() == 3
    });
    assert_eq!(order, "one\ntwo\nmain\n");
    assert!(node.ok("logs", &["init", "-c", "main"], &[]).contains("main-started"));
    // With restartPolicy Never a failing init container fails the start and leaves nothing.
    let bad = yaml
        .replace("name: init}", "name: badinit}")
        .replace("echo one >> /work/order", "exit 3")
        .replace("spec:\n", "spec:\n  restartPolicy: Never\n");
    let out = node.run_yaml("badinit", &bad, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one exited with code 3"), "{err}");
    node.assert_pod_gone("badinit");
    node.ok("rm", &["init"], &[]);
    node.assert_pod_gone("init");
}

#[test]
fn memory_limit_is_enforced() {
    let node = PodNode::new(44);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: mem}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: hog
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "sleep 0.5; tail /dev/zero"]
    resources: {{limits: {{memory: 16Mi}}}}
  - name: idle
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    resources: {{limits: {{memory: 16Mi, cpu: 500m}}}}
"#
    );
    let out = node.run_yaml("mem", &yaml, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let limit = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&node.cgroup_parent)
        .join("pod-mem/idle/memory.limit_in_bytes");
    assert_eq!(std::fs::read_to_string(&limit).unwrap().trim(), "16777216");
    let mut state = serde_json::Value::Null;
    let ended = wait_for(Duration::from_secs(20), || {
        state = node.inspect("mem");
        state["containers"][0]["last_exit"].is_object()
    });
    assert!(ended, "hog never ended: {state}");
    let exit = &state["containers"][0]["last_exit"];
    assert!(exit["oom_killed"] == true || exit["code"] == 137, "{exit}");
    assert_eq!(state["containers"][0]["done"], true, "restartPolicy Never: not restarted");
    node.kill_agent(nix::sys::signal::Signal::SIGTERM);
    node.ok("rm", &["mem"], &[]);
    node.assert_pod_gone("mem");
}

#[test]
fn failed_start_and_bad_manifests_leave_nothing() {
    let node = PodNode::new(45);
    let good = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{key: v}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    env: [{{name: A, valueFrom: {{configMapKeyRef: {{name: cfg, key: key}}}}}}]
"#
    );
    let cases = [
        (good.replace("command:", "commandd:"), "unknown field"),
        (good.replace("name: p}", "name: Bad_Name}"), "metadata.name"),
        (good.replace("image: busybox:test", "image: nothere:1"), "not on this node"),
        (good.replace("key: key}", "key: missing}"), "key \"missing\" not found"),
        // Starts the network and a first container, then fails on the second: all undone.
        (
            good.replace("command: [sleep, \"3600\"]", "command: [sleep, \"3600\"]\n  - {name: d, image: busybox:test, imagePullPolicy: Never, command: [/no/such/program]}"),
            "",
        ),
    ];
    for (i, (yaml, expect)) in cases.iter().enumerate() {
        let out = node.run_yaml(&format!("bad{i}"), yaml, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "case {i}: {err}");
        assert!(err.contains(expect), "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
        node.assert_pod_gone("p");
        node.assert_pod_gone("Bad_Name");
    }
}

/// `rkubelet run` of a pod whose start enters no container others can see (no postStart exec
/// hook, no shared pid namespace) skips the sealing re-exec (CVE-2019-5736): each init execs
/// through a read-only clone of `rkube-monitor`. A container whose program is `/proc/self/exe`
/// then runs that clone (in its pause mode), and its exe link cannot be opened for writing.
#[test]
fn a_pod_run_without_re_exec_exposes_only_a_read_only_monitor() {
    use std::os::unix::fs::MetadataExt;
    let node = PodNode::new(55);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: exe}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [/proc/self/exe, pause]}}
"#
    );
    let out = node.run_yaml("exe", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = node.inspect("exe")["containers"][0]["id"].as_str().unwrap().to_string();
    let record = std::fs::read(node.run_dir().join("runtime").join(&id).join("state.json")).unwrap();
    let pid = serde_json::from_slice::<serde_json::Value>(&record).unwrap()["pid"].as_i64().unwrap();
    let monitor = std::path::Path::new(env!("CARGO_BIN_EXE_rkubelet")).with_file_name("rkube-monitor");
    let inode = |path: &std::path::Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).unwrap();
    let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    assert_eq!(inode(&exe), inode(&monitor), "the container does not run the monitor clone");
    let open = std::fs::OpenOptions::new().write(true).truncate(true).open(&exe);
    assert_eq!(open.unwrap_err().raw_os_error(), Some(libc::EROFS));
    node.ok("rm", &["exe", "--time=0"], &[]);
    node.assert_pod_gone("exe");
}

/// `rkubelet run -` reads the manifest from stdin; the sealing re-exec, which would lose what was
/// read, happens before.
#[test]
fn a_manifest_can_come_from_stdin() {
    let node = PodNode::new(56);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: piped}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3600"]}}
"#
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(["run", "-", "--no-agent"])
        .args(node.flags())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pod/piped running"));
    assert_eq!(node.inspect("piped")["phase"], "Running");
    node.ok("rm", &["piped", "--time=0"], &[]);
    node.assert_pod_gone("piped");
}

/// A pod CIDR that another link of the node already uses (podman's `cni-podman0` on the same
/// range) is refused with one line naming that link, before anything is created: no pod, no
/// bridge, no IP, no netns, no cgroup, no agent.
#[test]
fn a_pod_cidr_another_bridge_uses_is_refused_and_nothing_is_created() {
    let node = PodNode::new(57);
    let ns = node.net.node_ns.clone();
    link::with_netlink(Some(&ns), |h| async move {
        link::ensure_bridge(&h, "cni-podman0", "10.77.57.1".parse().unwrap(), 16).await.map(drop)
    })
    .expect("podman-like bridge in the node namespace");
    let yaml = pod::pod_yaml("clash", "", "    command: [sleep, \"60\"]");
    let out = node.run_yaml("clash", &yaml, true);
    assert!(!out.status.success(), "run succeeded on a taken CIDR");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("pod CIDR 10.77.57.0/24 overlaps 10.77.0.0/16 on cni-podman0"),
        "names the CIDR and the other link: {stderr}"
    );
    node.assert_pod_gone("clash");
    assert!(!node.net.link_exists("rkt57"), "bridge created");
    assert!(!node.root().join("network").exists(), "network state created");
    assert!(!node.run_dir().join("netns").exists(), "netns dir created");
    assert_eq!(node.agent_pid(), None, "an agent was started");
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory").join(&node.cgroup_parent);
    assert!(!cgroup.exists(), "cgroup parent created");
}

/// A log without its terminal colours.
fn without_colours(bytes: &[u8]) -> String {
    let mut log = String::new();
    let mut in_escape = false;
    for ch in String::from_utf8_lossy(bytes).chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (false, _) => log.push(ch),
            _ => {}
        }
    }
    log
}

/// A creator with other threads (a pod start wiring its network, the agent probing) starts each
/// monitor as a fresh exec of rkubelet (the forked child only closes fds and execs), so no lock
/// another thread held at the fork can stall it. Whether a thread is still alive at a given fork
/// is a race, so `RKUBE_MONITOR_EXEC=1` takes that path for every container here: the pod, its
/// exec and its removal all work through exec'd monitors.
#[test]
fn a_threaded_creator_execs_its_monitors() {
    let node = PodNode::new(68);
    let yaml = pod::pod_yaml("execd", "", "    command: [sleep, \"3600\"]");
    let path = node.dir.path().join("execd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = node.rk_env(
        "run",
        &[path.to_str().unwrap(), "--no-agent", "--log", "rkube::runtime=debug"],
        &[],
        &[("RKUBE_MONITOR_EXEC", "1")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = without_colours(&out.stderr);
    assert!(log.contains("monitor started exec=true"), "{log}");
    assert!(!log.contains("exec=false"), "{log}");
    // An exec helper started the same way runs the process in the container, exit code and all.
    let force = [("RKUBE_MONITOR_EXEC", "1")];
    let out = node.rk_env(
        "exec",
        &["execd", "-c", "c", "--log", "rkube::runtime=debug"],
        &["sh", "-c", "cat /etc/hostname; exit 7"],
        &force,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "execd");
    assert!(without_colours(&out.stderr).contains("exec helper started exec=true"));
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    node.ok("rm", &["execd", "--time=0"], &[]);
    node.assert_pod_gone("execd");
}
