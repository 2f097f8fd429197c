//! Pod lifecycle on the node: start (images → network → IPC → cgroup → files and volumes →
//! init containers in order → containers), graceful stop (preStop, SIGTERM, grace, SIGKILL) and
//! removal. Every start failure removes what it created, so a failed `run` leaves nothing behind.
//! Used by the CLI (`run`, `stop`, `rm`) and by the agent (restarts).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodSpec};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

use super::command;
use super::env::{self, EnvSources, PodFacts};
use super::images::{ImageInfo, ImageResolver};
use super::manifest::Manifest;
use super::node::NodeConfig;
use super::resources;
use super::restart::RestartPolicy;
use super::sandbox;
use super::security::{self, Seccomp};
use super::spec::{self, BindMount, HostNamespaces, SpecInput};
use super::state::{self, ContainerRecord, Phase, PodState, container_id, unix_now};
use super::volumes;
use crate::network::dns::{self, DnsConfig};
use crate::network::{HostPort, PodNetworkInfo, Protocol};
use crate::runtime::rootfs::RootfsSource;
use crate::runtime::{CreateRequest, ExecRequest, Runtime, Status};

/// Why a pod operation failed; one line naming the pod and the step.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod:?}: {message}")]
    Invalid { pod: String, message: String },
    #[error("pod {pod:?} already exists")]
    Exists { pod: String },
    #[error("pod {pod:?} not found")]
    NotFound { pod: String },
    #[error("pod {pod:?}: {step}: {message}")]
    Step { pod: String, step: &'static str, message: String },
}

fn step<E: std::fmt::Display>(pod: &str, step: &'static str) -> impl FnOnce(E) -> PodError {
    let pod = pod.to_string();
    move |e| PodError::Step { pod, step, message: e.to_string() }
}

/// The pod's cgroup, relative to the hierarchy root.
pub fn pod_cgroup(node: &NodeConfig, pod: &str) -> String {
    format!("{}/pod-{pod}", node.cgroup_parent.trim_matches('/'))
}

/// Takes the pod's lock (serialises the CLI and the agent on one pod). Only `start` creates the
/// pod directory and lock file (`create`); everyone else fails with NotFound once the pod is gone,
/// so nobody re-creates a directory that `rm` is removing.
pub fn lock(dir: &Path, wait: bool, create: bool) -> io::Result<Option<Flock<fs::File>>> {
    if create {
        fs::create_dir_all(dir)?;
    }
    let file = fs::OpenOptions::new().create(create).truncate(false).write(true).open(dir.join("lock"))?;
    let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// The hostPorts of a pod's containers (none for a hostNetwork pod: its ports are the node's).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let spec = pod.spec.as_ref().filter(|s| s.host_network != Some(true));
    spec.iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p != 0)?;
            Some(HostPort {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
            })
        })
        .collect()
}

fn facts(pod: &Pod, ip: &str) -> PodFacts {
    let meta = &pod.metadata;
    PodFacts {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        uid: meta.uid.clone().unwrap_or_default(),
        node_name: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
        service_account: pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        host_ip: String::new(),
        pod_ip: ip.to_string(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
    }
}

/// Whether the process that starts `pod` must run from a sealed binary (see `runtime::exe_seal`).
/// Each container's init execs through the sealed `rkube-monitor` and, alone in a pid namespace
/// of its own until then, is out of every container process's sight; so only
/// [`enters_visible_containers`] needs it. (The agent, which runs probes and restarts, always
/// seals itself.)
pub fn start_needs_sealed_caller(pod: &Pod) -> bool {
    crate::runtime::monitor::installed_binary().is_none() || enters_visible_containers(pod)
}

/// Whether starting `pod` puts a process of ours into a container that others can already see: a
/// postStart exec hook, an init joining the pod's shared pid namespace, or one in the node's.
fn enters_visible_containers(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    let post_start_exec = spec
        .containers
        .iter()
        .any(|c| c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()).is_some_and(|h| h.exec.is_some()));
    spec.share_process_namespace == Some(true) || spec.host_pid == Some(true) || post_start_exec
}

