//! Root integration test of `shareProcessNamespace`: a pause process is PID 1 of the pod's pid
//! namespace, the pod's containers see each other's processes, a dead pause gets the pod a new
//! sandbox (or fails it under restartPolicy Never), and `rm` leaves nothing.

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
---
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  terminationGracePeriodSeconds: 0
  shareProcessNamespace: true
  restartPolicy: Never
  containers:
  - {{name: n, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3604"]}}
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

    // An agent re-adopts the pod and leaves the pause alone. If the pause dies, its namespace and
    // containers die with it; the pod gets a new pause (never joining whatever reuses the pid) and
    // its containers start again in the new namespace, each counting a restart.
    let _agent = node.spawn_agent(1000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.inspect("shared")["phase"], "Running");
    assert!(std::path::Path::new(&format!("/proc/{pause}")).exists() && !pod::is_zombie(pause));
    let kill = |pid: i32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap()
    };
    kill(pause);
    let recreated = wait_for(Duration::from_secs(10), || {
        let st = node.inspect("shared");
        st["pause"]["pid"].as_i64() != Some(pause.into())
            && st["containers"][0]["restarts"] == 1
            && st["containers"][1]["restarts"] == 1
    });
    let st = node.inspect("shared");
    assert!(recreated, "no new sandbox: {st}");
    assert_eq!(st["phase"], "Running", "{st}");
    assert_eq!(st["containers"][0]["last_exit"]["code"], 137, "{st}");
    let ps = node.exec("shared", "a", &["ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 3601") && ps.contains("sleep 3602"), "{ps}");
    assert!(node.exec("shared", "b", &["cat", "/proc/1/cmdline"]).contains("pause"));
    let new_pause = st["pause"]["pid"].as_i64().unwrap() as i32;

    // Under restartPolicy Never the pod fails instead.
    kill(node.inspect("never")["pause"]["pid"].as_i64().unwrap() as i32);
    assert!(wait_for(Duration::from_secs(10), || node.inspect("never")["phase"] == "Failed"), "not Failed");
    assert_eq!(node.inspect("never")["containers"][0]["restarts"], 0);

    node.ok("rm", &["shared", "private", "never"], &[]);
    for name in ["shared", "private", "never"] {
        node.assert_pod_gone(name);
    }
    for pid in [pause, new_pause] {
        assert!(
            wait_for(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || pod::is_zombie(pid)),
            "pause process {pid} left"
        );
    }
}
