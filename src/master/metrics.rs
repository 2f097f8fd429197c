//! The master's Prometheus metrics (kube-apiserver, kube-scheduler and controller-manager names):
//! one process-wide registry (as kube's legacy registry), recorded by the API server, the store
//! wrapper [`MeasuredStore`], the scheduler and the controller loops, and encoded in the Prometheus
//! text format 0.0.4 for `GET /metrics`. Recording is a read-locked map lookup and an atomic add.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::store::{EventStream, KeyValue, ListResult, Revision, Store, StoreFuture};

/// The `Content-Type` of `/metrics` answers.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// kube-apiserver's request-duration buckets.
const REQUEST_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0,
];
/// kube-apiserver's etcd request buckets.
const STORE_BUCKETS: [f64; 18] =
    [0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];
/// Short operations (scheduling attempts, controller syncs): 1 ms to ~16 s.
const SHORT_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384,
];

/// Labels of `apiserver_request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub dry_run: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: String,
    pub component: String,
    pub code: String,
}

/// Labels of `apiserver_request_duration_seconds` and `apiserver_longrunning_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestKind {
    pub verb: String,
    pub dry_run: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: String,
    pub component: String,
}

/// Labels of `etcd_request_duration_seconds` and `etcd_requests_total`: `operation` and `type`
/// (the resource: the key's second segment, `/registry/<type>/…`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct StoreLabels {
    pub operation: &'static str,
    pub kind: String,
}

impl EncodeLabelSet for StoreLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("operation", self.operation).encode(encoder.encode_label())?;
        ("type", self.kind.as_str()).encode(encoder.encode_label())
    }
}

/// A `name` label (controller queues).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

/// The scheduler queue of `scheduler_pending_pods`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

/// The outcome of a scheduling attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
    pub profile: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>(make: fn() -> Histogram) -> HistogramFamily<L> {
    Family::new_with_constructor(make)
}

/// Every metric the master records.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RequestKind>,
    pub longrunning: Family<RequestKind, Gauge>,
    pub inflight: Family<Vec<(&'static str, &'static str)>, Gauge>,
    pub store_duration: HistogramFamily<StoreLabels>,
    pub store_requests: Family<StoreLabels, Counter>,
    pub store_errors: Family<StoreLabels, Counter>,
    pub scheduler_pending: Family<QueueLabel, Gauge>,
    pub schedule_attempts: Family<ResultLabels, Counter>,
    pub scheduling_duration: HistogramFamily<ResultLabels>,
    pub queue_depth: Family<NameLabel, Gauge>,
    pub queue_adds: Family<NameLabel, Counter>,
    pub queue_work_duration: HistogramFamily<NameLabel>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: histograms(|| Histogram::new(REQUEST_BUCKETS)),
            longrunning: Family::default(),
            inflight: Family::default(),
            store_duration: histograms(|| Histogram::new(STORE_BUCKETS)),
            store_requests: Family::default(),
            store_errors: Family::default(),
            scheduler_pending: Family::default(),
            schedule_attempts: Family::default(),
            scheduling_duration: histograms(|| Histogram::new(SHORT_BUCKETS)),
            queue_depth: Family::default(),
            queue_adds: Family::default(),
            queue_work_duration: histograms(|| Histogram::new(SHORT_BUCKETS)),
        };
        let mut reg = Registry::default();
        reg.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            m.requests.clone(),
        );
        reg.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component",
            m.request_duration.clone(),
        );
        reg.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches and streams) broken out by verb, group, version, resource, scope and component",
            m.longrunning.clone(),
        );
        reg.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind",
            m.inflight.clone(),
        );
        reg.register(
            "etcd_request_duration_seconds",
            "Store request latency in seconds for each operation and object type (both store backends)",
            m.store_duration.clone(),
        );
        reg.register(
            "etcd_requests",
            "Store request counts for each operation and object type",
            m.store_requests.clone(),
        );
        reg.register(
            "etcd_request_errors",
            "Store request error counts for each operation and object type",
            m.store_errors.clone(),
        );
        reg.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type: 'active' waits for a scheduling attempt, 'unschedulable' fit nowhere at the last one",
            m.scheduler_pending.clone(),
        );
        reg.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result: 'unschedulable' means a pod could not be scheduled, 'error' an internal problem",
            m.schedule_attempts.clone(),
        );
        reg.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.scheduling_duration.clone(),
        );
        reg.register(
            "workqueue_depth",
            "Current depth of workqueue (changes not yet handled by the controller)",
            m.queue_depth.clone(),
        );
        reg.register("workqueue_adds", "Total number of adds handled by workqueue", m.queue_adds.clone());
        reg.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item (a controller sync) takes",
            m.queue_work_duration.clone(),
        );
        m.registry = reg;
        m
    }

    /// The registry in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide master metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// What `apiserver_request_*` records about one request, derived from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub kind: RequestKind,
    /// Watches and streaming subresources: counted in `apiserver_longrunning_requests` while open.
    pub long_running: bool,
}

