//! `rkubelet image` subcommands: pull, push, tag, ls, rm, inspect, import.

use crate::image::config::{DEFAULT_REGISTRIES_CONFIG, RegistriesConfig};
use crate::image::credentials::DockerConfig;
use crate::image::digest::Digest;
use crate::image::manifest::{Manifest, ManifestError};
use crate::image::platform::Platform;
use crate::image::pull::{self, PullEvent, PullOptions};
use crate::image::push::{self, PushEvent};
use crate::image::reference::Reference;
use crate::image::registry::RegistryClient;
use crate::image::registry::client::CredentialLookup;
use crate::image::store::Store;
use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Arguments of `rkubelet image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Content store root directory.
    #[arg(long, global = true, env = "RKUBE_ROOT", default_value = "/var/lib/rkube")]
    pub root: PathBuf,
    /// Registries config (mirrors, locations, insecure hosts, CAs); a missing file means none.
    #[arg(long, global = true, env = "RKUBE_REGISTRIES_CONFIG", default_value = DEFAULT_REGISTRIES_CONFIG)]
    pub registries_config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// `rkubelet image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download an image (all layers, verified and unpacked) and tag it locally.
    ///
    /// Names are normalised like docker's: `nginx:1.10` is `docker.io/library/nginx:1.10`.
    /// Registries are reached over HTTPS, except loopback and `insecure:` hosts (plain HTTP).
    /// Mirrors, locations, insecure hosts and extra CAs come from --registries-config (YAML), e.g.
    ///
    ///   mirrors:                   # tried first, for pulls only
    ///     docker.io: ["http://127.0.0.1:5000"]
    ///   locations:                 # where a registry is served, for pulls and pushes
    ///     gcr.io: "https://my.registry:5443"
    ///   insecure: ["10.0.0.5:5000"]
    ///   ca:
    ///     my.registry:5443: /etc/rkube/my-ca.pem
    ///
    /// Credentials come from docker's config.json ($DOCKER_CONFIG or ~/.docker): `auths`,
    /// `credHelpers` and `credsStore`. For GCR / Artifact Registry use the user `_json_key` with a
    /// service-account key, or `oauth2accesstoken` with an access token.
    #[command(verbatim_doc_comment)]
    Pull {
        /// Image reference, e.g. nginx:1.10, gcr.io/project/app:v1, 127.0.0.1:5000/a@sha256:…
        image: String,
        /// Platform to pick from a multi-platform index (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = pull::DEFAULT_CONCURRENT_LAYERS)]
        concurrency: usize,
        /// Print only the manifest digest.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Upload a local image (missing blobs, then the manifest) to its registry.
    ///
    /// Tag the image with the destination first (`rkubelet image tag nginx:1.10 gcr.io/p/nginx:1.10`)
    /// or give TARGET. Credentials come from docker's config.json, as for pull. A registry with a
    /// `locations:` entry in --registries-config is pushed to at that address (mirrors are never
    /// pushed to); credentials and CA are looked up by the location's host, then the registry name.
    Push {
        /// Local image name; also the destination unless TARGET is given.
        image: String,
        /// Destination reference.
        target: Option<String>,
    },
    /// Give a local image another name (e.g. a registry to push it to).
    Tag { source: String, target: String },
    /// List local images.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove image names and free the layers no other image uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's manifest, config and layer directories.
    Inspect {
        image: String,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "json")]
        output: Output,
    },
    /// Create a one-layer image from a root filesystem directory or a tarball.
    Import { source: PathBuf, name: String },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs `rkubelet image`, returning the process exit code. Errors come back as one line, each cause once.
pub fn run(args: Args) -> anyhow::Result<i32> {
    run_command(args).map_err(|e| anyhow::anyhow!(one_line(&e)))
}

/// The error and its causes on one line, skipping causes whose text is already included.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

fn run_command(args: Args) -> anyhow::Result<i32> {
    let store = Store::open(&args.root)
        .with_context(|| format!("opening the image store at {}", args.root.display()))?;
    match args.command {
        Command::Pull { image, platform, concurrency, quiet } => {
            let config = RegistriesConfig::load(&args.registries_config)?;
            let platform = match platform {
                Some(p) => Platform::parse(&p)?,
                None => Platform::host(),
            };
            run_pull(store, config, &image, platform, concurrency, quiet)
        }
        Command::Push { image, target } => {
            let config = RegistriesConfig::load(&args.registries_config)?;
            run_push(&store, config, &image, target.as_deref())
        }
        Command::Tag { source, target } => {
            let digest = lookup(&store, &source)?;
            let name = local_name(&target)?;
            store.set_tag(&name, &digest)?;
            println!("tagged {name} {digest}");
            Ok(0)
        }
        Command::Ls { output } => list(&store, output),
        Command::Rm { images } => remove(&store, &images),
        Command::Inspect { image, output } => inspect(&store, &image, output),
        Command::Import { source, name } => {
            let name = local_name(&name)?;
            let digest = crate::image::import::import(&store, &source, &name)?;
            println!("imported {name} {digest}");
            Ok(0)
        }
    }
}

