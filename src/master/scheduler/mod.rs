//! The scheduler: watches nodes and unscheduled pods, picks a node with the filter/score plugins over an
//! incremental node-info cache, "assumes" the pod there and binds it asynchronously through the API.
//! Pods that fit nowhere stay Pending with `PodScheduled=False` and a `FailedScheduling` event.

pub mod algorithm;
pub mod bench;
pub mod cache;
pub mod filters;
pub mod resources;
pub mod scores;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use tokio::sync::mpsc;

use crate::master::client::{ApiError, ClusterApi, WatchEvent, WatchStream, memory::now_time};
use crate::master::controllers::events::{EventRecorder, EventType, build_event, object_reference};
use crate::master::metrics::{QueueLabel, ResultLabels};
use algorithm::select_node;
use cache::{Cache, PodInfo};
use prometheus_client::metrics::gauge::Gauge;

/// The name pods use in `spec.schedulerName` to ask for this scheduler.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Why the scheduler loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: listing {what} failed: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("scheduler: watching {what} failed: {source}")]
    Watch { what: &'static str, source: ApiError },
}

/// Tunables of the scheduler loop.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub scheduler_name: String,
    /// How often pods that fit nowhere are retried even without cluster changes.
    pub retry_interval: Duration,
    /// Binds in flight at once.
    pub max_inflight_binds: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            retry_interval: Duration::from_secs(5),
            max_inflight_binds: 256,
        }
    }
}

/// Counters the loop updates (read by benchmarks and tests).
#[derive(Debug, Default)]
pub struct SchedulerMetrics {
    pub bound: AtomicU64,
    pub unschedulable_attempts: AtomicU64,
    pub bind_errors: AtomicU64,
    pub nodes_examined: AtomicU64,
}

struct BindResult {
    key: String,
    node: String,
    result: Result<(), ApiError>,
    /// When the attempt that chose the node started.
    started: std::time::Instant,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The scheduler's state between events.
struct Loop<C> {
    client: Arc<C>,
    config: SchedulerConfig,
    metrics: Arc<SchedulerMetrics>,
    events: EventRecorder<C>,
    cache: Cache,
    pending: HashMap<String, Pod>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashMap<String, String>,
    assumed: HashSet<String>,
    inflight: usize,
    start: usize,
    tie: u64,
    bind_tx: mpsc::UnboundedSender<BindResult>,
    /// `scheduler_pending_pods{queue="active"}` and `{queue="unschedulable"}`.
    pending_gauges: (Gauge, Gauge),
}

/// Records one scheduling attempt in `scheduler_schedule_attempts_total` and
/// `scheduler_scheduling_attempt_duration_seconds` (`scheduled`, `unschedulable`, `error`).
fn record_attempt(result: &'static str, took: Duration) {
    let m = crate::master::metrics::global();
    let labels = ResultLabels { result, profile: DEFAULT_SCHEDULER_NAME };
    m.schedule_attempts.get_or_create(&labels).inc();
    m.scheduling_duration.get_or_create(&labels).observe(took.as_secs_f64());
}

impl<C: ClusterApi> Loop<C> {
    fn responsible(&self, pod: &Pod) -> bool {
        let name =
            pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER_NAME);
        name == self.config.scheduler_name
    }

