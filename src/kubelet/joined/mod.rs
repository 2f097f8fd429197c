//! A node joined to `rkube-master` (`rkubelet join`): it registers its Node, renews its Lease,
//! reports node status, and runs the Pods bound to it with the same pod code as `rkubelet run`,
//! reporting their status and Events and finishing graceful deletions.
//!
//! The node is an API client like any other, through kube-rs (`kube::Client`, the runtime's
//! `watcher`). Decisions are pure and unit-tested: `plan` (which pods to start, stop, remove),
//! `status` (pod status with kubelet semantics), `nodeinfo` (the Node object). This module is
//! the shell: it executes actions on threads of their own (a pod start forks, pulls and waits),
//! and the existing sync loop (`kubelet::agent`) keeps restarting, probing and backing off every
//! pod on disk, API pods included. All pod state is on disk, so an agent killed and restarted
//! re-adopts running pods without restarting them, and stops pods deleted meanwhile.

pub mod announce;
pub mod disk;
pub mod fake;
pub mod nodeinfo;
pub mod plan;
pub mod routes;
pub mod services;
pub mod status;
pub mod svcenv;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, EventSource, Node, ObjectReference, Pod, PodStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use self::nodeinfo::{HostFacts, NodeIdentity};
use self::plan::{Action, FailedStart, LocalPod};
use crate::api::podrefs;
use crate::kubelet::backoff::BackoffPolicy;
use crate::kubelet::state;

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Why the joined node could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum JoinedError {
    #[error("reading the node's kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client from {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("registering node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {node} got no pod CIDR from the master within {secs}s (is --cluster-cidr exhausted?)")]
    NoPodCidr { node: String, secs: u64 },
    #[error("node {node}: the pod CIDR {cidr:?} from the master is not an IPv4 network")]
    BadPodCidr { node: String, cidr: String },
    #[error("{what}")]
    Api {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Settings of a joined node.
#[derive(Debug, Clone)]
pub struct JoinedConfig {
    pub identity: NodeIdentity,
    /// Lease duration; the Lease is renewed every quarter of it (10 s for 40 s).
    pub lease_duration_seconds: i32,
    /// How often the node status is recomputed (and sent when it changed).
    pub status_period: Duration,
    /// How often pod statuses are recomputed.
    pub pod_status_period: Duration,
    /// Pod starts (pulls, forks) running at once.
    pub parallel_starts: usize,
    /// Back-off of failed pod starts (image pulls, missing ConfigMaps).
    pub start_backoff: BackoffPolicy,
}

impl JoinedConfig {
    /// The kubelet's defaults for `identity`.
    pub fn new(identity: NodeIdentity) -> Self {
        JoinedConfig {
            identity,
            lease_duration_seconds: 40,
            status_period: Duration::from_secs(10),
            pod_status_period: Duration::from_secs(1),
            parallel_starts: 8,
            start_backoff: BackoffPolicy { initial: Duration::from_secs(10), max: Duration::from_secs(300) },
        }
    }
}

/// An API client from the node's kubeconfig.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, JoinedError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|source| JoinedError::Kubeconfig { path: kubeconfig.into(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| JoinedError::Kubeconfig { path: kubeconfig.into(), source })?;
    kube::Client::try_from(config).map_err(|source| JoinedError::Client { path: kubeconfig.into(), source })
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(r) => Some(r.code),
        _ => None,
    }
}