/// Inputs of one pod start besides the node.
#[derive(Debug)]
pub struct StartRequest<'a> {
    pub manifest: &'a Manifest,
    pub pod: &'a Pod,
    pub registries_config: &'a Path,
    /// How long init containers may run in total.
    pub init_timeout: Duration,
}

/// A container about to be created: what the spec is built from.
struct Planned<'a> {
    container: &'a Container,
    image: ImageInfo,
    seccomp: Seccomp,
}

/// Starts a pod and returns its persisted state (phase Running).
#[tracing::instrument(level = "debug", name = "pod start", skip_all, fields(pod = req.pod.metadata.name.as_deref().unwrap_or_default()))]
/// What the pod's volumes draw from: the manifest's objects, tokens and the pod's metadata.
fn volume_sources<'a>(req: &'a StartRequest<'_>) -> volumes::Sources<'a> {
    volumes::Sources {
        config_maps: &req.manifest.config_maps,
        secrets: &req.manifest.secrets,
        tokens: &req.manifest.service_account_tokens,
        pod: &req.pod.metadata,
    }
}

pub fn start(node: &NodeConfig, req: &StartRequest<'_>) -> Result<PodState, PodError> {
    let pod = req.pod;
    let name = state::pod_key(pod);
    let invalid = |message: String| PodError::Invalid { pod: name.clone(), message };
    let spec = pod.spec.as_ref().ok_or_else(|| invalid("spec is required".into()))?;
    let dir = node.pod_dir(&name);
    if state::state_file(&dir).exists() {
        return Err(PodError::Exists { pod: name });
    }
    security::check_pod_spec(spec).map_err(|e| invalid(e.to_string()))?;
    let host = HostNamespaces::of(spec);
    // A node's first pod makes sure the pod CIDR is free on the host, before anything is created.
    let network_config = node.network_config();
    if !host.network && crate::network::pod::node_has_no_pods(&network_config.state_dir) {
        crate::network::pod::check_pod_cidr(&network_config).map_err(|e| invalid(e.to_string()))?;
    }
    // From here on, the grace period the first container's cgroup move waits for runs alongside.
    let _warmer = sandbox::warm_cgroup_attach(&node.cgroup_root, &node.cgroup_parent);
    if spec.share_process_namespace == Some(true) && crate::runtime::monitor::installed_binary().is_none() {
        return Err(invalid("shareProcessNamespace needs the rkube-monitor binary next to rkubelet".into()));
    }
    RestartPolicy::parse(spec.restart_policy.as_deref()).map_err(&invalid)?;
    // Everything that can be checked without touching the host is checked first.
    let sources = EnvSources {
        config_maps: req
            .manifest
            .config_maps
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
            .collect(),
        secrets: req.manifest.secrets.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s))).collect(),
    };
    let all: Vec<&Container> = spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
    let sysctls = security::pod_sysctls(spec).map_err(|e| invalid(e.to_string()))?;
    let mut seccomp = Vec::with_capacity(all.len());
    for c in &all {
        env::container_env(c, &facts(pod, "0.0.0.0"), &sources).map_err(|e| invalid(e.to_string()))?;
        resources::cgroup_limits(c.resources.as_ref())
            .map_err(|e| invalid(format!("container {}: {e}", c.name)))?;
        let choice = security::seccomp_choice(c, spec.security_context.as_ref(), node.seccomp_default)
            .and_then(|choice| security::resolve(choice, &node.root))
            .map_err(|e| invalid(format!("container {}: {e}", c.name)))?;
        seccomp.push(choice);
    }
    let volumes = spec.volumes.clone().unwrap_or_default();
    volumes::check(&volumes, &volume_sources(req)).map_err(|e| invalid(e.to_string()))?;
    let store = node.image_store().map_err(step(&name, "open image store"))?;
    let pull_secrets = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .filter_map(|r| req.manifest.secrets.iter().find(|s| s.metadata.name == Some(r.name.clone())))
        .collect();
    let resolver = ImageResolver { store: &store, registries_config: req.registries_config, pull_secrets };
    let mut images: HashMap<String, ImageInfo> = HashMap::new();
    let mut planned = Vec::new();
    let kubelet_name = format!("{name}_{}", pod.metadata.namespace.as_deref().unwrap_or("default"));
    for (c, seccomp) in all.iter().zip(seccomp) {
        let image = c.image.clone().unwrap_or_default();
        let info = match images.get(&image) {
            Some(i) => i.clone(),
            None => {
                let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
                let i = resolver
                    .ensure(&image, policy)
                    .map_err(|e| invalid(format!("container {}: {e}", c.name)))?;
                images.insert(image.clone(), i.clone());
                i
            }
        };
        security::verify_run_as_non_root(c, spec.security_context.as_ref(), &info.user, &kubelet_name)
            .map_err(|e| invalid(e.to_string()))?;
        planned.push(Planned { container: c, image: info, seccomp });
    }
    let _lock = lock(&dir, true, true).map_err(step(&name, "lock pod dir"))?;
    let starting = Starting {
        node,
        req,
        spec,
        name: &name,
        dir: &dir,
        planned: &planned,
        volumes: &volumes,
        sources: &sources,
        sysctls: &sysctls,
    };
    match start_locked(&starting) {
        Ok(state) => Ok(state),
        Err(e) => {
            let _ = cleanup(node, &name);
            Err(e)
        }
    }
}

