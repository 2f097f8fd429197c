//! The real pod runtime of a joined node: pods as `rkubelet run` makes them, kept on disk under
//! the node's root, with containers owned by runtime monitors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use serde_json::{Value, json};

use super::plan::LocalPod;
use super::{PodEvent, PodRuntime, StartFailure, names, status};
use crate::kubelet::images::{ImageResolver, local_name};
use crate::kubelet::manifest;
use crate::kubelet::node::NodeConfig;
use crate::kubelet::pod::{self, PodError, StartRequest};
use crate::kubelet::state::{self, CONFIG_SOURCE, PodState};

/// Pods as real containers on this machine.
#[derive(Debug, Clone)]
pub struct DiskPods {
    pub node: NodeConfig,
    pub registries_config: PathBuf,
}

impl PodRuntime for DiskPods {
    fn local(&self) -> BTreeMap<String, LocalPod> {
        scan_local(&self.node)
    }

    fn start(
        &self,
        pod: &Pod,
        objects: Vec<Value>,
        event: &dyn Fn(PodEvent),
    ) -> Result<String, StartFailure> {
        start_pod(&self.node, &self.registries_config, pod, objects, event)
    }

    fn remove(&self, key: &str, grace: Option<Duration>) -> Result<(), String> {
        match pod::remove(&self.node, key, grace) {
            Ok(()) | Err(PodError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn status(
        &self,
        key: &str,
        pod: &Pod,
        prev: Option<&PodStatus>,
        host_ip: &str,
        seen: &mut HashMap<String, u64>,
    ) -> Option<(PodStatus, Vec<PodEvent>)> {
        let st = state::load(&self.node.pod_dir(key)).ok()?;
        let status = computed_status(&self.node, &st, prev, host_ip, SystemTime::now());
        let events = container_events(seen, pod, &st, prev, &status);
        Some((status, events))
    }
}

/// API pods on disk, by key.
fn scan_local(node: &NodeConfig) -> BTreeMap<String, LocalPod> {
    state::list(&node.pods_dir())
        .into_iter()
        .filter_map(|key| {
            let st = state::load(&node.pod_dir(&key)).ok()?;
            if !from_api(&st.pod) {
                return None;
            }
            let uid = st.pod.metadata.uid.clone()?;
            Some((key.clone(), LocalPod { key, uid }))
        })
        .collect()
}

fn from_api(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_SOURCE)).is_some_and(|s| s == "api")
}

/// Events the kubelet emits from container state: `BackOff` when a container starts waiting in
/// CrashLoopBackOff, `Unhealthy` for each failed probe check (of the last minute; `seen` holds
/// the checks already reported, by container id).
fn container_events(
    seen: &mut HashMap<String, u64>,
    pod: &Pod,
    st: &PodState,
    prev: Option<&PodStatus>,
    now: &PodStatus,
) -> Vec<PodEvent> {
    let mut events = Vec::new();
    let waiting = |s: Option<&PodStatus>, name: &str| {
        s.and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == name))
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
    };
    let (namespace, name) = names(pod);
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    for r in &st.containers {
        let backing_off = waiting(Some(now), &r.name).as_deref() == Some("CrashLoopBackOff");
        if backing_off && waiting(prev, &r.name).as_deref() != Some("CrashLoopBackOff") {
            let message =
                format!("Back-off restarting failed container {} in pod {name}_{namespace}({uid})", r.name);
            events.push(PodEvent::new(pod, Some(&r.name), "BackOff", message).warning());
        }
        if let Some(f) = &r.probe_failure
            && seen.insert(r.id.clone(), f.at_ms) != Some(f.at_ms)
            && state::unix_now_ms().saturating_sub(f.at_ms) < 60_000
        {
            let message = format!("{} probe failed", f.probe);
            events.push(PodEvent::new(pod, Some(&r.name), "Unhealthy", message).warning());
        }
    }
    events
}

fn computed_status(
    node: &NodeConfig,
    st: &PodState,
    prev: Option<&PodStatus>,
    host_ip: &str,
    now: SystemTime,
) -> PodStatus {
    let runtime = node.runtime();
    let running = |id: &str| pod::is_running(&runtime, id);
    status::pod_status(st, prev, &status::Observed { running: &running, host_ip, now })
}