/// The store name for a user-given reference (normalised like docker).
pub(crate) fn local_name(s: &str) -> anyhow::Result<String> {
    let r = Reference::parse(s)?;
    Ok(match r.digest() {
        Some(d) if r.tag().is_none() => format!("{}@{d}", r.name()),
        _ => format!("{}:{}", r.name(), r.tag().unwrap_or("latest")),
    })
}

/// The manifest digest of a local image given by name (or by a digest / its unique prefix).
fn lookup(store: &Store, s: &str) -> anyhow::Result<Digest> {
    let tags = store.tags()?;
    if let Ok(name) = local_name(s)
        && let Some(d) = tags.get(&name)
    {
        return Ok(d.clone());
    }
    let prefix = s.strip_prefix("sha256:").unwrap_or(s);
    if prefix.len() >= 6 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<&Digest> = tags.values().filter(|d| d.hex().starts_with(prefix)).collect();
        if let Some(first) = hits.first()
            && hits.iter().all(|d| d == first)
        {
            return Ok((*first).clone());
        }
    }
    bail!("no such image: {s}")
}

pub(crate) fn credentials() -> CredentialLookup {
    match DockerConfig::load_default() {
        Ok(c) => c.into_lookup(),
        Err(e) => {
            tracing::warn!("ignoring docker credentials: {e}");
            DockerConfig::default().into_lookup()
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run_pull(
    store: Store,
    config: RegistriesConfig,
    image: &str,
    platform: Platform,
    concurrency: usize,
    quiet: bool,
) -> anyhow::Result<i32> {
    let reference = Reference::parse(image)?;
    let client = Arc::new(RegistryClient::new(config, credentials()));
    let started = Instant::now();
    let reporter = Arc::new(Reporter::new(quiet));
    let progress = {
        let r = reporter.clone();
        Arc::new(move |e: PullEvent| r.event(e)) as pull::ProgressFn
    };
    let opts = PullOptions { platform, concurrent_layers: concurrency, progress: Some(progress) };
    if !quiet {
        eprintln!("pulling {reference}");
    }
    let pulled = runtime()?.block_on(pull::pull(client, Arc::new(store), &reference, &opts));
    reporter.finish();
    let pulled = pulled?;
    if quiet {
        println!("{}", pulled.manifest);
    } else {
        println!(
            "pulled {} {} from {} in {:.2}s",
            pulled.name,
            pulled.manifest,
            pulled.endpoint,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

/// Renders pull progress: bars on a terminal, one line per finished layer otherwise.
struct Reporter {
    quiet: bool,
    bars: Option<MultiProgress>,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
    sizes: Mutex<HashMap<Digest, u64>>,
}

impl Reporter {
    fn new(quiet: bool) -> Reporter {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Reporter { quiet, bars, layers: Mutex::new(HashMap::new()), sizes: Mutex::new(HashMap::new()) }
    }

    fn event(&self, e: PullEvent) {
        if self.quiet {
            return;
        }
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        match (e, &self.bars) {
            (PullEvent::Resolved { manifest, endpoint, layers: ls }, bars) => {
                let total: u64 = ls.iter().map(|(_, s)| s).sum();
                let msg =
                    format!("manifest {manifest} from {endpoint}: {} layers, {}", ls.len(), human(total));
                match bars {
                    Some(b) => {
                        let _ = b.println(msg);
                        let style =
                            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> ");
                        for (d, size) in ls {
                            let pb = b.add(ProgressBar::new(size));
                            pb.set_style(style.clone());
                            pb.set_prefix(d.short().to_string());
                            layers.insert(d, pb);
                        }
                    }
                    None => {
                        eprintln!("{msg}");
                        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
                        sizes.extend(ls);
                    }
                }
            }
            (PullEvent::LayerProgress { layer, received }, Some(_)) => {
                if let Some(pb) = layers.get(&layer) {
                    pb.set_position(received);
                }
            }
            (PullEvent::LayerProgress { .. }, None) => {}
            (PullEvent::LayerCached { layer }, Some(_)) => {
                if let Some(pb) = layers.get(&layer) {
                    pb.finish_with_message("already present");
                }
            }
            (PullEvent::LayerDone { layer }, Some(_)) => {
                if let Some(pb) = layers.get(&layer) {
                    pb.finish_with_message("done");
                }
            }
            (PullEvent::LayerRetry { layer, attempt, error }, Some(b)) => {
                let _ = b.println(format!("layer {} retry {attempt}: {error}", layer.short()));
            }
            (PullEvent::LayerCached { layer }, None) => eprintln!("layer {} already present", layer.short()),
            (PullEvent::LayerDone { layer }, None) => {
                let size =
                    self.sizes.lock().unwrap_or_else(|e| e.into_inner()).get(&layer).copied().unwrap_or(0);
                eprintln!("layer {} done ({})", layer.short(), human(size));
            }
            (PullEvent::LayerRetry { layer, attempt, error }, None) => {
                eprintln!("layer {} retry {attempt}: {error}", layer.short())
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bars {
            let _ = b.clear();
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub(crate) fn run_push(
    store: &Store,
    config: RegistriesConfig,
    image: &str,
    target: Option<&str>,
) -> anyhow::Result<i32> {
    let local = local_name(image)?;
    let target = Reference::parse(target.unwrap_or(image))?;
    let client = RegistryClient::new(config, credentials());
    let report = |e: PushEvent| match e {
        PushEvent::BlobExists { digest } => eprintln!("blob {} already in the registry", digest.short()),
        PushEvent::BlobPushed { digest, size } => {
            eprintln!("blob {} pushed ({})", digest.short(), human(size))
        }
    };
    if store.tag(&local)?.is_none() {
        bail!("no such image: {image}");
    }
    let digest = runtime()?.block_on(push::push(&client, store, &local, &target, &report))?;
    println!("pushed {target} {digest}");
    Ok(0)
}

#[derive(serde::Serialize)]
struct ImageSummary {
    name: String,
    digest: Digest,
    size: u64,
    layers: usize,
}

fn summaries(store: &Store) -> anyhow::Result<Vec<ImageSummary>> {
    let mut out = Vec::new();
    for (name, digest) in store.tags()? {
        let (size, layers) = match store.manifest_refs(&digest) {
            Ok(r) => (r.layers.iter().map(|l| l.size).sum(), r.layers.len()),
            Err(_) => (0, 0),
        };
        out.push(ImageSummary { name, digest, size, layers });
    }
    Ok(out)
}

fn list(store: &Store, output: Output) -> anyhow::Result<i32> {
    let images = summaries(store)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&images)?),
        Output::Table => {
            let width = images.iter().map(|i| i.name.len()).max().unwrap_or(0).max(5);
            println!("{:<width$}  {:<12}  {:>6}  {:>10}", "IMAGE", "DIGEST", "LAYERS", "SIZE");
            for i in images {
                println!(
                    "{:<width$}  {:<12}  {:>6}  {:>10}",
                    i.name,
                    i.digest.short(),
                    i.layers,
                    human(i.size)
                );
            }
        }
    }
    Ok(0)
}

fn remove(store: &Store, images: &[String]) -> anyhow::Result<i32> {
    let mut missing = Vec::new();
    for image in images {
        let name = local_name(image).unwrap_or_else(|_| image.clone());
        match store.remove_tag(&name)? {
            Some(d) => println!("untagged {name} {d}"),
            None => missing.push(image.clone()),
        }
    }
    let report = store.prune()?;
    println!(
        "removed {} layers and {} blobs ({})",
        report.layers.len(),
        report.blobs.len(),
        human(report.blob_bytes)
    );
    if !missing.is_empty() {
        bail!("no such image: {}", missing.join(", "));
    }
    Ok(0)
}

fn inspect(store: &Store, image: &str, output: Output) -> anyhow::Result<i32> {
    let digest = lookup(store, image)?;
    let body = store.read_blob(&digest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&body)?;
    let (config, layers) = match Manifest::parse(None, &body) {
        Ok(Manifest::Image(m)) => {
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&m.config.digest)?)?;
            let dirs =
                store.image_layers(&digest).map(|v| v.into_iter().map(|p| p.display().to_string()).collect());
            (config, dirs.unwrap_or_default())
        }
        Ok(Manifest::Index(_)) => (serde_json::Value::Null, Vec::<String>::new()),
        Err(e @ ManifestError::Schema1(_)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::from(e).context(format!("image {image}"))),
    };
    let names: Vec<String> =
        store.tags()?.into_iter().filter(|(_, d)| d == &digest).map(|(n, _)| n).collect();
    let doc = serde_json::json!({
        "names": names, "digest": digest, "manifest": manifest, "config": config, "layerDirs": layers,
    });
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Output::Table => {
            println!("names:   {}", names.join(", "));
            println!("digest:  {digest}");
            println!(
                "platform: {}/{}",
                config["os"].as_str().unwrap_or("?"),
                config["architecture"].as_str().unwrap_or("?")
            );
            for l in layers {
                println!("layer:   {l}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        Image(Args),
    }

    #[test]
    fn root_and_config_accepted_before_and_after_the_subcommand() {
        for argv in [
            &["x", "image", "--root", "/r", "--registries-config", "/c", "pull", "nginx:1.10"][..],
            &["x", "image", "pull", "nginx:1.10", "--root", "/r", "--registries-config", "/c"][..],
        ] {
            let Top::Image(a) = Cli::try_parse_from(argv).unwrap().cmd;
            assert_eq!(a.root, PathBuf::from("/r"));
            assert_eq!(a.registries_config, PathBuf::from("/c"));
            assert!(matches!(a.command, Command::Pull { .. }));
        }
        let Top::Image(a) = Cli::try_parse_from(["x", "image", "ls", "-o", "json"]).unwrap().cmd;
        assert!(matches!(a.command, Command::Ls { output: Output::Json }));
    }

    #[test]
    fn local_names_are_normalised() {
        assert_eq!(local_name("nginx:1.10").unwrap(), "docker.io/library/nginx:1.10");
        assert_eq!(local_name("gcr.io/p/a").unwrap(), "gcr.io/p/a:latest");
        assert!(local_name("Bad Name").is_err());
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
    }
}