/// A validated pod start, under the pod's lock.
struct Starting<'a> {
    node: &'a NodeConfig,
    req: &'a StartRequest<'a>,
    spec: &'a PodSpec,
    name: &'a str,
    dir: &'a Path,
    planned: &'a [Planned<'a>],
    volumes: &'a [k8s_openapi::api::core::v1::Volume],
    sources: &'a EnvSources<'a>,
    sysctls: &'a HashMap<String, String>,
}

fn start_locked(starting: &Starting<'_>) -> Result<PodState, PodError> {
    let Starting { node, req, spec, name, dir, .. } = *starting;
    let mut state = if spec.host_network == Some(true) {
        create_sandbox(starting, None)?
    } else {
        let network = node.network().map_err(step(name, "network"))?;
        let ports = host_ports(req.pod);
        let info = network.reserve(name, &ports).map_err(step(name, "reserve pod address"))?;
        // The pod's network is wired (veth, addresses, node rules) while the rest of its sandbox and
        // its first container are created: both take milliseconds, and nothing in the pod runs
        // before that container's start below.
        let (created, wired) = std::thread::scope(|scope| {
            let wiring = scope.spawn(|| network.setup(name, name, &ports));
            (create_sandbox(starting, Some(&info)), wiring.join())
        });
        wired
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(step(name, "network setup"))?;
        created?
    };
    let runtime = node.runtime();
    let policy = RestartPolicy::parse(spec.restart_policy.as_deref())
        .map_err(|message| PodError::Invalid { pod: name.into(), message })?;
    let deadline = Instant::now() + req.init_timeout;
    for i in 0..state.init_containers.len() {
        let record = &mut state.init_containers[i];
        start_saved(&runtime, dir, record).map_err(step(name, "start init container"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let exit = runtime.wait(&record.id, Some(left)).map_err(step(name, "wait for init container"))?;
        record.last_exit = Some(state::Exit { code: exit.code, oom_killed: exit.oom_killed, at: unix_now() });
        if exit.code == 0 {
            runtime.delete(&record.id, true).map_err(step(name, "remove init container"))?;
            record.done = true;
            continue;
        }
        if !policy.retries_init() {
            return Err(PodError::Step {
                pod: name.into(),
                step: "init container",
                message: format!(
                    "{} exited with code {} (restartPolicy Never: pod Failed)",
                    record.name, exit.code
                ),
            });
        }
        // The exited container stays for the agent, which retries it with back-off; the pod is
        // Pending until every init container succeeded.
        state::save(dir, &state).map_err(step(name, "save state"))?;
        return Ok(state);
    }
    start_app_containers(&runtime, dir, &mut state).map_err(step(name, "start container"))?;
    state.phase = Phase::Running;
    state::save(dir, &state).map_err(step(name, "save state"))?;
    Ok(state)
}

/// The pod's resolv.conf settings from its `dnsPolicy` and `dnsConfig` (checked by `fields`).
fn pod_dns(spec: &PodSpec, pod: &Pod, node: &dns::NodeDns) -> DnsConfig {
    let policy = dns::DnsPolicy::parse(spec.dns_policy.as_deref()).unwrap_or_default();
    let own = spec.dns_config.as_ref();
    let config = DnsConfig {
        nameservers: own
            .and_then(|c| c.nameservers.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|n| n.parse().ok())
            .collect(),
        searches: own.and_then(|c| c.searches.clone()).unwrap_or_default(),
        options: own
            .and_then(|c| c.options.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let name = o.name.as_deref()?;
                Some(match o.value.as_deref() {
                    Some(v) => format!("{name}:{v}"),
                    None => name.to_string(),
                })
            })
            .collect(),
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    dns::pod_dns(policy, spec.host_network == Some(true), namespace, &config, node)
}

/// Creates the pod's sandbox besides its network (IPC namespace, /etc files, volumes, cgroup,
/// shared pid namespace), saves every container's spec and creates the first container, which
/// waits for its start. Returns the pod's state (Pending).
/// `info` is the pod's network, `None` for a hostNetwork pod.
fn create_sandbox(starting: &Starting<'_>, info: Option<&PodNetworkInfo>) -> Result<PodState, PodError> {
    let Starting { node, req, spec, name, dir, planned, volumes, sources, sysctls } = *starting;
    let pod = req.pod;
    let host = HostNamespaces::of(spec);
    let ipc = node.ipc_dir().join(name);
    if !host.ipc {
        sandbox::create_ipc(&ipc).map_err(step(name, "ipc namespace"))?;
    }
    // /etc files shared by the pod's containers.
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).map_err(step(name, "create etc dir"))?;
    let node_hostname = || nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
    let hostname = match host.network {
        true => node_hostname().unwrap_or_default(),
        // The pod's own name (the node keys API pods by namespace, name and uid), at most 63
        // characters as the kubelet truncates it.
        false => spec.hostname.clone().unwrap_or_else(|| {
            pod.metadata.name.as_deref().unwrap_or(name).chars().take(63).collect::<String>()
        }),
    };
    // A pod with a subdomain (and a cluster domain) is also named by its headless Service.
    let fqdn =
        spec.subdomain.as_deref().filter(|s| !s.is_empty() && !node.dns.cluster_domain.is_empty()).map(
            |sub| {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                format!("{hostname}.{sub}.{ns}.svc.{}", node.dns.cluster_domain)
            },
        );
    let aliases: Vec<(IpAddr, Vec<String>)> = spec
        .host_aliases
        .iter()
        .flatten()
        .filter_map(|a| Some((a.ip.parse().ok()?, a.hostnames.clone().unwrap_or_default())))
        .collect();
    let hosts = match info {
        Some(info) => dns::hosts_file(&hostname, fqdn.as_deref(), Some(IpAddr::V4(info.ip)), &aliases),
        // The node's own hosts file, as the kubelet gives hostNetwork pods.
        None => dns::node_hosts_file(&fs::read_to_string(dns::NODE_HOSTS).unwrap_or_default(), &aliases),
    };
    let resolv = dns::resolv_conf(&pod_dns(spec, pod, &node.dns));
    fs::write(etc.join("hosts"), hosts).map_err(step(name, "write hosts"))?;
    fs::write(etc.join("resolv.conf"), resolv).map_err(step(name, "write resolv.conf"))?;
    fs::write(etc.join("hostname"), format!("{hostname}\n")).map_err(step(name, "write hostname"))?;
    // hostUsers: false: the pod's own id range; what the pod's containers must read or write (its
    // /etc files, its volumes but hostPath) belongs to the range's root.
    let userns_base = match spec.host_users {
        Some(false) => {
            Some(super::userns::allocate(&node.root, name).map_err(step(name, "user namespace range"))?)
        }
        _ => None,
    };
    let tmpfs = dir.join("tmpfs");
    if volumes::needs_tmpfs(volumes) {
        sandbox::mount_tmpfs(&tmpfs).map_err(step(name, "pod tmpfs"))?;
    }
    let paths = volumes::prepare(volumes, &volume_sources(req), &dir.join("volumes"), &tmpfs)
        .map_err(step(name, "volumes"))?;
    if let Some(base) = userns_base {
        for owned in [etc.clone(), dir.join("volumes"), tmpfs.clone()] {
            sandbox::chown_tree(&owned, base)
                .map_err(step(name, "give the pod's files to its user namespace"))?;
        }
    }
    // The cgroup directories come last before the containers: meanwhile the warmer (see `start`)
    // may hold the kernel's cgroup mutex.
    let cgroup = pod_cgroup(node, name);
    sandbox::create_pod_cgroup(&node.cgroup_root, &cgroup).map_err(step(name, "pod cgroup"))?;
    let pause = match (spec.share_process_namespace, crate::runtime::monitor::installed_binary()) {
        (Some(true), Some(binary)) => Some(
            sandbox::start_pause(&binary, &node.cgroup_root, &cgroup)
                .map_err(step(name, "shared pid namespace"))?,
        ),
        _ => None,
    };
    let facts = facts(pod, &info.map(|i| i.ip.to_string()).unwrap_or_default());
    let runtime = node.runtime();
    let n_init = spec.init_containers.as_ref().map_or(0, Vec::len);
    let mut state = PodState {
        pod: pod.clone(),
        uid: uuid::Uuid::new_v4().to_string(),
        created: unix_now(),
        phase: Phase::Pending,
        ip: info.map(|i| i.ip),
        containers: Vec::new(),
        init_containers: Vec::new(),
        pause,
        stopping: false,
    };
    for (i, p) in planned.iter().enumerate() {
        let c = p.container;
        let mut mounts = vec![
            BindMount { source: etc.join("hosts"), destination: "/etc/hosts".into(), read_only: false },
            BindMount {
                source: etc.join("resolv.conf"),
                destination: "/etc/resolv.conf".into(),
                read_only: false,
            },
            BindMount { source: etc.join("hostname"), destination: "/etc/hostname".into(), read_only: false },
        ];
        mounts.extend(volumes::container_mounts(c, &paths).map_err(step(name, "volume mounts"))?);
        if let Some(base) = userns_base {
            // subPath directories the mounts above created belong to the pod's root too.
            sandbox::chown_tree(&dir.join("volumes"), base)
                .map_err(step(name, "give the pod's files to its user namespace"))?;
        }
        let env = env::container_env(c, &facts, sources).map_err(step(name, "env"))?;
        let mut env_list: Vec<String> = p.image.env.clone();
        for (k, v) in &env {
            env_list.retain(|e| e.split('=').next() != Some(k.as_str()));
            env_list.push(format!("{k}={v}"));
        }
        let argv =
            env::expand_all(&command::argv(c.command.as_deref(), c.args.as_deref(), &p.image.defaults), &env);
        let limits = resources::cgroup_limits(c.resources.as_ref()).map_err(step(name, "resources"))?;
        let input = SpecInput {
            container: &c.name,
            pod_name: &hostname,
            argv,
            env: env_list,
            cwd: c.working_dir.clone().unwrap_or_else(|| p.image.working_dir.clone()),
            image_user: Some(p.image.user.clone()),
            netns: match info {
                Some(info) => Some(info.netns_path.clone()),
                None => node.node_netns.clone(),
            },
            ipc: Some(ipc.clone()),
            host,
            pid: pause.map(|p| p.pid_namespace()),
            mounts,
            limits,
            cgroups_path: format!("{cgroup}/{}", c.name),
            security: c.security_context.as_ref(),
            pod_security: spec.security_context.as_ref(),
            seccomp: p.seccomp.clone(),
            sysctls: sysctls.clone(),
            userns_base,
            unmasked_proc: c.security_context.as_ref().and_then(|s| s.proc_mount.as_deref())
                == Some("Unmasked"),
        };
        let oci = spec::build(&input).map_err(step(name, "container spec"))?;
        save_spec(dir, &c.name, &oci).map_err(step(name, "save container spec"))?;
        let record = ContainerRecord {
            name: c.name.clone(),
            id: container_id(name, &c.name),
            image: c.image.clone().unwrap_or_default(),
            layers: p.image.layers.clone(),
            restarts: 0,
            started_at: 0,
            last_exit: None,
            done: false,
            ready: c.readiness_probe.is_none(),
            backoff: Default::default(),
            restart_at_ms: None,
            image_digest: p.image.manifest.clone(),
            probe_failure: None,
        };
        if i < n_init { state.init_containers.push(record) } else { state.containers.push(record) }
    }
    if let Some(first) = state.init_containers.first().or(state.containers.first()) {
        recreate_container(&runtime, dir, first).map_err(step(name, "create container"))?;
    }
    Ok(state)
}

/// Starts the pod's app containers from their saved specs (once the init containers are done) and
/// runs their postStart hooks; containers already done (succeeded under OnFailure) stay so.
pub fn start_app_containers(runtime: &Runtime, pod_dir: &Path, state: &mut PodState) -> io::Result<()> {
    let spec = state.pod.spec.clone().unwrap_or_default();
    for record in state.containers.iter_mut().filter(|c| !c.done) {
        start_saved(runtime, pod_dir, record)?;
        let container = spec.containers.iter().find(|c| c.name == record.name);
        if let Some(h) = container.and_then(|c| c.lifecycle.as_ref()).and_then(|l| l.post_start.as_ref()) {
            run_hook(runtime, &record.id, h);
        }
    }
    Ok(())
}

/// The first init container that has not succeeded yet, if any.
pub fn pending_init(state: &mut PodState) -> Option<&mut ContainerRecord> {
    state.init_containers.iter_mut().find(|c| !c.done)
}

/// The container's bundle directory.
pub fn bundle_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("containers").join(container)
}

