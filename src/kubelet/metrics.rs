//! The node's Prometheus metrics (the kubelet's names), recorded by the process that runs the
//! node's pods and serves its API (`rkubelet join`/`serve-api`), encoded in the Prometheus text
//! format 0.0.4 for the kubelet server's `/metrics`.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics` answers.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The kubelet's pod start buckets (0.5 s … 20 min).
const POD_START_BUCKETS: [f64; 16] =
    [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0];
/// Runtime operations: 5 ms … 10 s (the kubelet's defaults are Prometheus' default buckets).
const OPERATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Image pulls: 0.5 s … 10 min.
const PULL_BUCKETS: [f64; 10] = [0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// `operation_type` of the runtime operation metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation_type: &'static str,
}

/// Outcome of an image pull.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullResult {
    pub result: &'static str,
}

/// Every metric the node records.
pub struct Metrics {
    registry: Registry,
    pub pod_start: Histogram,
    pub operations: Family<Operation, Counter>,
    pub operation_errors: Family<Operation, Counter>,
    pub operation_duration: Family<Operation, Histogram, fn() -> Histogram>,
    pub image_pulls: Family<PullResult, Counter>,
    pub image_pull_duration: Histogram,
    pub running_pods: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            pod_start: Histogram::new(POD_START_BUCKETS),
            operations: Family::default(),
            operation_errors: Family::default(),
            operation_duration: Family::new_with_constructor(|| Histogram::new(OPERATION_BUCKETS)),
            image_pulls: Family::default(),
            image_pull_duration: Histogram::new(PULL_BUCKETS),
            running_pods: Gauge::default(),
        };
        let mut reg = Registry::default();
        reg.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the node taking a pod up to its containers running (images pulled)",
            m.pod_start.clone(),
        );
        reg.register(
            "kubelet_runtime_operations",
            "Cumulative number of runtime operations by operation type",
            m.operations.clone(),
        );
        reg.register(
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type",
            m.operation_errors.clone(),
        );
        reg.register(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations, by operation type",
            m.operation_duration.clone(),
        );
        reg.register(
            "kubelet_image_pulls",
            "Image pulls by result (success, failure)",
            m.image_pulls.clone(),
        );
        reg.register(
            "kubelet_image_pull_duration_seconds",
            "Duration in seconds of successful image pulls",
            m.image_pull_duration.clone(),
        );
        reg.register(
            "kubelet_running_pods",
            "Number of pods this node runs (pods with a state on disk)",
            m.running_pods.clone(),
        );
        Metrics { registry: reg, ..m }
    }

    /// The registry in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide node metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Runs one runtime operation (`create_container`, `start_container`, …) and records its count,
/// duration and failure.
pub fn runtime_op<T, E>(operation_type: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let started = Instant::now();
    let r = f();
    record_op(operation_type, started.elapsed(), r.is_ok());
    r
}

fn record_op(operation_type: &'static str, took: Duration, ok: bool) {
    let m = global();
    let op = Operation { operation_type };
    m.operations.get_or_create(&op).inc();
    m.operation_duration.get_or_create(&op).observe(took.as_secs_f64());
    if !ok {
        m.operation_errors.get_or_create(&op).inc();
    }
}

/// Records an image pull.
pub fn image_pull(took: Duration, ok: bool) {
    let m = global();
    m.image_pulls.get_or_create(&PullResult { result: if ok { "success" } else { "failure" } }).inc();
    if ok {
        m.image_pull_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_counted_with_errors() {
        let before = global().operations.get_or_create(&Operation { operation_type: "unit_op" }).get();
        let _ = runtime_op("unit_op", || Ok::<_, ()>(()));
        let _ = runtime_op("unit_op", || Err::<(), _>(()));
        let op = Operation { operation_type: "unit_op" };
        assert_eq!(global().operations.get_or_create(&op).get(), before + 2);
        assert_eq!(global().operation_errors.get_or_create(&op).get(), 1);
        let text = global().encode();
        assert!(text.contains(r#"kubelet_runtime_operations_total{operation_type="unit_op"} 2"#), "{text}");
        assert!(text.contains("# TYPE kubelet_pod_start_duration_seconds histogram"), "{text}");
    }
}