/// Registers (or re-registers) the Node with its status, then waits for the pod CIDR the
/// master's node IPAM assigns, which the node's pod network then uses.
pub async fn register(
    client: &kube::Client,
    cfg: &JoinedConfig,
    root: &Path,
) -> Result<Ipv4Net, JoinedError> {
    let name = cfg.identity.name.clone();
    let err = |source| JoinedError::Register { node: name.clone(), source };
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Time(Utc::now());
    let node = nodeinfo::node_object(&cfg.identity, &HostFacts::read(root), &now);
    let mut delay = Duration::from_millis(100);
    loop {
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(e) if code(&e) == Some(409) => break,
            // The API server may be starting: retry as the kubelet does (100 ms doubling to 7 s).
            Err(e) if code(&e).is_none() && delay < Duration::from_secs(7) => {
                tracing::warn!("registering node {name}: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(err(e)),
        }
    }
    let status = json!({"status": node.status});
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.map_err(err)?;
    let wait = Duration::from_secs(60);
    let started = Instant::now();
    loop {
        let current = nodes.get(&name).await.map_err(err)?;
        if let Some(cidr) = current.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
            return cidr.parse().map_err(|_| JoinedError::BadPodCidr { node: name.clone(), cidr });
        }
        if started.elapsed() > wait {
            return Err(JoinedError::NoPodCidr { node: name.clone(), secs: wait.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cluster DNS address: the ClusterIP of the master's `kube-system/kube-dns` Service (`None`
/// when there is no such Service).
pub async fn cluster_dns_address(client: &kube::Client) -> Result<Option<Ipv4Addr>, JoinedError> {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc = match api.get_opt("kube-dns").await {
        Ok(svc) => svc,
        Err(source) => {
            return Err(JoinedError::Api { what: "reading the kube-system/kube-dns Service", source });
        }
    };
    Ok(svc.and_then(|s| s.spec?.cluster_ip?.parse().ok()))
}

/// Renews the node's Lease every quarter of its duration until `stop`.
pub async fn lease_loop(client: kube::Client, cfg: Arc<JoinedConfig>, mut stop: watch::Receiver<bool>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let name = cfg.identity.name.clone();
    let period = Duration::from_secs((cfg.lease_duration_seconds as u64 / 4).max(1));
    let mut owner: Option<OwnerReference> = None;
    loop {
        if owner.is_none() {
            owner = nodes.get(&name).await.ok().and_then(|n| {
                Some(OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid: n.metadata.uid?,
                    ..Default::default()
                })
            });
        }
        if let Err(e) = renew_lease(&leases, &name, cfg.lease_duration_seconds, owner.clone()).await {
            tracing::warn!("renewing the lease of node {name}: {e}");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    duration: i32,
    owner: Option<OwnerReference>,
) -> Result<(), kube::Error> {
    let renew = Some(MicroTime(Utc::now()));
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_default();
            spec.renew_time = renew;
            spec.holder_identity = Some(name.into());
            spec.lease_duration_seconds = Some(duration);
            if lease.metadata.owner_references.as_ref().is_none_or(|o| o.is_empty()) {
                lease.metadata.owner_references = owner.map(|o| vec![o]);
            }
            leases.replace(name, &PostParams::default(), &lease).await.map(drop)
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(duration),
                    renew_time: renew,
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.map(drop)
        }
    }
}

/// Recomputes the node status every period and sends it when it differs from the server's
/// (heartbeat times aside) or a minute passed, as the kubelet does.
pub async fn node_status_loop(
    client: kube::Client,
    cfg: Arc<JoinedConfig>,
    root: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client);
    let name = cfg.identity.name.clone();
    let mut last_sent = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(cfg.status_period) => {}
        }
        let Ok(current) = nodes.get(&name).await else { continue };
        let now = Time(Utc::now());
        let facts = HostFacts::read(&root);
        let mut want = nodeinfo::node_status(&cfg.identity, &facts, &now);
        let old = current.status.clone().unwrap_or_default();
        want.conditions = want
            .conditions
            .map(|c| nodeinfo::merge_conditions(old.conditions.as_deref().unwrap_or_default(), c));
        let strip = |s: &k8s_openapi::api::core::v1::NodeStatus| {
            let mut s = s.clone();
            for c in s.conditions.iter_mut().flatten() {
                c.last_heartbeat_time = None;
            }
            (s.conditions, s.capacity, s.allocatable, s.addresses, s.node_info)
        };
        if strip(&want) != strip(&old) || last_sent.elapsed() >= Duration::from_secs(60) {
            match nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": want})))
                .await
            {
                Ok(_) => last_sent = Instant::now(),
                Err(e) => tracing::warn!("node {name}: status update: {e}"),
            }
        }
    }
}

/// An Event about a pod (and maybe one of its containers).
#[derive(Debug, Clone)]
pub struct PodEvent {
    namespace: String,
    name: String,
    uid: String,
    container: Option<String>,
    warning: bool,
    reason: &'static str,
    message: String,
}

impl PodEvent {
    pub fn new(pod: &Pod, container: Option<&str>, reason: &'static str, message: String) -> Self {
        PodEvent {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            container: container.map(str::to_string),
            warning: false,
            reason,
            message,
        }
    }

    pub fn warning(mut self) -> Self {
        self.warning = true;
        self
    }
}

/// Why a pod did not start, as its status shows it (`reason` is a container waiting reason).
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub reason: &'static str,
    pub message: String,
}

