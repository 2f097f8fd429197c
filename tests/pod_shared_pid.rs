//! Root integration test of `shareProcessNamespace`: a pause process is PID 1 of the pod's pid
//! namespace, the pod's containers see each other's processes, a dead pause fails the pod, and
//! `rm` leaves nothing.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::time::Duration;

use pod::{IMAGE, PodNode, wait_for};

#[test]
fn containers_of_a_pod_share_one_pid_namespace_under_a_pause_process() {
    let node = PodNode::new(54);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: shared}}
spec:
  terminationGracePeriodSeconds: 0
  shareProcessNamespace: true
  containers:
  - {{name: a, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3601"]}}
  - {{name: b, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3602"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3603"]}}
"#
    );
    let out = node.run_yaml("shared", &yaml, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = node.inspect("shared");
    let pause = st["pause"]["pid"].as_i64().expect("pause pid recorded") as i32;
    let exe = std::fs::read_link(format!("/proc/{pause}/exe")).unwrap();
    assert_eq!(exe.file_name().unwrap(), "rkube-monitor");
    // Each container sees both sleeps, and PID 1 is the pause process.
    for c in ["a", "b"] {
        let ps = node.exec("shared", c, &["ps", "-o", "pid,args"]);
        assert!(ps.contains("sleep 3601") && ps.contains("sleep 3602"), "{c}: {ps}");
        assert!(!ps.contains("sleep 3603"), "{c} sees another pod: {ps}");
        let one = node.exec("shared", c, &["cat", "/proc/1/cmdline"]);
        assert!(one.contains("pause"), "{c}: pid 1 is {one:?}");
    }
    // A pod without the flag keeps its own namespace: its process is PID 1 there.
    let ps = node.exec("private", "c", &["ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 3601"), "{ps}");
    assert!(node.exec("private", "c", &["cat", "/proc/1/cmdline"]).starts_with("sleep"));

    // An agent re-adopts the pod and leaves the pause alone; if the pause dies, its namespace and
    // containers die with it and the pod fails rather than joining whatever reuses the pid.
    let _agent = node.spawn_agent(1000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.inspect("shared")["phase"], "Running");
    assert!(std::path::Path::new(&format!("/proc/{pause}")).exists() && !pod::is_zombie(pause));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || node.inspect("shared")["phase"] == "Failed"),
        "pod not Failed"
    );
    let st = node.inspect("shared");
    assert_eq!(st["containers"][0]["restarts"], 0, "{st}");
    assert_eq!(st["containers"][1]["restarts"], 0, "{st}");

    node.ok("rm", &["shared", "private"], &[]);
    node.assert_pod_gone("shared");
    node.assert_pod_gone("private");
    assert!(
        wait_for(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{pause}")).exists()
            || pod::is_zombie(pause)),
        "pause process {pause} left"
    );
}