    fn enqueue(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    fn retry_unschedulable(&mut self) {
        let keys: Vec<String> = self.unschedulable.keys().cloned().collect();
        for key in keys {
            self.enqueue(key);
        }
    }

    fn on_pod(&mut self, event: WatchEvent<Pod>) {
        let deleted = matches!(event, WatchEvent::Deleted(_));
        let pod = event.into_object();
        let key = pod_key(&pod);
        if deleted || (is_finished(&pod) && bound_node(&pod).is_some()) {
            self.forget(&key);
            if self.cache.pod_node(&key).is_some() {
                self.cache.remove_pod(&key);
                self.retry_unschedulable();
            }
            return;
        }
        if let Some(node) = bound_node(&pod) {
            self.pending.remove(&key);
            self.unschedulable.remove(&key);
            if self.cache.pod_node(&key) != Some(node) || !self.assumed.contains(&key) {
                self.cache.add_pod(node, PodInfo::new(&pod));
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || !self.responsible(&pod) {
            self.forget(&key);
            return;
        }
        if self.assumed.contains(&key) {
            return;
        }
        self.pending.insert(key.clone(), pod);
        if !self.unschedulable.contains_key(&key) {
            self.enqueue(key);
        }
    }

    fn forget(&mut self, key: &str) {
        self.pending.remove(key);
        self.unschedulable.remove(key);
    }

    fn on_node(&mut self, event: WatchEvent<Node>) {
        match event {
            WatchEvent::Deleted(n) => self.cache.remove_node(n.metadata.name.as_deref().unwrap_or("")),
            WatchEvent::Added(n) | WatchEvent::Modified(n) => {
                let known = n.metadata.name.as_deref().and_then(|name| self.cache.node(name)).is_some();
                self.cache.upsert_node(&n);
                if !known {
                    self.retry_unschedulable();
                }
            }
        }
    }

    async fn on_bind_result(&mut self, r: BindResult) {
        self.inflight -= 1;
        self.assumed.remove(&r.key);
        match r.result {
            Ok(()) => {
                record_attempt("scheduled", r.started.elapsed());
                self.metrics.bound.fetch_add(1, Ordering::Relaxed);
                self.pending.remove(&r.key);
            }
            Err(e) => {
                record_attempt("error", r.started.elapsed());
                self.metrics.bind_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pod = %r.key, node = %r.node, error = %e, "bind failed");
                if self.cache.pod_node(&r.key) == Some(r.node.as_str()) {
                    self.cache.remove_pod(&r.key);
                }
                let (ns, name) = r.key.split_once('/').unwrap_or(("", &r.key));
                match self.client.get::<Pod>(Some(ns), name).await {
                    Ok(pod) => self.on_pod(WatchEvent::Modified(pod)),
                    Err(_) => self.forget(&r.key),
                }
            }
        }
    }

    /// Try to place the next queued pod.
    async fn schedule_next(&mut self) {
        let Some(key) = self.queue.pop_front() else { return };
        self.queued.remove(&key);
        let Some(pod) = self.pending.get(&key).cloned() else { return };
        let started = std::time::Instant::now();
        if self.cache.nodes.is_empty() {
            record_attempt("unschedulable", started.elapsed());
            self.mark_unschedulable(&pod, "0/0 nodes are available: no nodes registered.".into()).await;
            return;
        }
        let info = PodInfo::new(&pod);
        self.tie = self.tie.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        match select_node(&self.cache, &pod, &info, self.start, self.tie >> 33) {
            Ok((index, examined)) => {
                self.metrics.nodes_examined.fetch_add(examined as u64, Ordering::Relaxed);
                self.start = (self.start + examined) % self.cache.nodes.len();
                let node = self.cache.nodes[index].name.clone();
                self.cache.add_pod(&node, info);
                self.assumed.insert(key.clone());
                self.unschedulable.remove(&key);
                self.inflight += 1;
                let client = self.client.clone();
                let tx = self.bind_tx.clone();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let scheduled = build_event(
                    object_reference(&pod),
                    DEFAULT_SCHEDULER_NAME,
                    EventType::Normal,
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                );
                tokio::spawn(async move {
                    let result = client.bind(&ns, &name, &node).await;
                    if result.is_ok()
                        && let Err(e) = client.create(&scheduled).await
                    {
                        tracing::debug!(pod = %key, error = %e, "recording Scheduled event failed");
                    }
                    let _ = tx.send(BindResult { key, node, result, started });
                });
            }
            Err(fit) => {
                record_attempt("unschedulable", started.elapsed());
                self.metrics.unschedulable_attempts.fetch_add(1, Ordering::Relaxed);
                self.mark_unschedulable(&pod, fit.to_string()).await;
            }
        }
    }

    /// Record `PodScheduled=False` and a FailedScheduling event (once per distinct message).
    async fn mark_unschedulable(&mut self, pod: &Pod, message: String) {
        let key = pod_key(pod);
        if self.unschedulable.get(&key) == Some(&message) {
            return;
        }
        self.unschedulable.insert(key, message.clone());
        let (ns, name) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref().unwrap_or(""));
        for _ in 0..3 {
            let Ok(mut fresh) = self.client.get::<Pod>(ns, name).await else { return };
            if bound_node(&fresh).is_some() {
                return;
            }
            let status = fresh.status.get_or_insert_default();
            status.phase.get_or_insert_with(|| "Pending".into());
            let conditions = status.conditions.get_or_insert_default();
            conditions.retain(|c| c.type_ != "PodScheduled");
            conditions.push(PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some(message.clone()),
                last_transition_time: Some(now_time()),
                ..Default::default()
            });
            match self.client.update_status(&fresh).await {
                Err(e) if e.is_conflict() => continue,
                _ => break,
            }
        }
        self.events.pod_event(pod, EventType::Warning, "FailedScheduling", &message).await;
    }
}

