//! Root integration tests of the node agent: restart policy with CrashLoopBackOff after failing
//! liveness probes, and re-adoption of running pods by a new agent after `kill -9`.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pod::{IMAGE, PodNode, wait_for};

fn restarts(node: &PodNode, pod: &str, i: usize) -> u64 {
    node.inspect(pod)["containers"][i]["restarts"].as_u64().unwrap_or(0)
}

#[test]
fn failing_liveness_probe_restarts_with_backoff() {
    let node = PodNode::new(46);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    livenessProbe:
      exec: {{command: [test, -e, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 1
"#
    );
    let out = node.run_yaml("live", &yaml, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.agent_pid().is_some(), "run started the agent");
    assert!(
        wait_for(Duration::from_secs(10), || restarts(&node, "live", 0) >= 1),
        "no restart after liveness failure"
    );
    let first = Instant::now();
    assert!(wait_for(Duration::from_secs(30), || restarts(&node, "live", 0) >= 2), "no second restart");
    let gap = first.elapsed();
    // The second crash waits out the back-off (10 s), the first restart did not.
    assert!(gap >= Duration::from_secs(9), "second restart after {gap:?}: no back-off");
    let ps = node.ok("ps", &[], &[]);
    assert!(ps.lines().any(|l| l.starts_with("live ") && l.contains(" 2 ")), "{ps}");
    node.kill_agent(Signal::SIGTERM);
    node.ok("rm", &["live"], &[]);
    node.assert_pod_gone("live");
}

#[test]
fn killed_agent_leaves_pods_running_and_a_new_agent_adopts_them() {
    let node = PodNode::new(47);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: keep}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: steady
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
  - name: quitter
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "while [ ! -e /tmp/quit ]; do sleep 0.1; done; exit 7"]
"#
    );
    assert!(node.run_yaml("keep", &yaml, true).status.success());
    let ip = node.pod_ip("keep");
    node.kill_agent(Signal::SIGKILL);
    assert!(!rkube::kubelet::agent::is_running(&node.config()), "agent still holds the lock");
    // Without an agent the containers keep running.
    std::thread::sleep(Duration::from_millis(500));
    let ps = node.ok("ps", &[], &[]);
    assert_eq!(ps.lines().filter(|l| l.starts_with("keep ") && l.contains("Running")).count(), 2, "{ps}");
    assert_eq!(node.exec("keep", "steady", &["echo", "alive"]).trim(), "alive");
    // A new agent adopts the pod from disk and enforces its restart policy.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .arg("serve")
        .args(node.flags())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = ChildGuard(&mut agent);
    assert!(wait_for(Duration::from_secs(5), || node.agent_pid().is_some_and(|p| p as u32 == _guard.0.id())));
    node.exec("keep", "quitter", &["touch", "/tmp/quit"]);
    assert!(wait_for(Duration::from_secs(10), || restarts(&node, "keep", 1) >= 1), "quitter not restarted");
    let st = node.inspect("keep");
    assert_eq!(st["containers"][1]["last_exit"]["code"], 7);
    assert_eq!(st["containers"][0]["restarts"], 0, "steady untouched");
    assert_eq!(st["ip"], ip.as_str());
    node.ok("rm", &["keep"], &[]);
    node.assert_pod_gone("keep");
}

struct ChildGuard<'a>(&'a mut std::process::Child);

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An exec liveness probe that hangs is bounded by its timeoutSeconds, as in the kubelet: it
/// counts as a failure within the timeout (the container restarts long before the command would
/// end), and the node's other pods keep being probed meanwhile.
#[test]
fn a_hung_exec_probe_times_out_and_fails() {
    let node = PodNode::new(70);
    let yaml = |name: &str, probe: &str| {
        pod::pod_yaml(name, "", &format!("    command: [sleep, \"3600\"]\n{probe}"))
    };
    let hung = "    livenessProbe: {exec: {command: [sleep, \"60\"]}, timeoutSeconds: 1, periodSeconds: 1, failureThreshold: 1}";
    let out = node.run_yaml("hung", &yaml("hung", hung), true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ready = "    readinessProbe: {exec: {command: [\"true\"]}, periodSeconds: 1}";
    let out = node.run_yaml("other", &yaml("other", ready), true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_for(Duration::from_secs(15), || restarts(&node, "hung", 0) >= 1),
        "the hung probe never failed: {}",
        node.inspect("hung")
    );
    assert!(
        wait_for(Duration::from_secs(10), || node.inspect("other")["containers"][0]["ready"].as_bool()
            == Some(true)),
        "the other pod's probe stalled"
    );
    node.ok("rm", &["hung", "--time=0"], &[]);
    node.ok("rm", &["other", "--time=0"], &[]);
}