/// The container's CRI log file.
pub fn log_file(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(format!("{container}.log"))
}

/// Creates one container from `spec` on a fresh writable layer, waiting for its start; the spec
/// is saved in the bundle so the agent can restart the container later.
#[tracing::instrument(level = "debug", name = "container create", skip_all, fields(id = %record.id))]
pub fn create_container(
    runtime: &Runtime,
    pod_dir: &Path,
    record: &ContainerRecord,
    spec: &Spec,
) -> io::Result<()> {
    // A backstop for `start_needs_sealed_caller`: the spec itself says whether sealing is needed.
    if runtime.run_needs_sealed_caller(spec) && !crate::runtime::exe_seal::is_sealed() {
        return Err(io::Error::other(format!("container {} needs a sealed runtime binary", record.name)));
    }
    let bundle = bundle_dir(pod_dir, &record.name);
    let (upper, work, target) = (bundle.join("upper"), bundle.join("work"), bundle.join("rootfs"));
    for d in [&upper, &work] {
        let _ = fs::remove_dir_all(d);
    }
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d)?;
    }
    fs::create_dir_all(pod_dir.join("logs"))?;
    fs::write(bundle.join("config.json"), serde_json::to_vec(spec).map_err(io::Error::other)?)?;
    let req = CreateRequest {
        id: record.id.clone(),
        bundle: bundle.clone(),
        spec: spec.clone(),
        rootfs: Some(RootfsSource::Overlay { lower: record.layers.clone(), upper, work, target }),
        log_path: Some(log_file(pod_dir, &record.name)),
        pid_file: None,
        preserved_fds: Vec::new(),
    };
    super::metrics::runtime_op("create_container", || runtime.create(&req)).map_err(io::Error::other)?;
    Ok(())
}