/// Run the scheduler until its watches fail for good. Relists and rebuilds the cache when a watch ends.
pub async fn run<C: ClusterApi>(
    client: Arc<C>,
    config: SchedulerConfig,
    metrics: Arc<SchedulerMetrics>,
) -> Result<(), SchedulerError> {
    let (bind_tx, mut bind_rx) = mpsc::unbounded_channel();
    let events = EventRecorder::new(client.clone(), DEFAULT_SCHEDULER_NAME);
    let mut state = Loop {
        client: client.clone(),
        config,
        metrics,
        events,
        cache: Cache::default(),
        pending: HashMap::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        unschedulable: HashMap::new(),
        assumed: HashSet::new(),
        inflight: 0,
        start: 0,
        tie: 0x9e3779b97f4a7c15,
        bind_tx,
        pending_gauges: {
            let m = crate::master::metrics::global();
            (
                m.scheduler_pending.get_or_create_owned(&QueueLabel { queue: "active" }),
                m.scheduler_pending.get_or_create_owned(&QueueLabel { queue: "unschedulable" }),
            )
        },
    };
    loop {
        let nodes = client
            .list::<Node>(None)
            .await
            .map_err(|source| SchedulerError::List { what: "nodes", source })?;
        let pods =
            client.list::<Pod>(None).await.map_err(|source| SchedulerError::List { what: "pods", source })?;
        let mut node_watch: WatchStream<Node> = client
            .watch(None, &nodes.resource_version)
            .await
            .map_err(|source| SchedulerError::Watch { what: "nodes", source })?;
        let mut pod_watch: WatchStream<Pod> = client
            .watch(None, &pods.resource_version)
            .await
            .map_err(|source| SchedulerError::Watch { what: "pods", source })?;
        state.cache = Cache::default();
        state.pending.clear();
        state.queue.clear();
        state.queued.clear();
        for n in nodes.items {
            state.cache.upsert_node(&n);
        }
        for p in pods.items {
            state.on_pod(WatchEvent::Added(p));
        }
        let mut retry = tokio::time::interval(state.config.retry_interval);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_schedule = !state.queue.is_empty() && state.inflight < state.config.max_inflight_binds;
            tokio::select! {
                biased;
                r = bind_rx.recv() => if let Some(r) = r { state.on_bind_result(r).await },
                e = node_watch.next() => match e {
                    Some(Ok(e)) => state.on_node(e),
                    _ => break,
                },
                e = pod_watch.next() => match e {
                    Some(Ok(e)) => state.on_pod(e),
                    _ => break,
                },
                _ = std::future::ready(()), if can_schedule => state.schedule_next().await,
                _ = retry.tick() => state.retry_unschedulable(),
            }
            state.pending_gauges.0.set(state.queue.len() as i64);
            state.pending_gauges.1.set(state.unschedulable.len() as i64);
        }
        tracing::info!("scheduler watch ended; relisting");
    }
}
