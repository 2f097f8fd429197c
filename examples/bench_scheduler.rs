//! Scheduler throughput: `bench_scheduler [--nodes N] [--pods M]`; prints pods/second.
use std::time::Duration;

use anyhow::Context;
use rkube::master::scheduler::bench::run_bench;

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => {
            args.get(i + 1).context("missing value")?.parse().with_context(|| format!("bad value for {name}"))
        }
        None => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes = arg("--nodes", 5000)?;
    let pods = arg("--pods", 10000)?;
    let report = run_bench(nodes, pods, Duration::from_secs(600)).await?;
    println!(
        "rkube scheduler: {} pods on {} nodes in {:.2}s = {:.0} pods/s (avg {:.0} nodes filtered per pod)",
        report.pods,
        report.nodes,
        report.elapsed.as_secs_f64(),
        report.pods_per_second,
        report.avg_nodes_examined
    );
    println!(
        "scheduler_perf SchedulingBasic/5000Nodes_10000Pods CI floor: 270 pods/s -> ratio {:.1}x",
        report.pods_per_second / 270.0
    );
    Ok(())
}
