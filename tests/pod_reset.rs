//! Root integration test of `rkubelet reset`: refused while pods exist, `--force` removes the pods,
//! the agent, the bridge, the node NAT chains, the IPAM state and the cgroup parent; idempotent.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use pod::{IMAGE, PodNode};

#[test]
fn reset_refuses_with_pods_and_force_leaves_nothing_of_the_node() {
    let node = PodNode::new(53);
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
    ports: [{{containerPort: 80, hostPort: 18053}}]
"#
    );
    let out = node.run_yaml("web", &yaml, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.agent_pid().is_some(), "run started the agent");
    assert!(node.net.link_exists("rkt53") && !node.net.chains("RKUBE").is_empty());

    let refused = node.rk("reset", &[], &[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("1 pod(s) still on this node (web)") && err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(node.exec("web", "c", &["echo", "alive"]).trim(), "alive", "a refused reset changed nothing");
    assert!(node.agent_pid().is_some());

    node.ok("reset", &["--force", "--time=0"], &[]);
    node.assert_pod_gone("web");
    assert!(node.agent_pid().is_none(), "agent pid file left");
    assert!(!rkube::kubelet::agent::is_running(&node.config()), "agent still running");
    assert!(!node.net.link_exists("rkt53"), "bridge left");
    assert!(node.net.chains("RKUBE").is_empty(), "chains left: {:?}", node.net.chains("RKUBE"));
    let rules = node.net.saved_rules();
    assert!(!rules.contains("RKUBE"), "rules left:\n{rules}");
    for gone in [node.root().join("network"), node.run_dir().join("netns"), node.run_dir().join("ipc")] {
        assert!(!gone.exists(), "{} left", gone.display());
    }
    for d in node.cgroup_dirs() {
        assert!(!d.exists(), "cgroup parent {} left", d.display());
    }
    // Nothing left to do: a second reset succeeds.
    node.ok("reset", &[], &[]);
}