/// The HTTP methods recorded by name; any other is recorded as `other` (kube-apiserver's
/// `validRequestMethods`).
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT"];

/// The subresources recorded by name; any other segment is recorded as none.
const SUBRESOURCES: &[&str] = &[
    "status",
    "scale",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "binding",
    "eviction",
    "ephemeralcontainers",
    "resize",
    "token",
    "finalize",
    "approval",
];

/// The upper-case verb, group, version, resource, subresource and scope of a request, as
/// kube-apiserver's RequestInfo resolves them. `known` says whether `group/version/resource`
/// is served; unknown resources, methods and subresources are recorded with fixed labels, so
/// requests (even unauthenticated ones) cannot grow the label space. Non-resource paths
/// (`/healthz`, `/metrics`) have an empty resource.
pub fn request_info(
    method: &str,
    path: &str,
    watch: bool,
    dry_run: bool,
    apply: bool,
    known: impl Fn(&str, &str, &str) -> bool,
) -> RequestInfo {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let method = if METHODS.contains(&method) { method } else { "other" };
    let mut kind = RequestKind {
        verb: method.to_string(),
        dry_run: if dry_run { "All".into() } else { String::new() },
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        scope: String::new(),
        component: "apiserver".into(),
    };
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return RequestInfo { kind, long_running: false },
    };
    let (namespace, parts): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns), tail),
        _ => (None, rest),
    };
    let (resource, name) = (parts[0], parts.get(1).copied());
    let sub = parts.get(2).copied().filter(|s| SUBRESOURCES.contains(s));
    if !known(group, version, resource) {
        return RequestInfo { kind, long_running: false };
    }
    let named = name.is_some();
    let verb = match method {
        "GET" | "HEAD" if watch => "WATCH",
        "GET" | "HEAD" if named => "GET",
        "GET" | "HEAD" => "LIST",
        "POST" if matches!(sub, Some("exec" | "attach" | "portforward" | "proxy")) => "CONNECT",
        "POST" => "CREATE",
        "PUT" => "UPDATE",
        "PATCH" if apply => "APPLY",
        "PATCH" => "PATCH",
        "DELETE" if named => "DELETE",
        "DELETE" => "DELETECOLLECTION",
        other => other,
    };
    let verb = if method == "GET" && matches!(sub, Some("exec" | "attach" | "portforward")) {
        "CONNECT"
    } else {
        verb
    };
    kind.verb = verb.to_string();
    kind.group = group.to_string();
    kind.version = version.to_string();
    kind.resource = resource.to_string();
    kind.subresource = sub.unwrap_or("").to_string();
    kind.scope = if named {
        "resource"
    } else if namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    }
    .into();
    let long_running = verb == "WATCH" || verb == "CONNECT" || sub == Some("log");
    RequestInfo { kind, long_running }
}