/// Saves a container's spec in its bundle, where [`recreate_container`] finds it.
pub fn save_spec(pod_dir: &Path, container: &str, spec: &Spec) -> io::Result<()> {
    let bundle = bundle_dir(pod_dir, container);
    fs::create_dir_all(&bundle)?;
    fs::write(bundle.join("config.json"), serde_json::to_vec(spec).map_err(io::Error::other)?)
}

/// The spec saved in a container's bundle.
fn load_spec(pod_dir: &Path, container: &str) -> io::Result<Spec> {
    let data = fs::read(bundle_dir(pod_dir, container).join("config.json"))?;
    serde_json::from_slice(&data).map_err(io::Error::other)
}

/// Points the saved spec of `container` at the pid namespace `path`.
pub fn repoint_pid_namespace(pod_dir: &Path, container: &str, path: &Path) -> io::Result<()> {
    let mut spec = load_spec(pod_dir, container)?;
    spec::set_pid_namespace(&mut spec, path.to_path_buf());
    save_spec(pod_dir, container, &spec)
}

/// (Re-)creates a container from the spec saved in its bundle, replacing an exited run; the new
/// one waits for its start.
pub fn recreate_container(runtime: &Runtime, pod_dir: &Path, record: &ContainerRecord) -> io::Result<()> {
    let _ = runtime.delete(&record.id, true);
    create_container(runtime, pod_dir, record, &load_spec(pod_dir, &record.name)?)
}

