//! Pod commands of `rkubelet`: `run`, `ps`, `logs`, `exec`, `stop`, `rm`, `inspect` and the agent
//! (`serve`). `run` starts the pod itself and then makes sure the agent runs (see
//! `kubelet::agent` for the design). Every host path and network name is a flag.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;

use crate::image::config::DEFAULT_REGISTRIES_CONFIG;
use crate::kubelet::agent::{self, Agent, AgentConfig};
use crate::kubelet::backoff::BackoffPolicy;
use crate::kubelet::manifest;
use crate::kubelet::node::NodeConfig;
use crate::kubelet::pod::{self, StartRequest};
use crate::kubelet::reset;
use crate::kubelet::server::KubeletServerConfig;
use crate::kubelet::state::{self, Phase, PodState, unix_now};
use crate::network::dns;
use crate::runtime::{ExecRequest, Status};

/// Where the node keeps things (shared by every pod command).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// State root: image store, pods, network state.
    #[arg(long, env = "RKUBE_ROOT", default_value = "/var/lib/rkube")]
    pub root: PathBuf,
    /// Runtime directory: container state, pinned namespaces, agent lock.
    #[arg(long, env = "RKUBE_RUN_DIR", default_value = "/run/rkube")]
    pub run_dir: PathBuf,
    /// The node's pod CIDR [default: the one rkube-master assigned, if this node joined;
    /// else 10.244.0.0/16].
    #[arg(long, env = "RKUBE_POD_CIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    /// The whole cluster's pod range, every node's pod CIDR inside it (rkube-master's
    /// --cluster-cidr); traffic to it is not masqueraded [default for `join`: 10.244.0.0/16].
    #[arg(long, env = "RKUBE_CLUSTER_CIDR")]
    pub cluster_cidr: Option<Ipv4Net>,
    /// Node bridge.
    #[arg(long, env = "RKUBE_BRIDGE", default_value = "rkube0")]
    pub bridge: String,
    /// cgroup hierarchy root.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// cgroup parent of the pods.
    #[arg(long, env = "RKUBE_CGROUP_PARENT", default_value = "rkube")]
    pub cgroup_parent: String,
    /// Network namespace (pinned path) holding the bridge and rules; default: this one.
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// Host veth name prefix.
    #[arg(long, default_value = "rkv")]
    pub veth_prefix: String,
    /// iptables chain prefix.
    #[arg(long, default_value = "RKUBE")]
    pub chain_prefix: String,
    /// Nameservers for pods (comma separated); default: the host's non-loopback ones.
    #[arg(long, value_delimiter = ',')]
    pub nameserver: Vec<IpAddr>,
    /// Run containers whose Pod names no seccomp profile under the runtime's default profile
    /// (Docker's), as the kubelet's --seccomp-default does; --seccomp-default=false leaves them
    /// unconfined. Privileged containers are always unconfined; `Localhost` profiles are read
    /// from <root>/seccomp.
    #[arg(long, env = "RKUBE_SECCOMP_DEFAULT", default_value_t = true, action = clap::ArgAction::Set)]
    pub seccomp_default: bool,
    /// Registries config (mirrors, locations, insecure hosts, CAs).
    #[arg(long, env = "RKUBE_REGISTRIES_CONFIG", default_value = DEFAULT_REGISTRIES_CONFIG)]
    pub registries_config: PathBuf,
}

/// The pod CIDR of a node that has not joined a master.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

impl NodeArgs {
    /// Where a joined node keeps its credentials and the pod CIDR the master assigned.
    pub fn credentials(&self) -> crate::client::join::NodeCredentials {
        crate::client::join::NodeCredentials::at(&self.root.join("node"))
    }

    /// The node's settings: flags, else what joining recorded, else the defaults.
    pub fn node(&self) -> NodeConfig {
        let pod_cidr = self
            .pod_cidr
            .or_else(|| std::fs::read_to_string(self.credentials().pod_cidr()).ok()?.trim().parse().ok())
            .unwrap_or_else(|| DEFAULT_POD_CIDR.parse().expect("valid default CIDR"));
        // The node's resolvers for pods: --nameserver, else the host's resolv.conf.
        let host = match self.nameserver.is_empty() {
            true => dns::parse_resolv_conf(&std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default()),
            false => dns::DnsConfig { nameservers: self.nameserver.clone(), ..Default::default() },
        };
        NodeConfig {
            root: self.root.clone(),
            run_dir: self.run_dir.clone(),
            pod_cidr,
            cluster_cidr: self.cluster_cidr,
            bridge: self.bridge.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            node_netns: self.node_netns.clone(),
            veth_prefix: self.veth_prefix.clone(),
            chain_prefix: self.chain_prefix.clone(),
            dns: dns::NodeDns { host, ..Default::default() },
            seccomp_default: self.seccomp_default,
        }
    }