/// What a joined node does with the pods on its machine. [`disk::DiskPods`] runs real
/// containers; [`fake::FakePods`] keeps pods in memory (tests, and hollow nodes that load the
/// master as thousands of nodes would). Every method but `local` may block.
pub trait PodRuntime: Send + Sync + 'static {
    /// The pods from the API server this node holds, by key.
    fn local(&self) -> BTreeMap<String, LocalPod>;
    /// Starts `pod` (with the ConfigMaps and Secrets it references); returns its key.
    fn start(&self, pod: &Pod, objects: Vec<Value>, event: &dyn Fn(PodEvent))
    -> Result<String, StartFailure>;
    /// Stops the pod (preStop, SIGTERM, `grace`, SIGKILL) and removes everything of it.
    fn remove(&self, key: &str, grace: Option<Duration>) -> Result<(), String>;
    /// The pod's status now, and the Events its containers' state calls for (`seen` is the
    /// caller's memory of what was reported).
    fn status(
        &self,
        key: &str,
        pod: &Pod,
        prev: Option<&PodStatus>,
        host_ip: &str,
        seen: &mut HashMap<String, u64>,
    ) -> Option<(PodStatus, Vec<PodEvent>)>;
}

/// How an action ended.
#[derive(Debug)]
enum Outcome {
    Started {
        uid: String,
        key: String,
    },
    StartFailed {
        uid: String,
        reason: &'static str,
        message: String,
    },
    /// The pod is stopped and gone from the node: delete the object.
    Terminated {
        uid: String,
        namespace: String,
        name: String,
    },
    Removed {
        key: String,
    },
    Failed {
        what: String,
        message: String,
    },
}

#[derive(Debug)]
enum Report {
    Event(PodEvent),
    Done { busy: Vec<String>, outcome: Outcome },
}

/// A start that failed: when to retry, and what the pod's status says meanwhile.
#[derive(Debug, Clone)]
struct Failure {
    retry: FailedStart,
    backoff: crate::kubelet::backoff::Backoff,
    reason: &'static str,
    message: String,
}

/// The pod half of a joined node.
pub struct PodSync<R: PodRuntime> {
    pods: Arc<R>,
    cfg: Arc<JoinedConfig>,
    client: kube::Client,
    desired: BTreeMap<String, Pod>,
    /// Buffer of the watcher's (re-)list.
    listing: BTreeMap<String, Pod>,
    synced: bool,
    local: BTreeMap<String, LocalPod>,
    busy: BTreeSet<String>,
    starting: usize,
    failures: HashMap<String, Failure>,
    reported: HashMap<String, PodStatus>,
    /// Probe failures already reported, by container id.
    probe_failures: HashMap<String, u64>,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
    /// Every Service, for the containers' `<SVC>_SERVICE_HOST` variables (set once `run` starts).
    /// The Services (for the containers' variables) and whether their first list arrived.
    services: Option<(reflector::Store<Service>, watch::Receiver<bool>)>,
}

