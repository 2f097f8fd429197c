//! What the kubelet persists per pod (`<root>/pods/<name>/state.json`), written atomically, so a
//! restarted or crashed agent re-adopts every pod from disk: the containers themselves are owned
//! by runtime monitors that outlive the agent.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use super::sandbox::Pause;

/// Errors reading or writing pod state, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("pod state {path}: {step}: {source}")]
    Io { path: PathBuf, step: &'static str, source: io::Error },
    #[error("pod state {path}: parse: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// Pod phase, as Kubernetes reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// How a container run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: i32,
    pub oom_killed: bool,
    /// Unix seconds.
    pub at: u64,
}

/// One (app) container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// Runtime container id.
    pub id: String,
    /// Image reference as written in the manifest.
    pub image: String,
    /// Overlay lower dirs (topmost first).
    pub layers: Vec<PathBuf>,
    pub restarts: u32,
    /// Unix seconds of the current run's start.
    pub started_at: u64,
    pub last_exit: Option<Exit>,
    /// The container exited and will not be restarted.
    pub done: bool,
    /// Readiness (true when there is no readiness probe).
    pub ready: bool,
    /// CrashLoopBackOff state, kept on disk so a new agent keeps the delay.
    #[serde(default)]
    pub backoff: Backoff,
    /// Unix milliseconds at which the exited container is started again (it is backing off).
    #[serde(default)]
    pub restart_at_ms: Option<u64>,
    /// Manifest digest of the image the container was created from (its `imageID`).
    #[serde(default)]
    pub image_digest: String,
    /// The last failed probe check (a joined node reports it as an `Unhealthy` Event).
    #[serde(default)]
    pub probe_failure: Option<ProbeFailure>,
}

/// A failed probe check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailure {
    /// `Startup`, `Liveness` or `Readiness`.
    pub probe: String,
    /// Unix milliseconds of the check.
    pub at_ms: u64,
}

/// The persisted state of a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    /// The pod as loaded (defaults applied).
    pub pod: Pod,
    pub uid: String,
    /// Unix seconds.
    pub created: u64,
    pub phase: Phase,
    pub ip: Option<Ipv4Addr>,
    pub containers: Vec<ContainerRecord>,
    /// Init containers, in order; `done` once one exited 0. While one is left the pod is Pending.
    #[serde(default)]
    pub init_containers: Vec<ContainerRecord>,
    /// PID 1 of the pod's shared pid namespace (`shareProcessNamespace` only).
    #[serde(default)]
    pub pause: Option<Pause>,
    /// Set by `stop`/`rm`: the agent must not restart anything any more.
    pub stopping: bool,
}

impl PodState {
    /// The pod's name.
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    /// The pod's key on this node (its directory name, the prefix of its container ids).
    pub fn key(&self) -> String {
        pod_key(&self.pod)
    }

    /// The record of container `name`.
    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.containers.iter_mut().find(|c| c.name == name)
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Milliseconds since the epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// The state file of the pod directory `dir`.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the state of the pod in `dir`.
pub fn load(dir: &Path) -> Result<PodState, StateError> {
    let path = state_file(dir);
    let data =
        fs::read(&path).map_err(|source| StateError::Io { path: path.clone(), step: "read", source })?;
    serde_json::from_slice(&data).map_err(|source| StateError::Parse { path, source })
}

/// Writes the state of the pod in `dir` atomically (temp file + rename).
pub fn save(dir: &Path, state: &PodState) -> Result<(), StateError> {
    let path = state_file(dir);
    let tmp = dir.join(".state.json.tmp");
    let data = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
        path: path.clone(),
        step: "encode",
        source: e.into(),
    })?;
    fs::write(&tmp, data).map_err(|source| StateError::Io { path: tmp.clone(), step: "write", source })?;
    fs::rename(&tmp, &path).map_err(|source| StateError::Io { path: path.clone(), step: "rename", source })
}

/// Names of all pods with a state file under `pods_dir`, sorted.
pub fn list(pods_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| state_file(&e.path()).exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The annotation the node agent puts on Pods it runs for the API server (the kubelet's
/// `kubernetes.io/config.source`); file pods (`rkubelet run`) have none.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";

/// The key of a pod on this node: its directory under `pods/`, the prefix of its container ids,
/// its cgroup and network names. File pods keep their bare name (`rkubelet ps`/`rm NAME`); pods
/// from the API server are keyed by namespace, name and uid, so same-named pods of two
/// namespaces, or a pod re-created under the name of one still stopping, never collide.
pub fn pod_key(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    let from_api = meta.annotations.as_ref().and_then(|a| a.get(CONFIG_SOURCE)).is_some_and(|s| s == "api");
    if !from_api {
        return name.to_string();
    }
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let uid = meta.uid.as_deref().unwrap_or_default();
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    // Names are DNS subdomains of up to 253 characters; keep keys well under a file name's 255
    // bytes once a container name is appended to make a container id.
    let name: String = name.chars().take(100).collect();
    format!("{ns}_{name}_{short}")
}

/// Runtime container id of container `container` in pod `pod`.
pub fn container_id(pod: &str, container: &str) -> String {
    format!("{pod}_{container}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let pod_dir = dir.path().join("web");
        fs::create_dir(&pod_dir).unwrap();
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        let state = PodState {
            pod,
            uid: "u".into(),
            created: 1,
            phase: Phase::Running,
            ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
            containers: vec![],
            init_containers: vec![],
            pause: None,
            stopping: false,
        };
        save(&pod_dir, &state).unwrap();
        let back = load(&pod_dir).unwrap();
        assert_eq!(back.name(), "web");
        assert_eq!(back.ip, state.ip);
        assert_eq!(list(dir.path()), vec!["web".to_string()]);
        assert_eq!(container_id("web", "nginx"), "web_nginx");
    }

    #[test]
    fn api_pods_are_keyed_by_namespace_name_and_uid() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        assert_eq!(pod_key(&pod), "web");
        pod.metadata.namespace = Some("team-a".into());
        pod.metadata.uid = Some("0f3c9a2e-1111-2222-3333-444455556666".into());
        assert_eq!(pod_key(&pod), "web", "file pods keep their name");
        pod.metadata.annotations = Some([(CONFIG_SOURCE.to_string(), "api".to_string())].into());
        assert_eq!(pod_key(&pod), "team-a_web_0f3c9a2e");
        pod.metadata.namespace = Some("team-b".into());
        assert_ne!(pod_key(&pod), "team-a_web_0f3c9a2e");
        pod.metadata.name = Some("x".repeat(253));
        assert!(pod_key(&pod).len() < 130);
    }
}
