//! `rkubelet build`: a Dockerfile build on rkube's runtime into the node's store, or with
//! `--config` a Cloud Build config whose docker steps become builds, tags and pushes.

use crate::build::executor::{self, BuildOptions, Host};
use crate::cli::image::{credentials, local_name, one_line, run_push, runtime};
use crate::image::config::{DEFAULT_REGISTRIES_CONFIG, RegistriesConfig};
use crate::image::digest::Digest;
use crate::image::platform::Platform;
use crate::image::pull::{self, PullOptions};
use crate::image::reference::Reference;
use crate::image::registry::RegistryClient;
use crate::image::store::Store;
use crate::runtime::container::Runtime;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Arguments of `rkubelet build`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Name (and tag) of the image; repeatable. Normalised like docker (`app` is `docker.io/library/app:latest`).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build argument `KEY=VALUE` (`KEY` alone takes the value from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step even when the cache has it.
    #[arg(long)]
    pub no_cache: bool,
    /// Push every tag after the build.
    #[arg(long)]
    pub push: bool,
    /// Target platform (only this machine's is supported: RUN steps run natively).
    #[arg(long)]
    pub platform: Option<String>,
    /// Run a Cloud Build config (cloudbuild.yaml) instead; CONTEXT is then the source directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cloud Build substitutions `KEY=VALUE,...` (with --config).
    #[arg(long, value_delimiter = ',')]
    pub substitutions: Vec<String>,
    /// Print only the image digest.
    #[arg(long, short)]
    pub quiet: bool,
    /// Content store root directory.
    #[arg(long, env = "RKUBE_ROOT", default_value = "/var/lib/rkube")]
    pub root: PathBuf,
    /// Registries config (mirrors, locations, insecure hosts, CAs).
    #[arg(long, env = "RKUBE_REGISTRIES_CONFIG", default_value = DEFAULT_REGISTRIES_CONFIG)]
    pub registries_config: PathBuf,
    /// State directory of the RUN containers.
    #[arg(long, default_value = "/run/rkube/build")]
    pub run_root: PathBuf,
    /// cgroup hierarchy root.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The node's pod CIDR: RUN steps then get an address on the pod bridge with outbound NAT
    /// (IPAM shared with the node's pods under --root). Without it RUN has loopback only.
    #[arg(long)]
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    /// The node's pod bridge (with --pod-cidr).
    #[arg(long, default_value = "rkube0")]
    pub bridge: String,
    /// The node's network namespace, where bridge and NAT rules live (default: this one).
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// Internal: one step of a Cloud Build config (JSON), run as the config runner's child.
    #[arg(long, hide = true)]
    pub cloudbuild_step: Option<String>,
    /// The build context (with --config: the source directory, default `.`).
    pub context: Option<PathBuf>,
}

/// Runs `rkubelet build`, returning the exit code; errors come back as one line.
pub fn run(args: Args) -> anyhow::Result<i32> {
    run_command(args).map_err(|e| anyhow::anyhow!(one_line(&e)))
}

fn run_command(args: Args) -> anyhow::Result<i32> {
    if crate::runtime::monitor::installed_binary().is_none() {
        // RUN containers then need the runtime binary sealed (see runtime::exe_seal).
        crate::runtime::exe_seal::ensure_sealed()?;
    }
    if let Some(job) = &args.cloudbuild_step {
        let source = args.context.clone().unwrap_or_else(|| PathBuf::from("."));
        return crate::cli::cloudbuild::run_step(&args, job, &source);
    }
    if let Some(config) = &args.config {
        let source = args.context.clone().unwrap_or_else(|| PathBuf::from("."));
        return crate::cli::cloudbuild::run(&args, config, &source);
    }
    let context = args.context.clone().context("a build context directory is required")?;
    build_one(&args, &context).map(|_| 0)
}

