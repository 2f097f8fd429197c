//! The long-running node agent (`rkubelet serve`): a sync loop over the pods on disk that enforces
//! restart policies (with CrashLoopBackOff), runs liveness and readiness probes and keeps pod status
//! (phase, restarts, readiness) in each pod's state file.
//!
//! Design: the CLI (`rkubelet run`) starts pods itself, synchronously, so errors reach the user as
//! one line and `run` returns once the containers run; it then makes sure an agent is running
//! (starting `rkubelet serve` in the background when none holds the agent lock). Containers are
//! owned by runtime monitor processes, not by the agent, and all pod state is on disk, so a killed
//! agent loses nothing: a new agent re-adopts every pod by reading `<root>/pods/*/state.json`. The
//! CLI and the agent serialise on a per-pod lock file.

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

use super::backoff::BackoffPolicy;
use super::node::NodeConfig;
use super::pod;
use super::probe::{ProbeState, ProbeTiming, Verdict};
use super::prober;
use super::restart::RestartPolicy;
use super::sandbox::{self, Pause};
use super::state::{self, ContainerRecord, Exit, Phase, PodState, unix_now, unix_now_ms};
use crate::runtime::Status;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent lock {path}: {source}")]
    Lock { path: String, source: std::io::Error },
    #[error("an agent is already running for {0}")]
    Running(String),
}

/// Agent settings.
#[derive(Debug, Clone, Copy)]
pub struct AgentConfig {
    /// Pause between sync passes.
    pub period: Duration,
    pub backoff: BackoffPolicy,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { period: Duration::from_millis(250), backoff: BackoffPolicy::default() }
    }
}

/// Probe state of one container run.
#[derive(Debug)]
struct Probes {
    started_at: u64,
    /// Until it succeeds, liveness and readiness wait; its failure kills the container.
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
}

/// The agent's in-memory bookkeeping (everything durable is on disk).
#[derive(Debug)]
pub struct Agent {
    node: NodeConfig,
    config: AgentConfig,
    probes: HashMap<String, Probes>,
}

/// Holds the node's agent lock while the agent runs.
#[derive(Debug)]
pub struct AgentLock {
    _lock: Flock<fs::File>,
}

/// Takes the agent lock of the node (`<run-dir>/agent.lock`) without waiting.
pub fn try_lock(node: &NodeConfig) -> Result<Option<AgentLock>, AgentError> {
    let path = node.run_dir.join("agent.lock");
    let err = |source| AgentError::Lock { path: path.display().to_string(), source };
    fs::create_dir_all(&node.run_dir).map_err(err)?;
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(AgentLock { _lock: l })),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(err(e.into())),
    }
}

/// Whether an agent holds the node's lock.
pub fn is_running(node: &NodeConfig) -> bool {
    matches!(try_lock(node), Ok(None))
}

impl Agent {
    /// An agent for `node`.
    pub fn new(node: NodeConfig, config: AgentConfig) -> Agent {
        Agent { node, config, probes: HashMap::new() }
    }