impl<R: PodRuntime> std::fmt::Debug for PodSync<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSync").field("node", &self.cfg.identity.name).finish_non_exhaustive()
    }
}

impl<R: PodRuntime> PodSync<R> {
    /// The pod half of a node whose pods `pods` runs.
    pub fn new(pods: R, cfg: Arc<JoinedConfig>, client: kube::Client) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let local = pods.local();
        PodSync {
            pods: Arc::new(pods),
            cfg,
            client,
            desired: BTreeMap::new(),
            listing: BTreeMap::new(),
            synced: false,
            local,
            busy: BTreeSet::new(),
            starting: 0,
            failures: HashMap::new(),
            reported: HashMap::new(),
            probe_failures: HashMap::new(),
            tx,
            rx,
            services: None,
        }
    }

    /// Watches the pods bound to this node and keeps them running until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (services, writer) = reflector::store::<Service>();
        let services_api: Api<Service> = Api::all(self.client.clone());
        let services_task = tokio::spawn(
            watcher(services_api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .for_each(|_| std::future::ready(())),
        );
        let _services_task = AbortOnDrop(services_task);
        // One waiter on the store (kube-runtime's readiness wakes only the last of several); pod
        // starts wait on the flag.
        let (ready_tx, ready_rx) = watch::channel(false);
        let _ready_task = AbortOnDrop(tokio::spawn({
            let services = services.clone();
            async move {
                if services.wait_until_ready().await.is_ok() {
                    let _ = ready_tx.send(true);
                }
            }
        }));
        self.services = Some((services, ready_rx));
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.cfg.identity.name);
        let mut events =
            watcher(pods, watcher::Config::default().fields(&selector)).default_backoff().boxed();
        let mut tick = tokio::time::interval(self.cfg.pod_status_period);
        let mut rescan = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_watch(event),
                    Some(Err(e)) => tracing::warn!("watching pods: {e}"),
                    None => return,
                },
                Some(report) = self.rx.recv() => self.on_report(report).await,
                _ = tick.tick() => {
                    if rescan.elapsed() > Duration::from_secs(10) {
                        // Pods removed behind our back (`rkubelet rm`) stop counting as local.
                        self.local = self.pods.local();
                        rescan = Instant::now();
                    }
                    self.report_statuses().await;
                }
            }
            self.act();
        }
    }

    fn on_watch(&mut self, event: watcher::Event<Pod>) {
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => self.listing.clear(),
            watcher::Event::InitApply(p) => {
                self.listing.insert(uid(&p), p);
            }
            watcher::Event::InitDone => {
                self.desired = std::mem::take(&mut self.listing);
                self.synced = true;
            }
            watcher::Event::Apply(p) => {
                self.desired.insert(uid(&p), p);
            }
            watcher::Event::Delete(p) => {
                let uid = uid(&p);
                self.desired.remove(&uid);
                self.failures.remove(&uid);
                self.reported.remove(&uid);
            }
        }
    }

    fn act(&mut self) {
        let failed: HashMap<String, FailedStart> =
            self.failures.iter().map(|(k, f)| (k.clone(), f.retry.clone())).collect();
        let local: Vec<LocalPod> = self.local.values().cloned().collect();
        let actions = plan::plan(&plan::Inputs {
            desired: &self.desired,
            synced: self.synced,
            local: &local,
            busy: &self.busy,
            failed: &failed,
            now: Instant::now(),
        });
        for action in actions {
            match action {
                Action::Start { uid } => {
                    if self.starting < self.cfg.parallel_starts {
                        self.start(uid);
                    }
                }
                Action::Terminate { uid, key, grace } => self.terminate(uid, key, grace),
                Action::Finalize { uid } => {
                    if let Some(pod) = self.desired.get(&uid) {
                        let (ns, name) = names(pod);
                        self.busy.insert(uid.clone());
                        let outcome = Outcome::Terminated { uid: uid.clone(), namespace: ns, name };
                        let _ = self.tx.send(Report::Done { busy: vec![uid], outcome });
                    }
                }
                Action::Orphan { key } => self.orphan(key),
            }
        }
    }

    fn start(&mut self, uid: String) {
        let Some(pod) = self.desired.get(&uid).cloned() else { return };
        self.busy.insert(uid.clone());
        self.starting += 1;
        let (client, pods, tx) = (self.client.clone(), self.pods.clone(), self.tx.clone());
        let services = self.services.clone();
        tokio::spawn(async move {
            // As the kubelet, start containers once the Services are known (their variables).
            let pod = match services {
                Some((s, mut ready)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
                    svcenv::with_service_env(&pod, &s.state())
                }
                None => pod,
            };
            let outcome = match fetch_references(&client, &pod).await {
                Err(message) => {
                    let _ = tx.send(Report::Event(
                        PodEvent::new(&pod, None, "Failed", format!("Error: {message}")).warning(),
                    ));
                    Outcome::StartFailed { uid: uid.clone(), reason: "CreateContainerConfigError", message }
                }
                Ok(objects) => {
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    let events = tx.clone();
                    let uid = uid.clone();
                    // A pod start forks, pulls and waits for init containers: a thread of its own.
                    std::thread::spawn(move || {
                        let event = |e: PodEvent| {
                            let _ = events.send(Report::Event(e));
                        };
                        let outcome = match pods.start(&pod, objects, &event) {
                            Ok(key) => Outcome::Started { uid, key },
                            Err(f) => Outcome::StartFailed { uid, reason: f.reason, message: f.message },
                        };
                        let _ = done_tx.send(outcome);
                    });
                    done_rx
                        .await
                        .unwrap_or(Outcome::Failed { what: "pod start".into(), message: "panicked".into() })
                }
            };
            let _ = tx.send(Report::Done { busy: vec![uid], outcome });
        });
    }

    fn terminate(&mut self, uid: String, key: String, grace: Duration) {
        let Some(pod) = self.desired.get(&uid).cloned() else { return };
        self.busy.insert(uid.clone());
        self.busy.insert(key.clone());
        let (pods, tx) = (self.pods.clone(), self.tx.clone());
        std::thread::spawn(move || {
            for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                let message = format!("Stopping container {}", c.name);
                let _ = tx.send(Report::Event(PodEvent::new(&pod, Some(&c.name), "Killing", message)));
            }
            let (namespace, name) = names(&pod);
            let outcome = match pods.remove(&key, Some(grace)) {
                Ok(()) => Outcome::Terminated { uid: uid.clone(), namespace, name },
                Err(message) => Outcome::Failed { what: format!("stopping pod {namespace}/{name}"), message },
            };
            let _ = tx.send(Report::Done { busy: vec![uid, key], outcome });
        });
    }

    fn orphan(&mut self, key: String) {
        self.busy.insert(key.clone());
        let (pods, tx) = (self.pods.clone(), self.tx.clone());
        std::thread::spawn(move || {
            tracing::info!("pod {key} is gone from the API server: removing it");
            let outcome = match pods.remove(&key, None) {
                Ok(()) => Outcome::Removed { key: key.clone() },
                Err(message) => Outcome::Failed { what: format!("removing pod {key}"), message },
            };
            let _ = tx.send(Report::Done { busy: vec![key], outcome });
        });
    }

    async fn on_report(&mut self, report: Report) {
        match report {
            Report::Event(e) => post_event(&self.client, &self.cfg.identity.name, &e).await,
            Report::Done { busy, outcome } => {
                for b in busy {
                    self.busy.remove(&b);
                }
                self.on_outcome(outcome).await;
            }
        }
    }

    async fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Started { uid, key } => {
                self.starting -= 1;
                self.failures.remove(&uid);
                self.local.insert(key.clone(), LocalPod { key, uid: uid.clone() });
                self.report_one(&uid).await;
            }
            Outcome::StartFailed { uid, reason, message } => {
                self.starting -= 1;
                tracing::warn!("pod {uid}: {message}");
                let again = self.failures.contains_key(&uid);
                let failure = self.failures.entry(uid.clone()).or_insert_with(|| Failure {
                    retry: FailedStart { retry_at: Instant::now() },
                    backoff: Default::default(),
                    reason,
                    message: String::new(),
                });
                let delay = failure.backoff.record_failure(self.cfg.start_backoff, state::unix_now_ms());
                failure.retry = FailedStart { retry_at: Instant::now() + delay };
                // Pulls that keep failing are reported as the kubelet does: ImagePullBackOff.
                failure.reason = if reason == "ErrImagePull" && again { "ImagePullBackOff" } else { reason };
                failure.message = message;
                self.report_one(&uid).await;
            }
            Outcome::Terminated { uid, namespace, name } => {
                self.local.retain(|_, l| l.uid != uid);
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                match pods.delete(&name, &params).await {
                    // Gone, replaced by a pod of another uid, or no longer ours to delete (the
                    // authorizer knows no pod of that name bound here): nothing left to do.
                    Ok(_) => {}
                    Err(e) if matches!(code(&e), Some(403 | 404 | 409)) => {}
                    Err(e) => {
                        tracing::warn!("deleting pod {namespace}/{name}: {e}");
                        return;
                    }
                }
                // The watch brings the deletion soon; until then nothing more is done for it.
                self.desired.remove(&uid);
                self.reported.remove(&uid);
            }
            Outcome::Removed { key } => {
                self.local.remove(&key);
            }
            Outcome::Failed { what, message } => tracing::warn!("{what}: {message}"),
        }
    }

    async fn report_statuses(&mut self) {
        let uids: Vec<String> = self.desired.keys().cloned().collect();
        for uid in uids {
            self.report_one(&uid).await;
        }
    }

    /// Computes the status of pod `uid` and sends it if it changed.
    async fn report_one(&mut self, uid: &str) {
        let Some(pod) = self.desired.get(uid) else { return };
        if pod.metadata.deletion_timestamp.is_some() && !self.local.values().any(|l| l.uid == uid) {
            return;
        }
        let host_ip = self.cfg.identity.internal_ip.to_string();
        let now = SystemTime::now();
        let prev = self.reported.get(uid).or(pod.status.as_ref());
        let local = self.local.values().find(|l| l.uid == uid).map(|l| l.key.clone());
        let status = match local {
            Some(key) => {
                let Some((status, events)) =
                    self.pods.status(&key, pod, prev, &host_ip, &mut self.probe_failures)
                else {
                    return;
                };
                for event in events {
                    let _ = self.tx.send(Report::Event(event));
                }
                status
            }
            None => {
                if matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) {
                    return;
                }
                match self.failures.get(uid) {
                    Some(f) => status::waiting_status(pod, f.reason, Some(&f.message), &host_ip, now),
                    None => status::waiting_status(pod, "ContainerCreating", None, &host_ip, now),
                }
            }
        };
        let same_as_server = pod.status.as_ref().is_some_and(|s| same_ignoring_times(s, &status));
        if self.reported.get(uid) == Some(&status) || (same_as_server && !self.reported.contains_key(uid)) {
            return;
        }
        let (namespace, name) = names(pod);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"status": status});
        match pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.reported.insert(uid.to_string(), status);
            }
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => tracing::warn!("pod {namespace}/{name}: status update: {e}"),
        }
    }
}