    /// The same settings as command-line flags (to start the agent with).
    fn to_flags(&self) -> Vec<String> {
        let mut f = vec![
            format!("--root={}", self.root.display()),
            format!("--run-dir={}", self.run_dir.display()),
            format!("--bridge={}", self.bridge),
            format!("--cgroup-root={}", self.cgroup_root.display()),
            format!("--cgroup-parent={}", self.cgroup_parent),
            format!("--veth-prefix={}", self.veth_prefix),
            format!("--chain-prefix={}", self.chain_prefix),
            format!("--registries-config={}", self.registries_config.display()),
        ];
        if let Some(cidr) = &self.pod_cidr {
            f.push(format!("--pod-cidr={cidr}"));
        }
        if let Some(cidr) = &self.cluster_cidr {
            f.push(format!("--cluster-cidr={cidr}"));
        }
        if let Some(ns) = &self.node_netns {
            f.push(format!("--node-netns={}", ns.display()));
        }
        if !self.nameserver.is_empty() {
            let list: Vec<String> = self.nameserver.iter().map(|n| n.to_string()).collect();
            f.push(format!("--nameserver={}", list.join(",")));
        }
        f
    }
}

/// The host's resolver configuration, which pods with `dnsPolicy: Default` get.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Pod subcommands of `rkubelet`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the pods of a manifest (pulling missing images); returns once they run.
    Run {
        /// Manifest file (`-` for stdin): Pods plus the ConfigMaps and Secrets they use.
        manifest: PathBuf,
        /// Stream the first container's logs until it exits.
        #[arg(short = 'f', long, alias = "follow")]
        attach: bool,
        /// Do not start the background agent.
        #[arg(long)]
        no_agent: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List pods and their containers: status, IP, restarts, age.
    Ps {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print a container's logs.
    Logs {
        pod: String,
        /// Container (default: the first).
        #[arg(short, long)]
        container: Option<String>,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run a command in a container.
    Exec {
        pod: String,
        /// Container (default: the first).
        #[arg(short, long)]
        container: Option<String>,
        /// Pass stdin to the process (without it, the process reads /dev/null).
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a terminal relayed to ours (stdin must be a terminal).
        #[arg(short, long)]
        tty: bool,
        #[command(flatten)]
        node: NodeArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a pod's containers (preStop, SIGTERM, grace period, SIGKILL); keeps its record.
    Stop {
        pods: Vec<String>,
        /// Grace period in seconds (default: the pod's terminationGracePeriodSeconds).
        #[arg(short, long)]
        time: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Stop and remove pods and everything they hold on the host.
    Rm {
        pods: Vec<String>,
        /// Grace period in seconds (default: the pod's terminationGracePeriodSeconds).
        #[arg(short, long)]
        time: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print a pod's state as JSON.
    Inspect {
        pod: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Tear the node down: agent, bridge, NAT chains, IPAM state, empty cgroup parent. Refuses
    /// while pods exist unless --force, which removes them first.
    Reset {
        /// Remove the node's pods first.
        #[arg(long)]
        force: bool,
        /// Grace period in seconds for pods removed by --force (default: each pod's own).
        #[arg(short, long)]
        time: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Join this host to rkube-master as a node and run the node agent in the foreground: it
    /// registers the Node, renews its Lease, runs the Pods the master binds to it and reports
    /// their status. The token (printed by rkube-master) pins the master's CA; without --token a
    /// node that joined before reconnects with the credentials it keeps under <root>/node.
    Join(super::join::JoinArgs),
    /// Serve the node's HTTPS API (logs, exec, port-forward for the master) in the foreground;
    /// a diagnostic and test entry: the node agent serves the same API itself.
    #[command(hide = true)]
    ServeApi {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:10250")]
        listen: std::net::SocketAddr,
        /// PEM serving certificate of this node.
        #[arg(long)]
        tls_cert_file: PathBuf,
        /// PEM key of the serving certificate.
        #[arg(long)]
        tls_private_key_file: PathBuf,
        /// PEM CA that signs the clients' certificates.
        #[arg(long)]
        client_ca_file: PathBuf,
        /// The only client certificate CN admitted.
        #[arg(long, default_value = crate::kubelet::server::APISERVER_CLIENT_CN)]
        allowed_client_cn: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the node agent in the foreground: restarts, back-off, probes, status.
    Serve {
        /// First CrashLoopBackOff delay in milliseconds (doubles up to 5 minutes).
        #[arg(long, default_value_t = 10_000)]
        backoff_initial_ms: u64,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Runs a pod subcommand.
pub fn run(command: Command) -> anyhow::Result<i32> {
    // Commands that put processes into containers run from a sealed binary (CVE-2019-5736);
    // `run` decides once it has read the pods.
    if matches!(
        command,
        Command::Exec { .. }
            | Command::Stop { .. }
            | Command::Rm { .. }
            | Command::Reset { .. }
            | Command::Serve { .. }
            | Command::Join(_)
            | Command::ServeApi { .. }
    ) {
        crate::runtime::exe_seal::ensure_sealed()?;
    }
    match command {
        Command::Run { manifest, attach, no_agent, node } => run_pods(&manifest, attach, no_agent, &node),
        Command::Join(args) => super::join::run(&args),
        Command::Ps { node } => ps(&node.node()),
        Command::Logs { pod, container, follow, node } => {
            logs(&node.node(), &pod, container.as_deref(), follow)
        }
        Command::Exec { pod, container, interactive, tty, node, command } => {
            exec(&node.node(), &pod, container.as_deref(), command, ExecStdio { interactive, tty })
        }
        Command::Stop { pods, time, node } => {
            for name in pods {
                pod::stop(&node.node(), &name, time.map(Duration::from_secs))?;
                println!("pod/{name} stopped");
            }
            Ok(0)
        }
        Command::Rm { pods, time, node } => {
            for name in pods {
                pod::remove(&node.node(), &name, time.map(Duration::from_secs))?;
                println!("pod/{name} removed");
            }
            Ok(0)
        }
        Command::Inspect { pod, node } => {
            let st = load(&node.node(), &pod)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Command::Reset { force, time, node } => {
            reset::reset(&node.node(), force, time.map(Duration::from_secs))?;
            crate::kubelet::joined::teardown(&node.credentials())?;
            println!("node reset");
            Ok(0)
        }
        Command::Serve { backoff_initial_ms, node } => serve(&node, backoff_initial_ms),
        Command::ServeApi {
            listen,
            tls_cert_file,
            tls_private_key_file,
            client_ca_file,
            allowed_client_cn,
            node,
        } => {
            let config = KubeletServerConfig {
                listen,
                serving_cert: tls_cert_file,
                serving_key: tls_private_key_file,
                client_ca: client_ca_file,
                allowed_client_cn,
                node: node.node(),
            };
            serve_api(config)
        }
    }
}

/// `serve-api`: the node API until SIGTERM or SIGINT; prints `listening on ADDR` once bound.
fn serve_api(config: KubeletServerConfig) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
        };
        crate::kubelet::server::serve_listener(listener, config, shutdown).await?;
        Ok(0)
    })
}

fn load(node: &NodeConfig, name: &str) -> anyhow::Result<PodState> {
    let dir = node.pod_dir(name);
    if !state::state_file(&dir).exists() {
        bail!("pod {name:?} not found");
    }
    Ok(state::load(&dir)?)
}

fn run_pods(path: &Path, attach: bool, no_agent: bool, args: &NodeArgs) -> anyhow::Result<i32> {
    // The sealing re-exec would lose what was read from stdin or a pipe: then seal first.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        crate::runtime::exe_seal::ensure_sealed()?;
    }
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let manifest = manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if manifest.pods.iter().any(pod::start_needs_sealed_caller) {
        crate::runtime::exe_seal::ensure_sealed()?;
    }
    let node = args.node();
    let mut started = Vec::new();
    for pod in &manifest.pods {
        let req = StartRequest {
            manifest: &manifest,
            pod,
            registries_config: &args.registries_config,
            init_timeout: Duration::from_secs(300),
        };
        let st = pod::start(&node, &req)?;
        let ip = st.ip.map(|i| i.to_string()).unwrap_or_default();
        match st.init_containers.iter().find(|c| !c.done) {
            Some(c) => println!(
                "pod/{} pending (IP {ip}): init container {} exited with code {}; retrying with back-off",
                st.name(),
                c.name,
                c.last_exit.map_or(-1, |e| e.code)
            ),
            None => println!("pod/{} running (IP {ip})", st.name()),
        }
        started.push(st);
    }
    if !no_agent {
        ensure_agent(args)?;
    }
    if attach && let Some(st) = started.first() {
        let first = st.containers.first().map(|c| c.name.clone());
        return logs(&node, &st.key(), first.as_deref(), true);
    }
    Ok(0)
}

/// Starts `rkubelet serve` in the background unless an agent holds the node's lock.
/// How long `run` waits for the agent it started to take its lock.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);

fn ensure_agent(args: &NodeArgs) -> anyhow::Result<()> {
    let node = args.node();
    if agent::is_running(&node) {
        return Ok(());
    }
    std::fs::create_dir_all(&node.root)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(node.agent_log())?;
    use std::os::unix::process::CommandExt;
    let mut child = crate::runtime::exe_seal::self_command()?
        .arg("serve")
        .args(args.to_flags())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the agent")?;
    // Wait until it holds the lock, so a second `run` does not start another. A busy host can
    // take seconds to start it (the agent re-executes itself sealed), so the wait is generous;
    // an agent that exits instead is reported at once.
    let deadline = std::time::Instant::now() + AGENT_START_TIMEOUT;
    while !agent::is_running(&node) {
        if let Some(status) = child.try_wait()? {
            if agent::is_running(&node) {
                break;
            }
            bail!("the agent exited ({status}) before it started; see {}", node.agent_log().display());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the agent did not start within {}s; see {}",
                AGENT_START_TIMEOUT.as_secs(),
                node.agent_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Sets `stop` on the first SIGTERM or SIGINT (from a thread of its own).
pub(super) fn stop_on_signals(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    super::signals::on_interrupt(move || stop.store(true, Ordering::Relaxed), super::signals::Then::Stay)
}

fn serve(args: &NodeArgs, backoff_initial_ms: u64) -> anyhow::Result<i32> {
    let node = args.node();
    let Some(_lock) = agent::try_lock(&node)? else {
        bail!("an agent is already running for {}", node.run_dir.display());
    };
    agent::write_pid(&node)?;
    let stop = Arc::new(AtomicBool::new(false));
    let signals = stop_on_signals(stop.clone());
    let n = state::list(&node.pods_dir()).len();
    tracing::info!("agent started; adopting {n} pod(s)");
    let backoff =
        BackoffPolicy { initial: Duration::from_millis(backoff_initial_ms), ..BackoffPolicy::default() };
    let mut agent = Agent::new(node.clone(), AgentConfig { backoff, ..AgentConfig::default() });
    agent.run(&stop);
    drop(signals);
    agent::remove_pid(&node);
    Ok(0)
}

fn age(created: u64) -> String {
    let s = unix_now().saturating_sub(created);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn ps(node: &NodeConfig) -> anyhow::Result<i32> {
    let runtime = node.runtime();
    println!(
        "{:<24} {:<16} {:<10} {:<18} {:<16} {:>8} {:>5}",
        "POD", "CONTAINER", "PHASE", "STATUS", "IP", "RESTARTS", "AGE"
    );
    for name in state::list(&node.pods_dir()) {
        let Ok(st) = state::load(&node.pod_dir(&name)) else { continue };
        let ip = st.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
        let init = st.init_containers.iter().filter(|c| st.phase == Phase::Pending && !c.done);
        for c in init.chain(&st.containers) {
            let is_init = st.init_containers.iter().any(|i| i.name == c.name);
            let status = match runtime.state(&c.id).map(|s| s.status) {
                _ if c.started_at == 0 => "Waiting".to_string(),
                Ok(Status::Running) if is_init => "Init:Running".to_string(),
                _ if is_init && c.restart_at_ms.is_some() => "Init:CrashLoopBackOff".to_string(),
                Ok(Status::Running) if c.ready => "Running".to_string(),
                Ok(Status::Running) => "Running (not ready)".to_string(),
                Ok(Status::Created) => "Created".to_string(),
                _ => match (c.done, c.last_exit) {
                    (false, Some(_)) => "CrashLoopBackOff".to_string(),
                    (_, Some(e)) if e.oom_killed => "OOMKilled".to_string(),
                    (_, Some(e)) => format!("Exited ({})", e.code),
                    (_, None) => "Exited".to_string(),
                },
            };
            let phase = format!("{:?}", st.phase);
            println!(
                "{:<24} {:<16} {:<10} {:<18} {:<16} {:>8} {:>5}",
                name,
                c.name,
                phase,
                status,
                ip,
                c.restarts,
                age(st.created)
            );
        }
        if st.containers.is_empty() && st.phase != Phase::Running {
            println!("{:<24} {:<16} {:<10?}", name, "-", st.phase);
        }
    }
    Ok(0)
}

fn pick_container(st: &PodState, container: Option<&str>) -> anyhow::Result<state::ContainerRecord> {
    match container {
        Some(c) => st
            .containers
            .iter()
            .chain(&st.init_containers)
            .find(|r| r.name == c)
            .cloned()
            .with_context(|| format!("pod {:?} has no container {c:?}", st.name())),
        None => {
            st.containers.first().cloned().with_context(|| format!("pod {:?} has no containers", st.name()))
        }
    }
}

/// Prints the content of CRI log lines (`<time> <stream> <P|F> <content>`).
fn print_cri(line: &str, out: &mut impl Write) -> std::io::Result<()> {
    let mut parts = line.trim_end_matches('\n').splitn(4, ' ');
    let (_, _, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
    if tag == Some("P") { write!(out, "{content}") } else { writeln!(out, "{content}") }
}

fn logs(node: &NodeConfig, name: &str, container: Option<&str>, follow: bool) -> anyhow::Result<i32> {
    let st = load(node, name)?;
    let record = pick_container(&st, container)?;
    let path = pod::log_file(&node.pod_dir(name), &record.name);
    let runtime = node.runtime();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut reader = BufReader::new(&mut file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n > 0 && line.ends_with('\n') {
            print_cri(&line, &mut out)?;
            continue;
        }
        if n > 0 {
            // A partial line: re-read it once complete.
            reader.seek_relative(-(n as i64))?;
        }
        out.flush()?;
        if !follow {
            return Ok(0);
        }
        let running = pod::is_running(&runtime, &record.id);
        let stopping =
            state::load(&node.pod_dir(name)).map(|s| s.stopping || s.phase != Phase::Running).unwrap_or(true);
        if !running && stopping {
            return Ok(0);
        }
        if !running && pod_done(node, name, &record.name) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_done(node: &NodeConfig, pod: &str, container: &str) -> bool {
    state::load(&node.pod_dir(pod))
        .ok()
        .and_then(|s| s.containers.iter().find(|c| c.name == container).map(|c| c.done))
        .unwrap_or(true)
}

/// How `exec` connects the process to us (kubectl's `-i` and `-t`).
#[derive(Debug, Clone, Copy)]
struct ExecStdio {
    interactive: bool,
    tty: bool,
}

/// `-t`: a new terminal relayed to ours (implies stdin); `-i`: our stdin; neither: /dev/null.
fn exec(
    node: &NodeConfig,
    name: &str,
    container: Option<&str>,
    command: Vec<String>,
    stdio: ExecStdio,
) -> anyhow::Result<i32> {
    let st = load(node, name)?;
    let record = pick_container(&st, container)?;
    let runtime = node.runtime();
    let mut req = ExecRequest { args: command, ..Default::default() };
    if stdio.tty {
        // `move`: the request (holding the console) must be dropped when exec returns.
        return crate::cli::terminal::run_attached(move |console| {
            req.terminal = Some(console);
            Ok(runtime.exec(&record.id, &req)?)
        });
    }
    if !stdio.interactive {
        let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
        nix::unistd::dup2_stdin(null).context("detach stdin")?;
    }
    Ok(runtime.exec(&record.id, &req)?)
}