/// Starts a container from its saved spec and stamps the start time: one already created (waiting
/// for its start) is started as is, an exited run is replaced by a new one.
pub fn start_saved(runtime: &Runtime, pod_dir: &Path, record: &mut ContainerRecord) -> io::Result<()> {
    if !matches!(runtime.state(&record.id).map(|s| s.status), Ok(Status::Created)) {
        recreate_container(runtime, pod_dir, record)?;
    }
    if let Err(e) = super::metrics::runtime_op("start_container", || runtime.start(&record.id)) {
        let _ = runtime.delete(&record.id, true);
        return Err(io::Error::other(e));
    }
    record.started_at = unix_now();
    record.restart_at_ms = None;
    Ok(())
}

/// Runs a lifecycle hook (exec only; httpGet hooks are not supported and skipped).
pub fn run_hook(runtime: &Runtime, id: &str, hook: &LifecycleHandler) -> Option<i32> {
    let args = hook.exec.as_ref()?.command.clone().filter(|c| !c.is_empty())?;
    super::metrics::runtime_op("exec_sync", || runtime.exec(id, &ExecRequest { args, ..Default::default() }))
        .ok()
}

/// Whether the container's process is still there.
pub fn is_running(runtime: &Runtime, id: &str) -> bool {
    matches!(runtime.state(id).map(|s| s.status), Ok(Status::Running | Status::Created))
}