/// One Dockerfile build with these arguments; returns the manifest digest.
pub(crate) fn build_one(args: &Args, context: &Path) -> anyhow::Result<Digest> {
    if let Some(p) = &args.platform {
        let want = Platform::parse(p)?;
        let host = Platform::host();
        if want.os != host.os || want.architecture != host.architecture {
            bail!(
                "--platform {p}: only this machine's platform ({}/{}) can be built",
                host.os,
                host.architecture
            );
        }
    }
    let meta = std::fs::metadata(context).with_context(|| format!("build context {}", context.display()))?;
    if !meta.is_dir() {
        bail!("build context {}: not a directory", context.display());
    }
    let dockerfile_path = args.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .with_context(|| format!("reading the Dockerfile {}", dockerfile_path.display()))?;
    // BuildKit prefers <Dockerfile>.dockerignore next to the Dockerfile.
    let specific = PathBuf::from(format!("{}.dockerignore", dockerfile_path.display()));
    let dockerignore = std::fs::read_to_string(&specific)
        .or_else(|_| std::fs::read_to_string(context.join(".dockerignore")))
        .ok();
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(a) {
                Ok(v) => build_args.insert(a.clone(), v),
                Err(_) => None,
            },
        };
    }
    let epoch = match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    {
        Some(v) if !v.is_empty() => {
            Some(v.parse::<u64>().with_context(|| format!("SOURCE_DATE_EPOCH {v:?} is not a number"))?)
        }
        _ => None,
    };
    let names: Vec<String> = args.tags.iter().map(|t| local_name(t)).collect::<anyhow::Result<_>>()?;
    let store = Store::open(&args.root)
        .with_context(|| format!("opening the image store at {}", args.root.display()))?;
    let store = Arc::new(store);
    let registries = RegistriesConfig::load(&args.registries_config)?;
    let host_platform = Platform::host();
    let opts = BuildOptions {
        dockerfile,
        context: context.to_path_buf(),
        dockerignore,
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        source_date_epoch: epoch,
        tags: names.clone(),
        architecture: host_platform.architecture.clone(),
        os: host_platform.os.clone(),
    };
    let quiet = args.quiet;
    let (mut resolve, run, network) = host_parts(args, &store, &registries)?;
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let out: &mut dyn std::io::Write = if quiet { &mut sink } else { &mut stderr };
    let started = std::time::Instant::now();
    let interrupted = Some(interrupt_on_signals());
    let mut host =
        Host { store: store.as_ref(), runtime: run, resolve_image: &mut resolve, out, network, interrupted };
    let built = executor::build(&opts, &mut host)?;
    if quiet {
        println!("{}", built.manifest);
    } else {
        println!(
            "built {} {} in {:.2}s ({} steps run, {} cached, {} RUN)",
            names.join(" "),
            built.manifest,
            started.elapsed().as_secs_f64(),
            built.executed_steps,
            built.cached_steps,
            built.runs_executed
        );
    }
    if args.push {
        for name in &names {
            run_push(&store, registries.clone(), name, None)?;
        }
    }
    Ok(built.manifest)
}

/// Resolves an image reference to a manifest digest: the local store, else a pull.
type Resolve = Box<dyn FnMut(&str) -> Result<Digest, String>>;

/// What a build needs from the node: image resolution, the runtime, the pod network.
fn host_parts(
    args: &Args,
    store: &Arc<Store>,
    registries: &RegistriesConfig,
) -> anyhow::Result<(Resolve, Runtime, Option<crate::network::PodNetwork>)> {
    let client = Arc::new(RegistryClient::new(registries.clone(), credentials()));
    let quiet = args.quiet;
    let pull_store = store.clone();
    let resolve = move |image: &str| -> Result<Digest, String> {
        let name = local_name(image).map_err(|e| format!("{image}: {e}"))?;
        if let Some(d) = pull_store.tag(&name).map_err(|e| e.to_string())? {
            return Ok(d);
        }
        let reference = Reference::parse(image).map_err(|e| format!("{image}: {e}"))?;
        if !quiet {
            eprintln!("pulling {reference}");
        }
        let rt = runtime().map_err(|e| e.to_string())?;
        let pulled = rt
            .block_on(pull::pull(client.clone(), pull_store.clone(), &reference, &PullOptions::default()))
            .map_err(|e| e.to_string())?;
        Ok(pulled.manifest)
    };
    let run = Runtime {
        root: args.run_root.clone(),
        cgroup_root: args.cgroup_root.clone(),
        cgroup_parent: "rkube".into(),
        monitor_binary: crate::runtime::monitor::installed_binary(),
        reparent_init: false,
        cgroups_relative_to_caller: false,
    };
    let network = match args.pod_cidr {
        Some(cidr) => {
            let mut config = crate::network::PodNetworkConfig::new(cidr);
            config.bridge = args.bridge.clone();
            config.netns_dir = args.run_root.join("netns");
            config.state_dir = args.root.join("network");
            config.node_netns = args.node_netns.clone();
            Some(crate::network::PodNetwork::new(config).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => None,
    };
    Ok((Box::new(resolve), run, network))
}

/// Runs a Cloud Build step image as a container with `workspace` at `/workspace`; returns its
/// exit code.
pub(crate) fn run_step_container(
    args: &Args,
    step: &crate::build::cloudbuild::ContainerStep,
    workspace: &Path,
) -> anyhow::Result<i32> {
    let store = Arc::new(
        Store::open(&args.root)
            .with_context(|| format!("opening the image store at {}", args.root.display()))?,
    );
    let registries = RegistriesConfig::load(&args.registries_config)?;
    let (mut resolve, run, network) = host_parts(args, &store, &registries)?;
    let manifest = resolve(&step.image).map_err(|e| anyhow::anyhow!(e))?;
    let mut stderr = std::io::stderr();
    let mut host = Host {
        store: store.as_ref(),
        runtime: run,
        resolve_image: &mut resolve,
        out: &mut stderr,
        network,
        interrupted: Some(interrupt_on_signals()),
    };
    Ok(executor::run_step_image(&mut host, &manifest, step, workspace)?)
}

/// The first SIGINT or SIGTERM asks the build to stop (its RUN is killed, and the build fails and
/// removes what it made, as a failed build does); a second one, or 10 s, ends the process.
fn interrupt_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let first = move || {
        set.store(true, Ordering::Relaxed);
        eprintln!("interrupted: stopping the build and removing what it made (again to stop at once)");
    };
    // A step that cannot be stopped half-way (a pull, a push) does not hold the process.
    let grace = Some(std::time::Duration::from_secs(10));
    super::signals::on_interrupt(first, super::signals::Then::ExitOnSecond { grace });
    flag
}
