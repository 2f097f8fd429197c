//! Root integration tests of container lifecycle: postStart/preStop hooks, SIGTERM within the grace
//! period, httpGet readiness and tcpSocket liveness probes run from the pod's network namespace,
//! and subPath mounts that cannot be pointed at the host through a planted symlink.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pod::{IMAGE, PodNode, wait_for};

#[test]
fn hooks_probes_and_graceful_stop() {
    let node = PodNode::new(48);
    let out = node.dir.path().join("out");
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: life}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: {out}, type: DirectoryOrCreate}}}}]
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.1; done"]
    ports: [{{name: web, containerPort: 8080}}]
    volumeMounts: [{{name: out, mountPath: /out}}]
    startupProbe: {{exec: {{command: [test, -e, /www/index.html]}}, periodSeconds: 1}}
    readinessProbe: {{httpGet: {{path: /, port: web}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 1}}
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo poststart >> /out/log"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo prestop >> /out/log"]}}}}
"#,
        out = out.display()
    );
    let run = node.run_yaml("life", &yaml, true);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ready = wait_for(Duration::from_secs(10), || node.inspect("life")["containers"][0]["ready"] == true);
    assert!(ready, "never ready: {}", node.inspect("life"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(node.inspect("life")["containers"][0]["restarts"], 0, "tcp liveness probe failed");
    node.kill_agent(Signal::SIGTERM);
    let started = Instant::now();
    node.ok("stop", &["life"], &[]);
    assert!(started.elapsed() < Duration::from_secs(10), "stop waited for the whole grace period");
    assert_eq!(std::fs::read_to_string(out.join("log")).unwrap(), "poststart\nprestop\nterm\n");
    let st = node.inspect("life");
    assert_eq!(st["phase"], "Succeeded", "{st}");
    assert_eq!(st["containers"][0]["last_exit"]["code"], 0);
    node.ok("rm", &["life"], &[]);
    node.assert_pod_gone("life");
}

#[test]
fn sub_path_symlinks_cannot_reach_the_host() {
    let node = PodNode::new(49);
    let vol = node.dir.path().join("vol");
    std::fs::create_dir_all(vol.join("data")).unwrap();
    std::fs::write(vol.join("data/file"), "inside").unwrap();
    std::os::unix::fs::symlink("/etc", vol.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", vol.join("data/up")).unwrap();
    let yaml = |sub: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: sub}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: v, hostPath: {{path: {vol}}}}}]
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    volumeMounts: [{{name: v, mountPath: /mnt/x, subPath: {sub}}}]
"#,
            vol = vol.display()
        )
    };
    // A plain subPath works.
    assert!(node.run_yaml("sub", &yaml("data"), false).status.success());
    assert_eq!(node.exec("sub", "c", &["cat", "/mnt/x/file"]), "inside");
    node.ok("rm", &["sub"], &[]);
    // Symlinks are resolved inside the volume: never the host's /etc.
    for sub in ["evil", "data/up"] {
        let out = node.run_yaml("sub", &yaml(sub), false);
        if out.status.success() {
            let seen =
                node.rk("exec", &["sub", "-c", "c"], &["sh", "-c", "cat /mnt/x/passwd /mnt/x 2>/dev/null"]);
            assert!(!String::from_utf8_lossy(&seen.stdout).contains("root:x:0:0"), "{sub} exposed the host");
            node.ok("rm", &["sub"], &[]);
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(err.contains("subPath"), "{err}");
        }
        node.assert_pod_gone("sub");
    }
    assert!(std::fs::symlink_metadata("/etc/passwd").unwrap().is_file());
}