    /// Runs sync passes until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.sync_once(Instant::now(), unix_now_ms());
            reap_children();
            std::thread::sleep(self.config.period);
        }
    }

    /// One pass over every pod on disk; `now` drives probes, `now_ms` (Unix ms) the back-off.
    pub fn sync_once(&mut self, now: Instant, now_ms: u64) {
        for name in state::list(&self.node.pods_dir()) {
            if let Err(e) = self.sync_pod(&name, now, now_ms) {
                tracing::warn!("pod {name}: {e}");
            }
        }
    }

    fn sync_pod(&mut self, name: &str, now: Instant, now_ms: u64) -> Result<(), String> {
        let dir = self.node.pod_dir(name);
        let _lock = match pod::lock(&dir, false, false) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if !state::state_file(&dir).exists() {
            return Ok(());
        }
        let mut st = state::load(&dir).map_err(|e| e.to_string())?;
        if st.stopping {
            return Ok(());
        }
        if matches!(st.phase, Phase::Pending | Phase::Running)
            && let Some(pause) = st.pause
            && !pause.alive()
        {
            return self.recreate_sandbox(name, &dir, st, now_ms);
        }
        match st.phase {
            Phase::Pending => return self.sync_init(name, &dir, st, now_ms),
            Phase::Running => {}
            Phase::Succeeded | Phase::Failed => return Ok(()),
        }
        let before = serde_json::to_string(&st.containers).unwrap_or_default();
        let spec = st.pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref()).unwrap_or_default();
        let runtime = self.node.runtime();
        // Probes connect from the pod's network namespace; a hostNetwork pod's is the node's.
        let netns = if spec.host_network == Some(true) {
            self.node.node_netns.clone()
        } else {
            Some(self.node.run_dir.join("netns").join(name))
        };
        for record in st.containers.iter_mut().filter(|c| !c.done) {
            let id = record.id.clone();
            if let Some(at) = record.restart_at_ms {
                if now_ms >= at {
                    self.probes.remove(&id);
                    match pod::start_saved(&runtime, &dir, record) {
                        Ok(()) => {
                            record.restarts += 1;
                            record.ready = spec
                                .containers
                                .iter()
                                .find(|c| c.name == record.name)
                                .is_some_and(|c| c.readiness_probe.is_none());
                            tracing::info!("pod {name}: restarted container {}", record.name);
                        }
                        Err(e) => {
                            tracing::warn!("pod {name}: restart {}: {e}", record.name);
                            schedule_restart(record, self.config.backoff, now_ms);
                        }
                    }
                }
                continue;
            }
            let status = runtime.state(&id).map(|s| s.status).unwrap_or(Status::Stopped);
            if status == Status::Stopped {
                let code = record_exit(&runtime, record);
                record.ready = false;
                self.probes.remove(&id);
                if policy.restarts(code) {
                    schedule_restart(record, self.config.backoff, now_ms);
                } else {
                    record.done = true;
                }
                continue;
            }
            let Some(container) = spec.containers.iter().find(|c| c.name == record.name) else { continue };
            let probes = self
                .probes
                .entry(id.clone())
                .or_insert_with(|| new_probes(container, record.started_at, now));
            if probes.started_at != record.started_at {
                *probes = new_probes(container, record.started_at, now);
            }
            let named: Vec<(String, i32)> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect();
            let ip = st.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
            if let (Some(state), Some(probe)) = (probes.startup.as_mut(), container.startup_probe.as_ref())
                && state.verdict() != Some(Verdict::Success)
            {
                if state.due(now) {
                    let ok = prober::check(probe, &runtime, &id, netns.as_deref(), ip, &named);
                    note_probe(record, "Startup", ok, now_ms);
                    if state.record(Instant::now(), ok) == Some(Verdict::Failure) {
                        tracing::info!(
                            "pod {name}: container {} failed its startup probe; killing it",
                            record.name
                        );
                        let _ = runtime.kill(&id, Signal::SIGKILL, true);
                    }
                }
                continue;
            }
            if let (Some(state), Some(probe)) = (probes.liveness.as_mut(), container.liveness_probe.as_ref())
                && state.due(now)
            {
                let ok = prober::check(probe, &runtime, &id, netns.as_deref(), ip, &named);
                note_probe(record, "Liveness", ok, now_ms);
                if state.record(Instant::now(), ok) == Some(Verdict::Failure) && !ok {
                    tracing::info!(
                        "pod {name}: container {} failed its liveness probe; killing it",
                        record.name
                    );
                    let _ = runtime.kill(&id, Signal::SIGKILL, true);
                }
            }
            if let (Some(state), Some(probe)) =
                (probes.readiness.as_mut(), container.readiness_probe.as_ref())
                && state.due(now)
            {
                let ok = prober::check(probe, &runtime, &id, netns.as_deref(), ip, &named);
                note_probe(record, "Readiness", ok, now_ms);
                record.ready = state.record(Instant::now(), ok) == Some(Verdict::Success);
            }
        }
        if st.containers.iter().all(|c| c.done) {
            st.phase = if st.containers.iter().all(|c| c.last_exit.is_some_and(|e| e.code == 0)) {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        if serde_json::to_string(&st.containers).unwrap_or_default() != before || st.phase != Phase::Running {
            state::save(&dir, &st).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Agent {
    /// The pause process of the pod's shared pid namespace died, and every container with its
    /// namespace; a path to a reused pid must never be joined. As the kubelet does for a dead
    /// sandbox: under restartPolicy Never the pod Failed; otherwise a new pause process starts,
    /// each container's saved spec names its namespace, and the pod starts over from its init
    /// containers, with the usual back-off (each container counts a restart).
    fn recreate_sandbox(
        &self,
        name: &str,
        dir: &std::path::Path,
        mut st: PodState,
        now_ms: u64,
    ) -> Result<(), String> {
        let runtime = self.node.runtime();
        for c in st.init_containers.iter_mut().chain(st.containers.iter_mut()) {
            if !c.done && c.started_at != 0 && c.restart_at_ms.is_none() {
                record_exit(&runtime, c);
            }
        }
        let spec = st.pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref()).unwrap_or_default();
        let restarted = if policy.recreates_sandbox() {
            self.new_shared_pid_namespace(name, dir, &st)
        } else {
            Err("restartPolicy Never".into())
        };
        let backoff = self.config.backoff;
        match restarted {
            Ok(pause) => {
                tracing::warn!(
                    "pod {name}: the pause process of its shared pid namespace died; pod sandbox recreated"
                );
                st.pause = Some(pause);
                // Containers done (succeeded under OnFailure) are not started again.
                let apps = st.containers.iter_mut().filter(|c| !c.done);
                if st.init_containers.is_empty() {
                    // The running pass restarts each container once its back-off allows.
                    for c in apps {
                        c.ready = false;
                        schedule_restart(c, backoff, now_ms);
                    }
                } else {
                    // The init containers run again first, the first one after its back-off.
                    st.phase = Phase::Pending;
                    for (i, c) in st.init_containers.iter_mut().enumerate() {
                        c.done = false;
                        if i == 0 {
                            schedule_restart(c, backoff, now_ms);
                        } else {
                            c.restart_at_ms = Some(now_ms);
                        }
                    }
                    for c in apps {
                        c.restarts += u32::from(c.started_at != 0);
                        c.ready = false;
                        c.restart_at_ms = None;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    "pod {name}: the pause process of its shared pid namespace died ({e}); pod Failed"
                );
                st.phase = Phase::Failed;
                for c in st.init_containers.iter_mut().chain(st.containers.iter_mut()) {
                    c.done = true;
                    c.restart_at_ms = None;
                }
            }
        }
        state::save(dir, &st).map_err(|e| e.to_string())
    }

    /// Starts a new pause process for the pod and points every container's saved spec at its
    /// namespace (the old containers are removed).
    fn new_shared_pid_namespace(
        &self,
        name: &str,
        dir: &std::path::Path,
        st: &PodState,
    ) -> Result<Pause, String> {
        let binary = crate::runtime::monitor::installed_binary().ok_or("no rkube-monitor binary")?;
        let pause = sandbox::start_pause(&binary, &self.node.cgroup_root, &pod::pod_cgroup(&self.node, name))
            .map_err(|e| e.to_string())?;
        let runtime = self.node.runtime();
        let repointed = st.init_containers.iter().chain(&st.containers).try_for_each(|c| {
            let _ = runtime.delete(&c.id, true);
            pod::repoint_pid_namespace(dir, &c.name, &pause.pid_namespace())
        });
        match repointed {
            Ok(()) => Ok(pause),
            Err(e) => {
                pause.kill(Duration::from_secs(5));
                Err(e.to_string())
            }
        }
    }

    /// Drives a Pending pod through its init containers, in order: starts the next one, retries a
    /// failed one with back-off, and starts the app containers once all succeeded.
    fn sync_init(
        &self,
        name: &str,
        dir: &std::path::Path,
        mut st: PodState,
        now_ms: u64,
    ) -> Result<(), String> {
        let before = serde_json::to_string(&st.init_containers).unwrap_or_default();
        let runtime = self.node.runtime();
        if let Some(record) = pod::pending_init(&mut st) {
            let due = match record.restart_at_ms {
                Some(at) => now_ms >= at,
                None => record.started_at == 0,
            };
            if due {
                let again = record.started_at != 0;
                match pod::start_saved(&runtime, dir, record) {
                    Ok(()) if again => {
                        record.restarts += 1;
                        tracing::info!("pod {name}: restarted init container {}", record.name);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!("pod {name}: start init container {}: {e}", record.name);
                        schedule_restart(record, self.config.backoff, now_ms);
                    }
                }
            } else if record.restart_at_ms.is_none()
                && runtime.state(&record.id).map(|s| s.status).unwrap_or(Status::Stopped) == Status::Stopped
            {
                if record_exit(&runtime, record) == 0 {
                    let _ = runtime.delete(&record.id, true);
                    record.done = true;
                } else {
                    schedule_restart(record, self.config.backoff, now_ms);
                }
            }
        }
        let mut changed = serde_json::to_string(&st.init_containers).unwrap_or_default() != before;
        if pod::pending_init(&mut st).is_none() {
            changed = true;
            match pod::start_app_containers(&runtime, dir, &mut st) {
                Ok(()) => {
                    st.phase = Phase::Running;
                    tracing::info!("pod {name}: init containers done; pod running");
                }
                Err(e) => {
                    tracing::warn!("pod {name}: start containers: {e}");
                    st.phase = Phase::Failed;
                    st.containers.iter_mut().for_each(|c| c.done = true);
                }
            }
        }
        if changed {
            state::save(dir, &st).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Records how a stopped container's run ended and returns the exit code.
/// Remembers a failed probe check on the record (saved with the pod's state).
fn note_probe(record: &mut ContainerRecord, probe: &str, ok: bool, now_ms: u64) {
    if !ok {
        record.probe_failure = Some(state::ProbeFailure { probe: probe.into(), at_ms: now_ms });
    }
}

fn record_exit(runtime: &crate::runtime::Runtime, record: &mut ContainerRecord) -> i32 {
    let exit = runtime.wait(&record.id, Some(Duration::from_millis(200))).ok();
    let code = exit.map_or(255, |e| e.code);
    record.last_exit = Some(Exit { code, oom_killed: exit.is_some_and(|e| e.oom_killed), at: unix_now() });
    code
}

/// Schedules the restart of a container that exited (or failed to start) at `now_ms`: the first
/// restart is immediate, back-off applies from the second crash on (as the kubelet does).
fn schedule_restart(record: &mut ContainerRecord, policy: BackoffPolicy, now_ms: u64) {
    let delay = record.backoff.record_failure(policy, now_ms);
    let delay = if record.restarts == 0 { Duration::ZERO } else { delay };
    record.restart_at_ms = Some(now_ms.saturating_add(delay.as_millis() as u64));
}

/// Reaps exited children (monitors of containers this agent restarted); their exit codes are
/// recorded by the monitors themselves in the runtime state.
fn reap_children() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

fn new_probes(container: &Container, started_at: u64, now: Instant) -> Probes {
    let make =
        |p: Option<&k8s_openapi::api::core::v1::Probe>| p.map(|p| ProbeState::new(ProbeTiming::of(p), now));
    Probes {
        started_at,
        startup: make(container.startup_probe.as_ref()),
        liveness: make(container.liveness_probe.as_ref()),
        readiness: make(container.readiness_probe.as_ref()),
    }
}

/// Writes the agent's pid file.
pub fn write_pid(node: &NodeConfig) -> std::io::Result<()> {
    fs::write(node.agent_pid_file(), std::process::id().to_string())
}

/// Reads the agent's pid file.
pub fn read_pid(node: &NodeConfig) -> Option<i32> {
    fs::read_to_string(node.agent_pid_file()).ok()?.trim().parse().ok()
}

/// Removes the pid file (on clean shutdown).
pub fn remove_pid(node: &NodeConfig) {
    let _ = fs::remove_file(node.agent_pid_file());
}
