//! Node teardown (`rkubelet reset`): stops the agent, removes every pod (only with `force`),
//! then the node-level objects pods leave behind on purpose — the bridge, the node NAT chains and
//! jumps, the Service rules of either proxy mode (iptables chains, the nftables table), orphaned
//! pins/veths/IPs, the IPAM state, the empty cgroup parent and the run files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::agent;
use super::node::NodeConfig;
use super::pod::{self, PodError};
use super::sandbox;
use crate::network::PodNetworkError;

/// Why a reset stopped; one line naming the step and object.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{count} pod(s) still on this node ({names}); remove them first or use --force", count = .0.len(), names = .0.join(", "))]
    PodsExist(Vec<String>),
    #[error("stop agent (pid {pid}): it still holds {lock} after {waited:?}")]
    AgentStuck { pid: i32, lock: PathBuf, waited: Duration },
    #[error("reset: {0}")]
    Agent(#[from] agent::AgentError),
    #[error("reset: {0}")]
    Pod(#[from] PodError),
    #[error("reset network: {0}")]
    Network(Box<PodNetworkError>),
    #[error("reset: {0}")]
    Netns(Box<crate::network::netns::NetnsError>),
    #[error("reset: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("reset: {step} {path}: {source}")]
    Io { step: &'static str, path: PathBuf, source: io::Error },
}

impl From<PodNetworkError> for ResetError {
    fn from(e: PodNetworkError) -> Self {
        ResetError::Network(Box::new(e))
    }
}

/// Names of every pod directory on the node (with a state file or debris of a start).
pub fn pod_names(node: &NodeConfig) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(node.pods_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Tears the node down. Refuses while pods exist unless `force`, which removes them first (with
/// `grace`, default: each pod's own). Idempotent: a second reset finds nothing and succeeds.
/// The agent lock is held from the agent's stop to the end, so an agent started meanwhile (by a
/// supervisor, say) refuses to run instead of setting pods up again under the reset.
pub fn reset(node: &NodeConfig, force: bool, grace: Option<Duration>) -> Result<(), ResetError> {
    let pods = pod_names(node);
    if !pods.is_empty() && !force {
        return Err(ResetError::PodsExist(pods));
    }
    let _lock = stop_agent(node, Duration::from_secs(10))?;
    // Listed again: the agent may have started pods since the first look.
    let pods = pod_names(node);
    for name in &pods {
        match pod::remove(node, name, grace) {
            Ok(()) | Err(PodError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let network = node.network()?;
    network.garbage_collect(&[])?;
    network.reset_node()?;
    let proxy = crate::proxy::ProxyConfig { prefix: node.chain_prefix.clone(), ..Default::default() };
    crate::network::netns::run_in_netns(node.node_netns.as_deref(), || {
        crate::proxy::backend::flush_all(&proxy)
    })
    .map_err(|e| ResetError::Netns(Box::new(e)))??;
    network.remove_state()?;
    remove_pins(&node.ipc_dir())?;
    remove_cgroup_parent(&node.cgroup_root, &node.cgroup_parent);
    for file in [node.agent_pid_file(), node.run_dir.join("agent.lock")] {
        remove_if_present(&file, |p| fs::remove_file(p))?;
    }
    for dir in [node.run_dir.join("runtime"), node.pods_dir()] {
        // Only when empty: anything else there is not ours to delete.
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

/// Stops a running agent (SIGTERM to its recorded pid), waits until it released the lock and
/// returns the lock, taken for the caller.
fn stop_agent(node: &NodeConfig, wait: Duration) -> Result<agent::AgentLock, ResetError> {
    let deadline = Instant::now() + wait;
    let mut signalled = 0;
    loop {
        if let Some(lock) = agent::try_lock(node)? {
            return Ok(lock);
        }
        // The pid file may still name an agent that was killed, until the one holding the lock now
        // records itself: signal whichever pid it names, once each.
        let pid = agent::read_pid(node).unwrap_or(0);
        if pid > 0 && pid != signalled {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            signalled = pid;
        }
        if Instant::now() > deadline {
            return Err(ResetError::AgentStuck { pid, lock: node.run_dir.join("agent.lock"), waited: wait });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts and removes leftover namespace pins in `dir`, then `dir` itself.
fn remove_pins(dir: &Path) -> Result<(), ResetError> {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        sandbox::remove_mount(&entry.path()).map_err(|e| ResetError::Io {
            step: "remove pin",
            path: entry.path(),
            source: io::Error::other(e),
        })?;
    }
    remove_if_present(dir, |p| fs::remove_dir(p))
}

/// Removes the pods' cgroup parent when it is empty (left alone if processes still use it).
fn remove_cgroup_parent(root: &Path, parent: &str) {
    let parent = parent.trim_matches('/');
    if parent.is_empty() {
        return;
    }
    for dir in sandbox::cgroup_dirs(root, parent) {
        for child in fs::read_dir(&dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
            let _ = fs::remove_dir(child.path());
        }
        let _ = fs::remove_dir(&dir);
    }
}

fn remove_if_present(path: &Path, remove: fn(&Path) -> io::Result<()>) -> Result<(), ResetError> {
    match remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ResetError::Io { step: "remove", path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_pods_and_names_them_in_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeConfig {
            root: dir.path().join("root"),
            run_dir: dir.path().join("run"),
            pod_cidr: "10.1.0.0/24".parse().unwrap(),
            cluster_cidr: None,
            bridge: "rkt0".into(),
            cgroup_root: dir.path().join("cg"),
            cgroup_parent: "rkube".into(),
            node_netns: None,
            veth_prefix: "rkv".into(),
            chain_prefix: "RKUBE".into(),
            dns: Default::default(),
            seccomp_default: true,
        };
        assert!(pod_names(&node).is_empty());
        for name in ["web", "db"] {
            fs::create_dir_all(node.pod_dir(name)).unwrap();
        }
        fs::write(node.pods_dir().join("stray-file"), "").unwrap();
        assert_eq!(pod_names(&node), ["db", "web"]);
        let err = reset(&node, false, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 pod(s) still on this node (db, web); remove them first or use --force"
        );
        assert!(node.pod_dir("web").exists(), "a refused reset changes nothing");

        // Stopping the agent leaves the reset holding its lock: an agent started meanwhile cannot
        // take it (and so cannot set pods up again under the reset).
        let lock = stop_agent(&node, Duration::from_secs(1)).unwrap();
        assert!(agent::try_lock(&node).unwrap().is_none(), "the lock is the reset's");
        drop(lock);
        assert!(agent::try_lock(&node).unwrap().is_some());
    }
}