/// Stops every container of the pod: preStop hooks, SIGTERM, then SIGKILL after `grace`; the
/// containers are stopped in parallel. Marks the pod `stopping` first so the agent leaves it alone.
pub fn stop(node: &NodeConfig, name: &str, grace: Option<Duration>) -> Result<PodState, PodError> {
    let dir = node.pod_dir(name);
    if !state::state_file(&dir).exists() {
        return Err(PodError::NotFound { pod: name.into() });
    }
    let _lock = lock(&dir, true, false).map_err(step(name, "lock pod dir"))?;
    let mut st = state::load(&dir).map_err(step(name, "load state"))?;
    st.stopping = true;
    state::save(&dir, &st).map_err(step(name, "save state"))?;
    let grace = grace.unwrap_or_else(|| {
        Duration::from_secs(
            st.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64,
        )
    });
    let runtime = node.runtime();
    let containers: Vec<Container> = st.pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
    std::thread::scope(|scope| {
        for record in st.init_containers.iter().filter(|c| !c.done) {
            let runtime = &runtime;
            scope.spawn(move || stop_container(runtime, &record.id, None, grace));
        }
        for record in &st.containers {
            let runtime = &runtime;
            let pre_stop = containers
                .iter()
                .find(|c| c.name == record.name)
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            scope.spawn(move || stop_container(runtime, &record.id, pre_stop.as_ref(), grace));
        }
    });
    for record in st.init_containers.iter_mut().chain(st.containers.iter_mut()) {
        record.restart_at_ms = None;
        if !record.done {
            if record.started_at != 0
                && let Ok(exit) = runtime.wait(&record.id, Some(Duration::from_secs(1)))
            {
                record.last_exit =
                    Some(state::Exit { code: exit.code, oom_killed: exit.oom_killed, at: unix_now() });
            }
            record.done = true;
        }
        record.ready = false;
    }
    st.phase =
        if st.init_containers.iter().chain(&st.containers).all(|c| c.last_exit.is_none_or(|e| e.code == 0)) {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
    state::save(&dir, &st).map_err(step(name, "save state"))?;
    Ok(st)
}

/// preStop, SIGTERM, wait up to `grace` (including the hook), SIGKILL.
fn stop_container(runtime: &Runtime, id: &str, pre_stop: Option<&LifecycleHandler>, grace: Duration) {
    if !is_running(runtime, id) {
        return;
    }
    let started = Instant::now();
    if let Some(h) = pre_stop {
        run_hook(runtime, id, h);
    }
    let _ = super::metrics::runtime_op("stop_container", || runtime.kill(id, Signal::SIGTERM, false));
    let left = grace.saturating_sub(started.elapsed());
    if runtime.wait(id, Some(left)).is_err() {
        let _ = runtime.kill(id, Signal::SIGKILL, true);
        let _ = runtime.wait(id, Some(Duration::from_secs(10)));
    }
}

/// Stops (if needed) and removes everything of the pod.
pub fn remove(node: &NodeConfig, name: &str, grace: Option<Duration>) -> Result<(), PodError> {
    let dir = node.pod_dir(name);
    if !dir.exists() {
        return Err(PodError::NotFound { pod: name.into() });
    }
    if state::state_file(&dir).exists() {
        stop(node, name, grace)?;
    }
    // A pod dir without a lock file is debris of an interrupted start: clean it up all the same.
    let _lock = match lock(&dir, true, false) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(step(name, "lock pod dir")(e)),
    };
    cleanup(node, name)
}