fn same_ignoring_times(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

pub(crate) fn names(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The ConfigMaps and Secrets pod `pod` references, fetched from its namespace; a missing one
/// that is not optional fails the start as the kubelet does.
async fn fetch_references(client: &kube::Client, pod: &Pod) -> Result<Vec<Value>, String> {
    let (namespace, _) = names(pod);
    let refs = podrefs::references(pod);
    let mut objects = Vec::new();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    fetch_into(&config_maps, "configmap", &refs.config_maps, &mut objects).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    fetch_into(&secrets, "secret", &refs.secrets, &mut objects).await?;
    request_tokens(client, pod, &mut objects).await?;
    Ok(objects)
}

/// Requests, bound to the pod, a token for every projected serviceAccountToken source (named by
/// `volumes::token_key`), as the kubelet's token manager does.
async fn request_tokens(client: &kube::Client, pod: &Pod, out: &mut Vec<Value>) -> Result<(), String> {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    let (namespace, name) = names(pod);
    let spec = pod.spec.as_ref();
    let sa = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &namespace);
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        for (index, source) in v.projected.iter().flat_map(|p| p.sources.iter().flatten()).enumerate() {
            let Some(t) = &source.service_account_token else { continue };
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: t.audience.clone().filter(|a| !a.is_empty()).into_iter().collect(),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.clone()),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..Default::default()
            };
            let mut issued = accounts
                .create_token_request(&sa, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("serviceaccount \"{sa}\" token for volume {:?}: {e}", v.name))?;
            issued.metadata = ObjectMeta {
                name: Some(crate::kubelet::volumes::token_key(&v.name, index)),
                ..Default::default()
            };
            out.push(json!(issued));
        }
    }
    Ok(())
}

