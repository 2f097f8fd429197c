//! Root integration tests of CrashLoopBackOff beyond the basics in pod_agent.rs: failed init
//! containers are retried with back-off before the app containers start, and the back-off of a
//! crash-looping container survives a `kill -9` of the agent (it is kept in the pod's state).

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::time::{Duration, Instant};

use pod::{IMAGE, PodNode, wait_for};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn failed_init_container_is_retried_with_backoff_before_app_containers_start() {
    let node = PodNode::new(51);
    // The init container fails on its first two runs and succeeds on the third.
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: retry}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
  - name: flaky
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "n=$(cat /work/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /work/n; [ $n -ge 3 ]"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "echo saw $(cat /work/n); exec sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"#
    );
    let out = node.run_yaml("retry", &yaml, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("pending") && stdout.contains("flaky exited with code 1"), "{stdout}");
    assert_eq!(node.inspect("retry")["phase"], "Pending");
    let _agent = node.spawn_agent(1000);
    let init_restarts = || node.inspect("retry")["init_containers"][0]["restarts"].as_u64().unwrap_or(0);
    assert!(wait_for(Duration::from_secs(10), || init_restarts() >= 1), "init container not retried");
    let first = Instant::now();
    assert!(wait_for(Duration::from_secs(10), || init_restarts() >= 2), "no second retry");
    let gap = first.elapsed();
    // The first retry is immediate, the second waits out the back-off (2 s after 1 s doubled).
    assert!(gap >= Duration::from_millis(1500), "second retry after {gap:?}: no back-off");
    assert!(wait_for(Duration::from_secs(10), || node.inspect("retry")["phase"] == "Running"), "never ran");
    let st = node.inspect("retry");
    assert_eq!(st["init_containers"][0]["restarts"], 2);
    assert_eq!(st["init_containers"][0]["done"], true);
    assert!(wait_for(Duration::from_secs(5), || node
        .ok("logs", &["retry", "-c", "main"], &[])
        .contains("saw")));
    // The app container started only after the third (successful) init run.
    assert_eq!(node.ok("logs", &["retry", "-c", "main"], &[]).trim(), "saw 3");
    node.ok("rm", &["retry"], &[]);
    node.assert_pod_gone("retry");
}

#[test]
fn backoff_survives_an_agent_killed_with_sigkill() {
    let node = PodNode::new(52);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: crashy}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "exit 3"]
"#
    );
    assert!(node.run_yaml("crashy", &yaml, false).status.success());
    let mut agent = node.spawn_agent(1000);
    // Crashes: restart now, after 2 s, then the third crash waits 4 s.
    let record = || node.inspect("crashy")["containers"][0].clone();
    assert!(
        wait_for(Duration::from_secs(15), || {
            let r = record();
            r["restarts"] == 2 && r["backoff"]["delay_ms"] == 4000 && r["restart_at_ms"].is_u64()
        }),
        "did not reach the third crash: {}",
        record()
    );
    agent.kill();
    let restart_at = record()["restart_at_ms"].as_u64().unwrap();
    let _agent = node.spawn_agent(1000);
    // The new agent keeps the count and the delay: no restart before the persisted deadline.
    while now_ms() + 300 < restart_at {
        assert_eq!(record()["restarts"], 2, "restarted before the back-off deadline");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        wait_for(Duration::from_secs(5), || record()["restarts"] == 3),
        "not restarted after the back-off"
    );
    assert!(
        wait_for(Duration::from_secs(5), || record()["backoff"]["delay_ms"] == 8000),
        "the delay went on doubling: {}",
        record()
    );
    node.ok("rm", &["crashy"], &[]);
    node.assert_pod_gone("crashy");
}