/// The Pod as the node keeps it: marked as coming from the API server, without status and
/// server bookkeeping.
fn node_copy(pod: &Pod) -> Value {
    let mut pod = pod.clone();
    pod.status = None;
    pod.metadata.managed_fields = None;
    pod.metadata.annotations.get_or_insert_default().insert(CONFIG_SOURCE.into(), "api".into());
    let mut value = json!(pod);
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Pod");
    value
}

/// Pulls the pod's images (with Pulling/Pulled events) and starts it with the same code as
/// `rkubelet run`; returns its key.
fn start_pod(
    node: &NodeConfig,
    registries_config: &Path,
    api_pod: &Pod,
    objects: Vec<Value>,
    event: &dyn Fn(PodEvent),
) -> Result<String, StartFailure> {
    let pod_started = Instant::now();
    let failed = |reason: &'static str, message: String| {
        event(PodEvent::new(api_pod, None, "Failed", format!("Error: {message}")).warning());
        StartFailure { reason, message }
    };
    let manifest = manifest::from_objects(std::iter::once(node_copy(api_pod)).chain(objects))
        .map_err(|e| failed("CreateContainerConfigError", e.to_string()))?;
    let pod = &manifest.pods[0];
    let Some(spec) = pod.spec.as_ref() else {
        return Err(failed("CreateContainerConfigError", "spec is required".into()));
    };
    let store = node.image_store().map_err(|e| failed("CreateContainerError", e.to_string()))?;
    let pull_secrets: Vec<&Secret> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .filter_map(|r| manifest.secrets.iter().find(|s| s.metadata.name.as_deref() == Some(r.name.as_str())))
        .collect();
    let resolver = ImageResolver { store: &store, registries_config, pull_secrets };
    let all = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    let mut seen = BTreeSet::new();
    let tags = store.tags().unwrap_or_default();
    for c in all {
        let image = c.image.clone().unwrap_or_default();
        if !seen.insert(image.clone()) {
            continue;
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into());
        let present = crate::image::reference::Reference::parse(&image)
            .ok()
            .is_some_and(|r| tags.contains_key(&local_name(&r)));
        if present && policy != "Always" {
            let message = format!("Container image \"{image}\" already present on machine");
            event(PodEvent::new(api_pod, Some(&c.name), "Pulled", message));
            continue;
        }
        event(PodEvent::new(api_pod, Some(&c.name), "Pulling", format!("Pulling image \"{image}\"")));
        let started = Instant::now();
        let pulled = resolver.ensure(&image, &policy);
        crate::kubelet::metrics::image_pull(started.elapsed(), pulled.is_ok());
        match pulled {
            Ok(_) => {
                let secs = started.elapsed().as_secs_f64();
                let message = format!("Successfully pulled image \"{image}\" in {secs:.3}s");
                event(PodEvent::new(api_pod, Some(&c.name), "Pulled", message));
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{image}\": {e}");
                event(PodEvent::new(api_pod, Some(&c.name), "Failed", message.clone()).warning());
                return Err(StartFailure { reason: "ErrImagePull", message });
            }
        }
    }
    let req =
        StartRequest { manifest: &manifest, pod, registries_config, init_timeout: Duration::from_secs(300) };
    let started = pod_started;
    match crate::kubelet::metrics::runtime_op("run_pod", || pod::start(node, &req)) {
        Ok(st) => {
            crate::kubelet::metrics::global().pod_start.observe(started.elapsed().as_secs_f64());
            for c in st.init_containers.iter().chain(&st.containers).filter(|c| c.started_at != 0) {
                event(PodEvent::new(
                    api_pod,
                    Some(&c.name),
                    "Created",
                    format!("Created container {}", c.name),
                ));
                event(PodEvent::new(
                    api_pod,
                    Some(&c.name),
                    "Started",
                    format!("Started container {}", c.name),
                ));
            }
            Ok(st.key())
        }
        Err(e @ PodError::Invalid { .. }) => Err(failed("CreateContainerConfigError", e.to_string())),
        Err(e) => Err(failed("RunContainerError", e.to_string())),
    }
}