impl Metrics {
    /// Records a finished request (its response head sent).
    pub fn observe_request(&self, info: &RequestInfo, code: u16, took: Duration) {
        let k = &info.kind;
        let labels = RequestLabels {
            verb: k.verb.clone(),
            dry_run: k.dry_run.clone(),
            group: k.group.clone(),
            version: k.version.clone(),
            resource: k.resource.clone(),
            subresource: k.subresource.clone(),
            scope: k.scope.clone(),
            component: k.component.clone(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration.get_or_create(k).observe(took.as_secs_f64());
    }

    /// Counts a long-running request until the guard drops.
    pub fn long_running(&'static self, kind: RequestKind) -> LongRunning {
        self.longrunning.get_or_create(&kind).inc();
        LongRunning { kind }
    }

    /// Counts a request in flight (`mutating` or `readOnly`) until the guard drops.
    pub fn in_flight(&'static self, mutating: bool) -> InFlight {
        let kind = if mutating { "mutating" } else { "readOnly" };
        self.inflight.get_or_create(&vec![("request_kind", kind)]).inc();
        InFlight { kind }
    }

    fn observe_store(&self, operation: &'static str, key: &str, took: Duration, ok: bool) {
        let labels = StoreLabels { operation, kind: object_type(key).to_string() };
        self.store_duration.get_or_create(&labels).observe(took.as_secs_f64());
        self.store_requests.get_or_create(&labels).inc();
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }
}

/// A long-running request in `apiserver_longrunning_requests`.
pub struct LongRunning {
    kind: RequestKind,
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        global().longrunning.get_or_create(&self.kind).dec();
    }
}

/// A request in `apiserver_current_inflight_requests`.
pub struct InFlight {
    kind: &'static str,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        global().inflight.get_or_create(&vec![("request_kind", self.kind)]).dec();
    }
}

/// The object type of a store key: `/registry/pods/ns/name` → `pods`; other keys by their first
/// segment.
pub fn object_type(key: &str) -> &str {
    let mut segs = key.trim_start_matches('/').split('/');
    match (segs.next(), segs.next()) {
        (Some("registry"), Some(t)) if !t.is_empty() => t,
        (Some(first), _) => first,
        _ => "",
    }
}

/// A [`Store`] that records every call in `etcd_request_duration_seconds`, `etcd_requests_total`
/// and `etcd_request_errors_total` (for either backend).
pub struct MeasuredStore<S: ?Sized> {
    inner: std::sync::Arc<S>,
}

impl<S: Store + ?Sized> MeasuredStore<S> {
    pub fn new(inner: std::sync::Arc<S>) -> Self {
        MeasuredStore { inner }
    }
}

fn measured<'a, T: Send + 'a>(op: &'static str, key: &'a str, fut: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
    Box::pin(async move {
        let start = Instant::now();
        let r = fut.await;
        global().observe_store(op, key, start.elapsed(), r.is_ok());
        r
    })
}

impl<S: Store + ?Sized> Store for MeasuredStore<S> {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        measured("get", key, self.inner.get(key))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        measured("list", prefix, self.inner.list(prefix))
    }
    fn list_at<'a>(&'a self, prefix: &'a str, revision: Revision) -> StoreFuture<'a, ListResult> {
        measured("list", prefix, self.inner.list_at(prefix, revision))
    }
    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision> {
        measured("create", key, self.inner.create(key, value))
    }
    fn update<'a>(&'a self, key: &'a str, value: Vec<u8>, expected: Revision) -> StoreFuture<'a, Revision> {
        measured("update", key, self.inner.update(key, value, expected))
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> StoreFuture<'a, (Revision, KeyValue)> {
        measured("delete", key, self.inner.delete(key, expected))
    }
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> StoreFuture<'a, EventStream> {
        measured("watch", prefix, self.inner.watch(prefix, after))
    }
    fn current_revision(&self) -> StoreFuture<'_, Revision> {
        measured("currentRevision", "", self.inner.current_revision())
    }
    fn compact(&self, revision: Revision) -> StoreFuture<'_, ()> {
        measured("compact", "", self.inner.compact(revision))
    }
}

/// A controller's queue figures (`workqueue_*{name}`), shared by the watch tasks that add to it
/// and the loop that drains it; the name is set when the loop starts.
#[derive(Clone, Default)]
pub struct QueueMetrics {
    slot: std::sync::Arc<std::sync::OnceLock<(Counter, Gauge)>>,
}

impl QueueMetrics {
    /// Names the queue: from now on adds and depth are recorded under `name`.
    pub fn set_name(&self, name: &str) {
        let labels = NameLabel { name: name.to_string() };
        let m = global();
        let _ = self
            .slot
            .set((m.queue_adds.get_or_create_owned(&labels), m.queue_depth.get_or_create_owned(&labels)));
    }

