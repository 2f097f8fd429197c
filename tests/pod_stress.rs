//! Root stress test: 500 pod starts and removals on one node, 8 at a time, while the node agent
//! runs every pod's exec readiness probe and TCP liveness probe (forks in a threaded agent) and
//! each start wires its network on a thread while it forks its containers' monitors. Nothing may
//! hang (every command has a deadline) and nothing may leak.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pod::PodNode;

const PODS: usize = 500;
const WORKERS: usize = 8;

fn manifest(name: &str) -> String {
    pod::pod_yaml(
        name,
        "",
        "    command: [httpd, -f, -p, \"8080\"]\n    readinessProbe: {exec: {command: [\"true\"]}, periodSeconds: 1}\n    \
         livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}",
    )
}

#[test]
fn five_hundred_pod_starts_and_stops_with_probes_never_hang_or_leak() {
    let node = PodNode::new(66);
    // The first pod starts the agent, which then probes every pod the workers start.
    let out = node.run_yaml("first", &manifest("first"), true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = node.agent_pid().expect("agent started");
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= PODS {
                        break;
                    }
                    let name = format!("s{i}");
                    let out = node.run_yaml(&name, &manifest(&name), true);
                    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
                    // Long enough for the agent to probe some of them.
                    std::thread::sleep(Duration::from_millis((i % 5) as u64 * 100));
                    node.ok("rm", &[&name, "--time=0"], &[]);
                }
            });
        }
    });
    eprintln!("{PODS} pods started and removed in {:?}", started.elapsed());
    // The agent kept up: it is alive and saw the first pod ready (its exec probe ran).
    assert!(std::path::Path::new(&format!("/proc/{agent}")).exists(), "the agent died");
    let ready = pod::wait_for(Duration::from_secs(10), || {
        node.inspect("first")["containers"][0]["ready"].as_bool() == Some(true)
    });
    assert!(ready, "the agent never ran the first pod's readiness probe");
    node.ok("rm", &["first", "--time=0"], &[]);
    for i in 0..PODS {
        node.assert_pod_gone(&format!("s{i}"));
    }
    node.assert_pod_gone("first");
    let left: Vec<_> =
        std::fs::read_dir(node.root().join("pods")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "pods left: {left:?}");
}