/// GETs each named object (`true`: optional, may be missing) into `out`, without managedFields.
async fn fetch_into<K>(
    api: &Api<K>,
    kind: &str,
    names: &BTreeMap<String, bool>,
    out: &mut Vec<Value>,
) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    for (name, optional) in names {
        match api.get_opt(name).await {
            Ok(Some(mut obj)) => {
                obj.meta_mut().managed_fields = None;
                out.push(json!(obj));
            }
            Ok(None) if *optional => {}
            Ok(None) => return Err(format!("{kind} \"{name}\" not found")),
            Err(e) => return Err(format!("{kind} \"{name}\": {e}")),
        }
    }
    Ok(())
}

async fn post_event(client: &kube::Client, node: &str, e: &PodEvent) {
    let events: Api<Event> = Api::namespaced(client.clone(), &e.namespace);
    let now = Time(Utc::now());
    let suffix = format!(
        "{:x}",
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos()
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix}", e.name)),
            namespace: Some(e.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.name.clone()),
            uid: Some(e.uid.clone()),
            field_path: e.container.as_ref().map(|c| format!("spec.containers{{{c}}}")),
            ..Default::default()
        },
        reason: Some(e.reason.into()),
        message: Some(e.message.clone()),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.into()) }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    if let Err(err) = events.create(&PostParams::default(), &event).await {
        tracing::debug!("event {} for pod {}/{}: {err}", e.reason, e.namespace, e.name);
    }
}

/// Why [`teardown`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error(transparent)]
    Announce(#[from] announce::AnnounceError),
    #[error(transparent)]
    Routes(#[from] routes::RouteError),
}

/// Removes what a joined node programmed on its host besides pods and service rules (which
/// `kubelet::reset` removes): the load balancer addresses it announced and its routes to other
/// nodes' pods. Nothing happens on a node that never joined.
pub fn teardown(creds: &crate::client::join::NodeCredentials) -> Result<(), TeardownError> {
    if !creds.exist() {
        return Ok(());
    }
    announce::withdraw_all(&creds.announced())?;
    routes::remove_all(&creds.routes())?;
    Ok(())
}

/// The first non-loopback IPv4 address the route to `server` leaves from (the node's
/// InternalIP when none is given).
pub fn source_address_towards(server: &str) -> Option<Ipv4Addr> {
    let host = server.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host).ok()?.find(|a| a.is_ipv4())?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // A UDP connect only picks the route; nothing is sent.
    socket.connect(addr).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}