/// Removes every host object of pod `name`: containers, cgroup, tmpfs, IPC pin, network, pod dir.
/// Idempotent; tries every step and reports the first failure.
pub fn cleanup(node: &NodeConfig, name: &str) -> Result<(), PodError> {
    let mut errors: Vec<PodError> = Vec::new();
    let mut note = |r: Result<(), PodError>| errors.extend(r.err());
    let runtime = node.runtime();
    let prefix = format!("{name}_");
    for c in runtime.list().unwrap_or_default() {
        if c.id.starts_with(&prefix) {
            note(
                super::metrics::runtime_op("remove_container", || runtime.delete(&c.id, true))
                    .map_err(step(name, "delete container")),
            );
        }
    }
    // The pause process (shared pid namespace) goes once its containers are gone; after a failed
    // start (no state yet) the cgroup sweep below kills it.
    if let Some(pause) = state::load(&node.pod_dir(name)).ok().and_then(|s| s.pause) {
        pause.kill(Duration::from_secs(5));
    }
    // State dirs of containers whose create never finished (no record for `list`).
    for e in fs::read_dir(&runtime.root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    note(
        sandbox::remove_pod_cgroup(&node.cgroup_root, &pod_cgroup(node, name))
            .map_err(step(name, "remove cgroup")),
    );
    let dir = node.pod_dir(name);
    note(sandbox::remove_mount(&dir.join("tmpfs")).map_err(step(name, "unmount tmpfs")));
    note(sandbox::remove_mount(&node.ipc_dir().join(name)).map_err(step(name, "remove ipc namespace")));
    match node.network() {
        Ok(net) => note(net.teardown(name).map_err(step(name, "network teardown"))),
        Err(e) => note(Err(step(name, "network")(e))),
    }
    if errors.is_empty() {
        let removed = fs::remove_dir_all(&dir).or_else(|_| fs::remove_dir_all(&dir));
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(step(name, "remove pod dir")(e)),
        }
    }
    // The id range goes back only once nothing of the pod can still run under it.
    if errors.is_empty() {
        errors.extend(
            super::userns::release(&node.root, name)
                .map_err(step(name, "release user namespace range"))
                .err(),
        );
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: &str) -> Pod {
        serde_yaml_ng::from_str(&format!("metadata: {{name: p}}\nspec:\n{spec}")).unwrap()
    }

    #[test]
    fn only_hooks_and_shared_pid_namespaces_enter_visible_containers() {
        let plain = "  containers: [{name: c, image: i}]\n";
        assert!(!enters_visible_containers(&pod(plain)));
        assert!(enters_visible_containers(&pod(&format!("  shareProcessNamespace: true\n{plain}"))));
        let hook = |handler: &str| {
            pod(&format!("  containers: [{{name: c, image: i, lifecycle: {{postStart: {handler}}}}}]\n"))
        };
        assert!(enters_visible_containers(&hook("{exec: {command: [true]}}")));
        assert!(!enters_visible_containers(&hook("{httpGet: {port: 80}}")));
        let pre_stop =
            "  containers: [{name: c, image: i, lifecycle: {preStop: {exec: {command: [true]}}}}]\n";
        assert!(!enters_visible_containers(&pod(pre_stop)), "preStop runs from `stop`/`rm`, which seal");
    }
}
