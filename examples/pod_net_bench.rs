//! Times PodNetwork setup and teardown of N pods inside a scratch node namespace.
//! Used by hack/bench-net.sh: `pod_net_bench <pods>`; prints `setup_ms_per_pod X` and
//! `teardown_ms_per_pod Y`. Everything lives in namespaces and a temp dir it removes.

use std::time::Instant;

use rkube::network::netns::NetnsStore;
use rkube::network::{PodNetwork, PodNetworkConfig};

fn main() -> anyhow::Result<()> {
    let pods: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let nodes = NetnsStore::new(dir.path().join("nodes"));
    let node = nodes.create("node")?;
    let mut config = PodNetworkConfig::new("10.77.250.0/24".parse()?);
    config.bridge = "rktbench".into();
    config.netns_dir = dir.path().join("pods");
    config.state_dir = dir.path().join("state");
    config.node_netns = Some(node);
    let net = PodNetwork::new(config)?;

    let run = || -> anyhow::Result<(f64, f64)> {
        let start = Instant::now();
        for i in 0..pods {
            net.setup(&format!("bench-{i}"), &format!("bench-{i}"), &[])?;
        }
        let setup = start.elapsed().as_secs_f64() * 1000.0 / f64::from(pods);
        let start = Instant::now();
        for i in 0..pods {
            net.teardown(&format!("bench-{i}"))?;
        }
        Ok((setup, start.elapsed().as_secs_f64() * 1000.0 / f64::from(pods)))
    };
    let result = run();
    for record in net.records().unwrap_or_default() {
        let _ = net.teardown(&record.pod_id);
    }
    let _ = net.reset_node();
    let _ = nodes.delete("node");
    let (setup, teardown) = result?;
    println!("setup_ms_per_pod {setup:.2}");
    println!("teardown_ms_per_pod {teardown:.2}");
    Ok(())
}