    /// One change queued.
    pub fn add(&self) {
        if let Some((adds, depth)) = self.slot.get() {
            adds.inc();
            depth.inc();
        }
    }

    /// `n` queued changes taken.
    pub fn take(&self, n: i64) {
        if let Some((_, depth)) = self.slot.get() {
            depth.dec_by(n.min(depth.get()));
        }
    }

    /// A sync of the named controller took `took`.
    pub fn observe_work(name: &str, took: Duration) {
        global()
            .queue_work_duration
            .get_or_create(&NameLabel { name: name.to_string() })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(g: &str, _v: &str, r: &str) -> bool {
        matches!((g, r), ("", "pods" | "namespaces" | "nodes") | ("apps", "deployments"))
    }

    fn info(method: &str, path: &str, watch: bool) -> (String, String, String, String, bool) {
        let i = request_info(method, path, watch, false, false, known);
        (i.kind.verb, i.kind.resource, i.kind.subresource, i.kind.scope, i.long_running)
    }

    #[test]
    fn verbs_and_scopes_as_kube_apiserver() {
        let s = |v: &str| v.to_string();
        assert_eq!(info("GET", "/api/v1/pods", false), (s("LIST"), s("pods"), s(""), s("cluster"), false));
        assert_eq!(
            info("GET", "/api/v1/namespaces/a/pods", true),
            (s("WATCH"), s("pods"), s(""), s("namespace"), true)
        );
        assert_eq!(
            info("GET", "/api/v1/namespaces/a/pods/p/log", false),
            (s("GET"), s("pods"), s("log"), s("resource"), true)
        );
        assert_eq!(
            info("POST", "/api/v1/namespaces/a/pods/p/exec", false),
            (s("CONNECT"), s("pods"), s("exec"), s("resource"), true)
        );
        assert_eq!(
            info("PATCH", "/apis/apps/v1/namespaces/a/deployments/d/scale", false),
            (s("PATCH"), s("deployments"), s("scale"), s("resource"), false)
        );
        assert_eq!(info("DELETE", "/api/v1/namespaces/a/pods", false).0, "DELETECOLLECTION");
        assert_eq!(
            info("GET", "/api/v1/namespaces/a", false),
            (s("GET"), s("namespaces"), s(""), s("resource"), false)
        );
        assert_eq!(
            request_info("PATCH", "/api/v1/nodes/n", false, true, true, known).kind,
            RequestKind {
                verb: s("APPLY"),
                dry_run: s("All"),
                group: s(""),
                version: s("v1"),
                resource: s("nodes"),
                subresource: s(""),
                scope: s("resource"),
                component: s("apiserver")
            }
        );
        // Non-resource paths and unknown resources keep the label space closed.
        assert_eq!(info("GET", "/metrics", false), (s("GET"), s(""), s(""), s(""), false));
        assert_eq!(info("GET", "/apis/made/up/things", false), (s("GET"), s(""), s(""), s(""), false));
        assert_eq!(info("BREW", "/api/v1/pods", false).0, "other");
        assert_eq!(info("XYZZY", "/healthz", false).0, "other");
        assert_eq!(
            info("GET", "/api/v1/namespaces/a/pods/p/random-0042", false),
            (s("GET"), s("pods"), s(""), s("resource"), false)
        );
    }

    #[test]
    fn object_types_of_store_keys() {
        assert_eq!(object_type("/registry/pods/default/p"), "pods");
        assert_eq!(object_type("/registry/namespaces/"), "namespaces");
        assert_eq!(object_type(""), "");
    }

    #[test]
    fn encoded_in_the_prometheus_text_format() {
        let m = Metrics::new();
        let i = request_info("GET", "/api/v1/pods", false, false, false, known);
        m.observe_request(&i, 200, Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("# TYPE apiserver_request_total counter"), "{text}");
        assert!(
            text.contains(r#"apiserver_request_total{verb="LIST",dry_run="",group="",version="v1",resource="pods",subresource="",scope="cluster",component="apiserver",code="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"apiserver_request_duration_seconds_bucket{verb="LIST""#), "{text}");
    }
}
