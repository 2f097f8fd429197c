//! Runs a parsed Dockerfile against the node's store and runtime.
//!
//! Each stage starts from `scratch`, an earlier stage, or an image (resolved by the caller: the
//! local store, else a pull through the normal pull path). Every instruction is one step keyed
//! like BuildKit does it (the parent's key, the instruction, the build arguments in scope, and
//! for COPY/ADD a content checksum of the sources after `.dockerignore`); a step whose key is in
//! the cache and whose layers are still in the store is not run again.
//!
//! Steps that change files (RUN, COPY, ADD, a WORKDIR that creates its directory) work on an
//! overlay of the stage's layers with a fresh upper dir in the store's `tmp/`; the upper dir
//! becomes the new layer (see [`super::layer`]) and goes into the store through the same verified
//! unpack path as pulled layers. COPY/ADD mount that overlay in the builder and copy through
//! fd-relative calls confined to it; RUN is a container of rkube's own runtime with the default
//! confinement (the 14 default capabilities, the default seccomp profile, masked and read-only
//! `/proc` paths, its own pid/ipc/uts/mount namespaces and a private network namespace).
//! A failed step leaves nothing behind: its work dir, mount and container are removed on drop.

use crate::build::chmod::Chmod;
use crate::build::context::{self, CopyOptions, Source};
use crate::build::dockerfile::{
    self, Command, CopyArgs, Dockerfile, Healthcheck, Instruction, Kind, RunNetwork,
};
use crate::build::ignore::{Matcher, clean};
use crate::build::layer::{self, LayerError};
use crate::build::lex::{self, Env};
use crate::image::digest::{Digest, Hasher};
use crate::image::store::{Store, StoreError, UNCOMPRESSED_LAYER};
use crate::runtime::container::{CreateRequest, Runtime, RuntimeError};
use crate::runtime::rootfs::RootfsSource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Media type of the manifests a build writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Build arguments usable without an `ARG` (kept out of history and cache keys).
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Why a build failed: one line naming the step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    #[error("Dockerfile line {line}: {message}")]
    Step { line: usize, message: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Dockerfile line {line}: interrupted")]
    Interrupted { line: usize },
}

fn step_err(line: usize, message: impl std::fmt::Display) -> BuildError {
    BuildError::Step { line, message: message.to_string() }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context directory.
    pub context: PathBuf,
    /// `.dockerignore` text (if any).
    pub dockerignore: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `SOURCE_DATE_EPOCH`: every timestamp of the image, and layer mtimes clamped to it.
    pub source_date_epoch: Option<u64>,
    /// Store names to tag the result with (while the build still holds its store lease).
    pub tags: Vec<String>,
    /// OCI architecture and os of the result.
    pub architecture: String,
    pub os: String,
}

/// The host side of a build: store, runtime, base-image resolution, output.
pub struct Host<'a> {
    pub store: &'a Store,
    pub runtime: Runtime,
    /// Resolves an image reference to a manifest digest in the store (pulling if needed).
    pub resolve_image: &'a mut dyn FnMut(&str) -> Result<Digest, String>,
    /// Progress lines.
    pub out: &'a mut dyn Write,
    /// The node's pod network: RUN steps get a network namespace on its bridge with outbound
    /// NAT. `None`: a private namespace with loopback only.
    pub network: Option<crate::network::PodNetwork>,
    /// Set (by a signal handler) to stop the build: the running RUN is killed, no further step
    /// starts, and the build fails and cleans up as any failed build does.
    pub interrupted: Option<Arc<AtomicBool>>,
}

impl Host<'_> {
    fn is_interrupted(&self) -> bool {
        self.interrupted.as_ref().is_some_and(|i| i.load(Ordering::Relaxed))
    }
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Digest,
    pub config: Digest,
    /// RUN steps that ran (not served from the cache).
    pub runs_executed: usize,
    /// Steps served from the cache.
    pub cached_steps: usize,
    /// Steps executed.
    pub executed_steps: usize,
}

/// A layer of the image being built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// An image in progress: its config (as JSON, so fields we do not model survive) and layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    pub config: Value,
    pub layers: Vec<LayerRef>,
}

impl ImageState {
    fn cfg(&mut self) -> &mut serde_json::Map<String, Value> {
        let root = self.config.as_object_mut().expect("config is an object");
        let c = root.entry("config").or_insert_with(|| json!({}));
        if !c.is_object() {
            *c = json!({});
        }
        c.as_object_mut().expect("object")
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.config.get("config").and_then(|c| c.get(key)).filter(|v| !v.is_null())
    }

    fn env_list(&self) -> Vec<String> {
        self.get("Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env_list();
        let entry = format!("{key}={value}");
        match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
        self.cfg().insert("Env".into(), json!(env));
    }

    fn workdir(&self) -> String {
        self.get("WorkingDir").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("/").to_string()
    }

    fn shell(&self) -> Vec<String> {
        self.get("Shell")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        let root = self.config.as_object_mut().expect("object");
        let h = root.entry("history").or_insert_with(|| json!([]));
        if !h.is_array() {
            *h = json!([]);
        }
        let mut entry =
            json!({ "created": created, "created_by": created_by, "comment": "buildkit.dockerfile.v0" });
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        h.as_array_mut().expect("array").push(entry);
    }

    fn push_layer(&mut self, layer: LayerRef) {
        let diff_ids = {
            let root = self.config.as_object_mut().expect("object");
            let rootfs = root.entry("rootfs").or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
            rootfs["type"] = json!("layers");
            if !rootfs.get("diff_ids").is_some_and(Value::is_array) {
                rootfs["diff_ids"] = json!([]);
            }
            rootfs["diff_ids"].as_array_mut().expect("array")
        };
        diff_ids.push(json!(layer.diff_id.to_string()));
        self.layers.push(layer);
    }
}

/// One stage's progress.
struct StageState {
    image: ImageState,
    key: Digest,
    /// ARGs declared in this stage with a value.
    args: BTreeMap<String, String>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

static WORK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Builds the image; the caller tags it.
pub fn build(opts: &BuildOptions, host: &mut Host<'_>) -> Result<Built, BuildError> {
    let file = dockerfile::parse(&opts.dockerfile)?;
    let ignore = match &opts.dockerignore {
        Some(text) => Matcher::parse(text).map_err(|e| BuildError::Setup(e.to_string()))?,
        None => Matcher::default(),
    };
    let created = match opts.source_date_epoch {
        Some(epoch) => rfc3339(epoch),
        None => rfc3339(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        ),
    };
    let mut exec = Executor {
        opts,
        host,
        file: &file,
        ignore,
        created,
        global_args: BTreeMap::new(),
        global_declared: BTreeSet::new(),
        stages: Vec::new(),
        runs_executed: 0,
        cached_steps: 0,
        executed_steps: 0,
        cache_dir: None,
        created_layers: Vec::new(),
        written_cache: Vec::new(),
    };
    let cache_dir = exec.host.store.root().join("build-cache");
    std::fs::create_dir_all(&cache_dir)
        .map_err(|e| BuildError::Setup(format!("creating the build cache: {e}")))?;
    exec.cache_dir = Some(cache_dir);
    // A prune must not take the layers of this build before it is tagged.
    let lease = exec.host.store.lease()?;
    let result = exec.run().and_then(|built| {
        for name in &opts.tags {
            exec.host.store.set_tag(name, &built.manifest)?;
        }
        Ok(built)
    });
    drop(lease);
    if result.is_err() {
        // Nothing of a failed build stays: its cache entries, and the layers it made (unless a
        // tagged image has the same layer).
        for path in &exec.written_cache {
            let _ = std::fs::remove_file(path);
        }
        if let Err(e) = exec.host.store.discard_layers(&exec.created_layers) {
            let _ = writeln!(exec.host.out, "warning: removing the failed build's layers: {e}");
        }
    }
    result
}

struct Executor<'a, 'h> {
    opts: &'a BuildOptions,
    host: &'a mut Host<'h>,
    file: &'a Dockerfile,
    ignore: Matcher,
    created: String,
    global_args: BTreeMap<String, String>,
    global_declared: BTreeSet<String>,
    stages: Vec<Option<StageState>>,
    runs_executed: usize,
    cached_steps: usize,
    executed_steps: usize,
    cache_dir: Option<PathBuf>,
    /// Layers this build added to the store (diffID, blob), removed if it fails.
    created_layers: Vec<(Digest, Digest)>,
    /// Cache entries this build wrote, removed if it fails.
    written_cache: Vec<PathBuf>,
}

impl Executor<'_, '_> {
    fn run(&mut self) -> Result<Built, BuildError> {
        let file = self.file;
        let escape = file.escape;
        for ins in &file.global_args {
            let Kind::Arg(list) = &ins.kind else { continue };
            for (name, default) in list {
                let value = match self.opts.build_args.get(name) {
                    Some(v) => Some(v.clone()),
                    None => default
                        .as_ref()
                        .map(|d| lex::process_word(d, &self.global_args, escape))
                        .transpose()
                        .map_err(|e| step_err(ins.line, e))?,
                };
                self.global_declared.insert(name.clone());
                if let Some(v) = value {
                    self.global_args.insert(name.clone(), v);
                }
            }
        }
        let target = match &self.opts.target {
            Some(t) => {
                let t = t.to_ascii_lowercase();
                self.file
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(t.as_str()))
                    .ok_or_else(|| BuildError::Setup(format!("target stage {t:?} could not be found")))?
            }
            None => self.file.stages.len() - 1,
        };
        let needed = self.reachable(target)?;
        for i in 0..=target {
            if !needed.contains(&i) {
                self.stages.push(None);
                continue;
            }
            let st = self.stage(i)?;
            self.stages.push(Some(st));
        }
        let st = self.stages[target].take().expect("the target stage was built");
        self.finish(st)
    }

    /// The stages the target needs (FROM and COPY --from), by index.
    fn reachable(&self, target: usize) -> Result<BTreeSet<usize>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &self.file.stages[i];
            let base = lex::process_word(&stage.base, &self.global_args, self.file.escape)
                .map_err(|e| step_err(stage.line, e))?;
            if let Some(j) = self.stage_index(&base, i) {
                todo.push(j);
            }
            for ins in &stage.instructions {
                if let Kind::Copy(CopyArgs { from: Some(from), .. }) = &ins.kind {
                    let from =
                        lex::process_word(from, &self.global_args, self.file.escape).unwrap_or_default();
                    if let Some(j) = self.stage_index(&from, i) {
                        todo.push(j);
                    }
                }
            }
        }
        Ok(needed)
    }

    /// An earlier stage named (or numbered) `name`, seen from stage `before`.
    fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) =
            self.file.stages[..before].iter().position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    fn say(&mut self, line: impl std::fmt::Display) {
        let _ = writeln!(self.host.out, "{line}");
    }

    fn stage(&mut self, i: usize) -> Result<StageState, BuildError> {
        let file = self.file;
        let stage = &file.stages[i];
        let escape = self.file.escape;
        let base =
            lex::process_word(&stage.base, &self.global_args, escape).map_err(|e| step_err(stage.line, e))?;
        self.say(format_args!(
            "STEP {}: FROM {base}{}",
            stage.line,
            stage.name.as_ref().map(|n| format!(" AS {n}")).unwrap_or_default()
        ));
        let mut st = if base == "scratch" {
            let image = ImageState {
                config: json!({
                    "architecture": self.opts.architecture,
                    "os": self.opts.os,
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                }),
                layers: Vec::new(),
            };
            StageState { image, key: Digest::sha256_of(b"scratch"), args: BTreeMap::new(), cmd_set: false }
        } else if let Some(j) = self.stage_index(&base, i) {
            let parent = self.stages[j]
                .as_ref()
                .ok_or_else(|| step_err(stage.line, format!("stage {base} was not built")))?;
            StageState {
                image: parent.image.clone(),
                key: parent.key.clone(),
                args: BTreeMap::new(),
                cmd_set: false,
            }
        } else {
            let manifest = (self.host.resolve_image)(&base).map_err(|e| step_err(stage.line, e))?;
            let image = self.load_image(&manifest).map_err(|e| step_err(stage.line, e))?;
            StageState {
                image,
                key: Digest::sha256_of(format!("FROM {manifest}").as_bytes()),
                args: BTreeMap::new(),
                cmd_set: false,
            }
        };
        if st.image.get("Env").is_none_or(|e| {
            !e.as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str().is_some_and(|s| s.starts_with("PATH="))))
        }) {
            let (k, v) = DEFAULT_PATH.split_once('=').expect("has =");
            st.image.set_env(k, v);
        }
        // ONBUILD triggers of the base run first and are not inherited further.
        let triggers: Vec<String> = st
            .image
            .get("OnBuild")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if !triggers.is_empty() {
            st.image.cfg().insert("OnBuild".into(), Value::Null);
            for t in triggers {
                let (kw, rest) = t.trim().split_once(char::is_whitespace).unwrap_or((t.trim(), ""));
                let ins = dockerfile::parse_instruction(kw, rest, &t, Vec::new(), stage.line, escape)?;
                self.instruction(&mut st, &ins)?;
            }
        }
        for ins in &stage.instructions {
            self.instruction(&mut st, ins)?;
        }
        Ok(st)
    }

    fn load_image(&self, manifest: &Digest) -> Result<ImageState, String> {
        load_image(self.host.store, manifest)
    }
}

/// An image of the store as the starting state of a stage.
fn load_image(store: &Store, manifest: &Digest) -> Result<ImageState, String> {
    {
        let refs = store.manifest_refs(manifest).map_err(|e| e.to_string())?;
        let config_desc = refs.config.ok_or_else(|| format!("{manifest} is not an image manifest"))?;
        let config: Value =
            serde_json::from_slice(&store.read_blob(&config_desc.digest).map_err(|e| e.to_string())?)
                .map_err(|e| format!("image config {}: {e}", config_desc.digest))?;
        let diff_ids = store.config_diff_ids(&config_desc.digest).map_err(|e| e.to_string())?;
        if diff_ids.len() != refs.layers.len() {
            return Err(format!(
                "image {manifest}: {} layers but {} diffIDs",
                refs.layers.len(),
                diff_ids.len()
            ));
        }
        let layers = refs
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| LayerRef {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
                size: d.size,
                diff_id,
            })
            .collect();
        let mut config = config;
        if !config.is_object() {
            return Err(format!("image config of {manifest} is not an object"));
        }
        // Build-time fields of the base do not carry over.
        if let Some(o) = config.as_object_mut() {
            o.remove("container_config");
            o.remove("container");
            o.remove("docker_version");
            o.remove("id");
            o.remove("parent");
        }
        Ok(ImageState { config, layers })
    }
}

impl Executor<'_, '_> {
    /// The variables for expansion in a stage: its ARGs, overridden by ENV.
    fn expand_env(&self, st: &StageState) -> Env {
        let mut env = st.args.clone();
        for e in st.image.env_list() {
            if let Some((k, v)) = e.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }

    fn instruction(&mut self, st: &mut StageState, ins: &Instruction) -> Result<(), BuildError> {
        let escape = self.file.escape;
        let line = ins.line;
        if self.host.is_interrupted() {
            return Err(BuildError::Interrupted { line });
        }
        if let Kind::Arg(list) = &ins.kind {
            let env = self.expand_env(st);
            for (name, default) in list {
                let value = match (self.opts.build_args.get(name), default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => {
                        Some(lex::process_word(d, &env, escape).map_err(|e| step_err(line, e))?)
                    }
                    (None, None) if self.global_declared.contains(name) => {
                        self.global_args.get(name).cloned()
                    }
                    (None, None) => None,
                };
                if let Some(v) = value {
                    st.args.insert(name.clone(), v);
                }
            }
            return Ok(());
        }
        // COPY/ADD sources are resolved before the cache lookup: their content is part of the key.
        let mut key_extra = String::new();
        let mut sources = None;
        if let Kind::Copy(c) | Kind::Add(c) = &ins.kind {
            let (key, srcs) = self.copy_sources(st, c, line)?;
            key_extra = key;
            sources = Some(srcs);
        }
        let args_in_key: BTreeMap<&String, &String> =
            st.args.iter().filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str())).collect();
        let key = {
            let mut h = Hasher::new();
            h.update(st.key.to_string().as_bytes());
            h.update(b"\0");
            h.update(ins.original.as_bytes());
            h.update(b"\0");
            h.update(serde_json::to_string(&args_in_key).unwrap_or_default().as_bytes());
            h.update(b"\0");
            h.update(key_extra.as_bytes());
            if let Some(e) = self.opts.source_date_epoch {
                h.update(format!("\0epoch={e}").as_bytes());
            }
            h.finish()
        };
        let label = format!("STEP {line}: {}", ins.original);
        if !self.opts.no_cache
            && let Some(cached) = self.cache_get(&key)
        {
            self.say(format_args!("{label} (cached)"));
            st.image = cached;
            st.key = key;
            if matches!(ins.kind, Kind::Cmd(_)) {
                st.cmd_set = true;
            }
            self.cached_steps += 1;
            return Ok(());
        }
        self.say(&label);
        self.executed_steps += 1;
        let env = self.expand_env(st);
        let word = |w: &str| lex::process_word(w, &env, escape).map_err(|e| step_err(line, e));
        let created = self.created.clone();
        match &ins.kind {
            Kind::Arg(_) => unreachable!("handled above"),
            Kind::Env(pairs) => {
                let mut text = Vec::new();
                let expanded: Vec<(String, String)> =
                    pairs.iter().map(|(k, v)| Ok((word(k)?, word(v)?))).collect::<Result<_, BuildError>>()?;
                for (k, v) in expanded {
                    st.image.set_env(&k, &v);
                    text.push(format!("{k}={v}"));
                }
                st.image.push_history(&created, &format!("ENV {}", text.join(" ")), true);
            }
            Kind::Label(pairs) => {
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (word(k)?, word(v)?);
                    let labels = st.image.cfg().entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    labels[&k] = json!(v);
                    text.push(format!("{k}={v}"));
                }
                st.image.push_history(&created, &format!("LABEL {}", text.join(" ")), true);
            }
            Kind::Maintainer(m) => {
                st.image.config["author"] = json!(m);
                st.image.push_history(&created, &format!("MAINTAINER {m}"), true);
            }
            Kind::User(u) => {
                let u = word(u)?;
                st.image.cfg().insert("User".into(), json!(u));
                st.image.push_history(&created, &format!("USER {u}"), true);
            }
            Kind::Expose(ports) => {
                let mut list = Vec::new();
                for p in ports {
                    let p = word(p)?;
                    let p = if p.contains('/') { p.to_ascii_lowercase() } else { format!("{p}/tcp") };
                    let (num, proto) = p.split_once('/').expect("has /");
                    if num.split('-').any(|n| n.parse::<u16>().is_err())
                        || !matches!(proto, "tcp" | "udp" | "sctp")
                    {
                        return Err(step_err(line, format!("invalid port {p:?}")));
                    }
                    let ports = st.image.cfg().entry("ExposedPorts").or_insert_with(|| json!({}));
                    if !ports.is_object() {
                        *ports = json!({});
                    }
                    ports[&p] = json!({});
                    list.push(p);
                }
                st.image.push_history(&created, &format!("EXPOSE map[{}]", list.join(" ")), true);
            }
            Kind::Volume(vols) => {
                for v in vols {
                    let v = word(v)?;
                    if v.is_empty() {
                        return Err(step_err(line, "VOLUME specified can not be an empty string"));
                    }
                    let volumes = st.image.cfg().entry("Volumes").or_insert_with(|| json!({}));
                    if !volumes.is_object() {
                        *volumes = json!({});
                    }
                    volumes[&v] = json!({});
                }
                st.image.push_history(
                    &created,
                    &format!("VOLUME {}", serde_json::to_string(vols).unwrap_or_default()),
                    true,
                );
            }
            Kind::Cmd(c) => {
                let argv = self.command_argv(st, c);
                st.image.cfg().insert("Cmd".into(), json!(argv));
                st.image.cfg().insert("ArgsEscaped".into(), json!(true));
                st.cmd_set = true;
                st.image.push_history(
                    &created,
                    &format!("CMD {}", serde_json::to_string(&argv).unwrap_or_default()),
                    true,
                );
            }
            Kind::Entrypoint(c) => {
                let argv = self.command_argv(st, c);
                st.image.cfg().insert("Entrypoint".into(), json!(argv));
                if !st.cmd_set {
                    st.image.cfg().insert("Cmd".into(), Value::Null);
                }
                st.image.push_history(
                    &created,
                    &format!("ENTRYPOINT {}", serde_json::to_string(&argv).unwrap_or_default()),
                    true,
                );
            }
            Kind::Shell(s) => {
                st.image.cfg().insert("Shell".into(), json!(s));
                st.image.push_history(
                    &created,
                    &format!("SHELL {}", serde_json::to_string(s).unwrap_or_default()),
                    true,
                );
            }
            Kind::StopSignal(s) => {
                let s = word(s)?;
                if !valid_signal(&s) {
                    return Err(step_err(line, format!("invalid signal {s:?}")));
                }
                st.image.cfg().insert("StopSignal".into(), json!(s));
                st.image.push_history(&created, &format!("STOPSIGNAL {s}"), true);
            }
            Kind::Healthcheck(hc) => {
                st.image.cfg().insert("Healthcheck".into(), healthcheck_json(hc));
                st.image.push_history(
                    &created,
                    &format!("HEALTHCHECK {}", serde_json::to_string(&hc.test).unwrap_or_default()),
                    true,
                );
            }
            Kind::OnBuild(t) => {
                let list = st.image.cfg().entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                list.as_array_mut().expect("array").push(json!(t));
                st.image.push_history(&created, &format!("ONBUILD {t}"), true);
            }
            Kind::Workdir(w) => {
                let w = word(w)?;
                let path = if w.starts_with('/') {
                    clean(&w)
                } else {
                    clean(&format!("{}/{w}", st.image.workdir()))
                };
                st.image.cfg().insert("WorkingDir".into(), json!(path));
                let created_by = format!("WORKDIR {path}");
                let layer = if path == "/" {
                    None
                } else {
                    self.on_rootfs(&st.image, line, |root| {
                        crate::runtime::fsutil::mkdir_all_in_root(root, Path::new(&path))
                            .map(drop)
                            .map_err(|e| format!("creating {path}: {e}"))
                    })?
                };
                self.add_layer(st, layer, &created_by);
            }
            Kind::Run { command, heredocs, network } => {
                let layer = self.run_step(st, line, command, heredocs, *network)?;
                self.runs_executed += 1;
                let mut shown = match command {
                    Command::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                    Command::Shell(s) => format!("{} {s}", st.image.shell().join(" ")),
                };
                if !args_in_key.is_empty() {
                    let args: Vec<String> = args_in_key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    shown = format!("|{} {} {shown}", args.len(), args.join(" "));
                }
                self.add_layer(st, layer, &format!("RUN {shown} # buildkit"));
            }
            Kind::Copy(c) | Kind::Add(c) => {
                let is_add = matches!(ins.kind, Kind::Add(_));
                let layer = self.copy_step(st, line, c, sources.take().unwrap_or_default(), is_add, &env)?;
                let what = if is_add { "ADD" } else { "COPY" };
                let body = ins.original.split_once(char::is_whitespace).map_or("", |(_, r)| r.trim());
                self.add_layer(st, layer, &format!("{what} {body} # buildkit"));
            }
        }
        st.key = key.clone();
        self.cache_put(&key, &st.image);
        Ok(())
    }

    fn add_layer(&mut self, st: &mut StageState, layer: Option<LayerRef>, created_by: &str) {
        let created = self.created.clone();
        match layer {
            Some(l) => {
                st.image.push_layer(l);
                st.image.push_history(&created, created_by, false);
            }
            None => st.image.push_history(&created, created_by, true),
        }
    }

    fn command_argv(&self, st: &StageState, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut argv = st.image.shell();
                argv.push(s.clone());
                argv
            }
        }
    }

    fn cache_path(&self, key: &Digest) -> PathBuf {
        self.cache_dir.as_ref().expect("set").join(format!("{}.json", key.hex()))
    }

    fn cache_get(&self, key: &Digest) -> Option<ImageState> {
        let data = std::fs::read(self.cache_path(key)).ok()?;
        let image: ImageState = serde_json::from_slice(&data).ok()?;
        let store = self.host.store;
        // Every layer must still be there (a prune may have taken it).
        image
            .layers
            .iter()
            .all(|l| store.layer_path(&l.diff_id).is_some() && store.has_blob(&l.digest))
            .then_some(image)
    }

    fn cache_put(&mut self, key: &Digest, image: &ImageState) {
        let path = self.cache_path(key);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, serde_json::to_vec(image).unwrap_or_default()).is_ok()
            && std::fs::rename(&tmp, &path).is_ok()
        {
            self.written_cache.push(path);
        }
    }

    /// Resolves the sources of a COPY/ADD and the cache key part they contribute.
    fn copy_sources(
        &mut self,
        st: &StageState,
        c: &CopyArgs,
        line: usize,
    ) -> Result<(String, Vec<CopySource>), BuildError> {
        let escape = self.file.escape;
        let env = self.expand_env(st);
        let mut out = Vec::new();
        let mut key = String::new();
        if let Some(from) = &c.from {
            let from = lex::process_word(from, &env, escape).map_err(|e| step_err(line, e))?;
            let current = self.stages.len();
            let (image, from_key) = match self.stage_index(&from, current) {
                Some(j) => {
                    let s = self.stages[j]
                        .as_ref()
                        .ok_or_else(|| step_err(line, format!("stage {from} was not built")))?;
                    (s.image.clone(), s.key.to_string())
                }
                None => {
                    let manifest = (self.host.resolve_image)(&from).map_err(|e| step_err(line, e))?;
                    (self.load_image(&manifest).map_err(|e| step_err(line, e))?, manifest.to_string())
                }
            };
            key.push_str(&format!("from={from_key}\n"));
            for s in &c.sources {
                let s = lex::process_word(s, &env, escape).map_err(|e| step_err(line, e))?;
                context::clean_source(&s).map_err(|e| step_err(line, e))?;
                key.push_str(&format!("src={s}\n"));
                out.push(CopySource::Stage { image: image.clone(), pattern: s });
            }
            return Ok((key, out));
        }
        for raw in &c.sources {
            // A heredoc source: an inline file named after its delimiter.
            let marker = raw.trim_start_matches(|ch: char| ch.is_ascii_digit());
            let heredoc = marker.strip_prefix("<<").and_then(|rest| {
                let name = rest.trim_start_matches('-').trim_matches(['"', '\'']);
                c.heredocs.iter().find(|h| h.name == name)
            });
            if let Some(h) = heredoc {
                let content = if h.expand {
                    lex::process_word(&format!("\"{}\"", h.content.replace('"', "\\\"")), &env, escape)
                        .map_err(|e| step_err(line, e))?
                } else {
                    h.content.clone()
                };
                key.push_str(&format!("heredoc={}:{}\n", h.name, Digest::sha256_of(content.as_bytes())));
                out.push(CopySource::Inline { name: h.name.clone(), content });
                continue;
            }
            let s = lex::process_word(raw, &env, escape).map_err(|e| step_err(line, e))?;
            if s.contains("://") || s.starts_with("git@") {
                return Err(step_err(line, format!("{s}: remote sources (URLs, git) are not supported")));
            }
            let resolved = context::resolve(&self.opts.context, &s, Some(&self.ignore))
                .map_err(|e| step_err(line, e))?;
            let sum = context::checksum(&resolved).map_err(|e| step_err(line, e))?;
            key.push_str(&format!("src={s}:{sum}\n"));
            out.push(CopySource::Context { pattern: s, resolved });
        }
        Ok((key, out))
    }

    fn copy_step(
        &mut self,
        st: &StageState,
        line: usize,
        c: &CopyArgs,
        sources: Vec<CopySource>,
        is_add: bool,
        env: &Env,
    ) -> Result<Option<LayerRef>, BuildError> {
        let escape = self.file.escape;
        let dest_raw = lex::process_word(&c.dest, env, escape).map_err(|e| step_err(line, e))?;
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = if dest_raw.starts_with('/') {
            PathBuf::from(clean(&dest_raw))
        } else {
            PathBuf::from(clean(&format!("{}/{dest_raw}", st.image.workdir())))
        };
        let wildcard = sources.iter().any(|s| match s {
            CopySource::Context { pattern, .. } | CopySource::Stage { pattern, .. } => {
                context::has_wildcards(pattern)
            }
            CopySource::Inline { .. } => false,
        });
        if (sources.len() > 1 || wildcard) && !dest_is_dir {
            return Err(step_err(
                line,
                "when using COPY with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        let chown = c
            .chown
            .as_ref()
            .map(|s| lex::process_word(s, env, escape))
            .transpose()
            .map_err(|e| step_err(line, e))?;
        let chmod = match &c.chmod {
            Some(m) => Some(
                Chmod::parse(&lex::process_word(m, env, escape).map_err(|e| step_err(line, e))?)
                    .map_err(|e| step_err(line, e))?,
            ),
            None => None,
        };
        // Stage sources are read from a mount of that stage's layers.
        let mut stage_mounts = Vec::new();
        let mut resolved_sources: Vec<(Option<Source>, Option<Inline>)> = Vec::new();
        for s in sources {
            match s {
                CopySource::Context { resolved, .. } => {
                    resolved_sources.extend(resolved.into_iter().map(|r| (Some(r), None)))
                }
                CopySource::Inline { name, content } => resolved_sources.push((None, Some((name, content)))),
                CopySource::Stage { image, pattern } => {
                    let mount =
                        Overlay::mount(self.host.store, &image, true).map_err(|e| step_err(line, e))?;
                    let found =
                        context::resolve(mount.merged(), &pattern, None).map_err(|e| step_err(line, e))?;
                    resolved_sources.extend(found.into_iter().map(|r| (Some(r), None)));
                    stage_mounts.push(mount);
                }
            }
        }
        let layer = self.on_rootfs(&st.image, line, |root| {
            let owner = chown.as_deref().map(|c| context::resolve_owner(root, c)).transpose()?;
            let opts = CopyOptions { owner, mode: chmod.clone() };
            for (src, inline) in &resolved_sources {
                if let Some((name, content)) = inline {
                    let target = if dest_is_dir || context::is_dir_in_root(root, &dest) {
                        dest.join(name)
                    } else {
                        dest.clone()
                    };
                    context::write_file(root, &target, content.as_bytes(), &opts)
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                let Some(src) = src else { continue };
                if src.is_dir() {
                    context::copy_source(root, src, &dest, &opts).map_err(|e| e.to_string())?;
                    continue;
                }
                let into_dir = dest_is_dir || context::is_dir_in_root(root, &dest);
                if is_add && src.entries[0].meta.is_file() && add_extract(root, src, &dest)? {
                    continue;
                }
                let target = if into_dir { dest.join(src.base_name()) } else { dest.clone() };
                context::copy_source(root, src, &target, &opts).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
        drop(stage_mounts);
        Ok(layer)
    }

    /// Runs `f` on the stage's root filesystem (an overlay mounted in the builder) and turns the
    /// changes into a layer (`None` when nothing changed).
    fn on_rootfs(
        &mut self,
        image: &ImageState,
        line: usize,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> Result<(), String>,
    ) -> Result<Option<LayerRef>, BuildError> {
        let overlay = Overlay::mount(self.host.store, image, false).map_err(|e| step_err(line, e))?;
        {
            let root = File::open(overlay.merged())
                .map_err(|e| step_err(line, format!("opening the root filesystem: {e}")))?;
            f(root.as_fd()).map_err(|e| step_err(line, e))?;
        }
        let work = overlay.unmount().map_err(|e| step_err(line, e))?;
        self.commit(&work, line)
    }

    /// The upper dir of `work` as a layer in the store.
    fn commit(&mut self, work: &WorkDir, line: usize) -> Result<Option<LayerRef>, BuildError> {
        let tar = work.path.join("layer.tar");
        let written = layer::write_layer(&work.path.join("upper"), &tar, self.opts.source_date_epoch)
            .map_err(|e: LayerError| step_err(line, e))?;
        if written.empty {
            return Ok(None);
        }
        if self.host.store.layer_path(&written.diff_id).is_none()
            || !self.host.store.has_blob(&written.diff_id)
        {
            self.created_layers.push((written.diff_id.clone(), written.diff_id.clone()));
        }
        self.host.store.unpack_layer_file(&written.diff_id, &tar)?;
        Ok(Some(LayerRef {
            media_type: UNCOMPRESSED_LAYER.to_string(),
            digest: written.diff_id.clone(),
            size: written.size,
            diff_id: written.diff_id,
        }))
    }

    fn run_step(
        &mut self,
        st: &StageState,
        line: usize,
        command: &Command,
        heredocs: &[dockerfile::Heredoc],
        network: RunNetwork,
    ) -> Result<Option<LayerRef>, BuildError> {
        let store = self.host.store;
        let work = WorkDir::new(store).map_err(|e| step_err(line, e))?;
        // A lone heredoc starting with `#!` is a script file run as is (at /dev/pipes/<name>).
        let mut script_mount = None;
        let argv = match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut argv = st.image.shell();
                if let [h] = heredocs
                    && s.trim() == format!("<<{}", h.name).as_str()
                {
                    if h.content.starts_with("#!") {
                        let script = work.path.join("script");
                        std::fs::write(&script, &h.content)
                            .and_then(|_| {
                                std::fs::set_permissions(
                                    &script,
                                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                                )
                            })
                            .map_err(|e| step_err(line, format!("writing the heredoc script: {e}")))?;
                        let dest = format!("/dev/pipes/{}", h.name);
                        script_mount = Some(crate::kubelet::spec::BindMount {
                            source: script,
                            destination: dest.clone(),
                            read_only: true,
                        });
                        argv = vec![dest];
                    } else {
                        argv.push(h.content.clone());
                    }
                } else if heredocs.is_empty() {
                    argv.push(s.clone());
                } else {
                    let mut script = s.clone();
                    script.push('\n');
                    for h in heredocs {
                        script.push_str(&h.content);
                        script.push_str(&h.name);
                        script.push('\n');
                    }
                    argv.push(script);
                }
                argv
            }
        };
        if argv.is_empty() {
            return Err(step_err(line, "RUN with an empty command"));
        }
        // Environment: the image's, then ARGs not shadowed by ENV.
        let mut env = st.image.env_list();
        for (k, v) in &st.args {
            if !env.iter().any(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k)) {
                env.push(format!("{k}={v}"));
            }
        }
        let lower: Vec<PathBuf> = layer_dirs(store, &st.image).map_err(|e| step_err(line, e))?;
        let job = ContainerJob {
            argv,
            env,
            cwd: st.image.workdir(),
            user: st.image.get("User").and_then(Value::as_str).map(str::to_string),
            mounts: script_mount.into_iter().collect(),
            network: network == RunNetwork::Default,
        };
        let exit = run_container(self.host, &work, lower, job, line)?;
        let upper = work.path.join("upper");
        let lower: Vec<PathBuf> = layer_dirs(store, &st.image).map_err(|e| step_err(line, e))?;
        if exit != 0 {
            let shown = match command {
                Command::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                Command::Shell(s) => s.clone(),
            };
            return Err(step_err(line, format!("RUN {shown}: exit code {exit}")));
        }
        let in_lower = |p: &str| lower.iter().any(|l| std::fs::symlink_metadata(l.join(p)).is_ok());
        layer::remove_stubs(&upper, in_lower)
            .map_err(|e| step_err(line, format!("removing mount stubs: {e}")))?;
        self.commit(&work, line)
    }

    /// Writes config and manifest of the final stage.
    fn finish(&mut self, mut st: StageState) -> Result<Built, BuildError> {
        let store = self.host.store;
        let created = st
            .image
            .config
            .get("history")
            .and_then(Value::as_array)
            .and_then(|h| h.last())
            .and_then(|h| h.get("created"))
            .cloned()
            .unwrap_or_else(|| json!(self.created));
        let root = st.image.config.as_object_mut().expect("object");
        root.insert("created".into(), created);
        root.insert("architecture".into(), json!(self.opts.architecture));
        root.insert("os".into(), json!(self.opts.os));
        let config_bytes = serde_json::to_vec(&st.image.config).expect("JSON serialises");
        let config_digest = Digest::sha256_of(&config_bytes);
        store.write_blob(&config_digest, &config_bytes)?;
        let layers: Vec<Value> = st
            .image
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON serialises");
        let manifest_digest = Digest::sha256_of(&manifest_bytes);
        store.write_blob(&manifest_digest, &manifest_bytes)?;
        Ok(Built {
            manifest: manifest_digest,
            config: config_digest,
            runs_executed: self.runs_executed,
            cached_steps: self.cached_steps,
            executed_steps: self.executed_steps,
        })
    }
}

/// A heredoc source: file name and content.
type Inline = (String, String);

/// Runs a Cloud Build step's image as a container: the source directory `workspace` bound at
/// `/workspace`, the working directory `/workspace/<dir>`, the step's env over the image's, its
/// entrypoint (else the image's) with its args (else the image's Cmd). Returns the exit code;
/// nothing of the container stays (its upper dir is dropped).
pub fn run_step_image(
    host: &mut Host<'_>,
    manifest: &Digest,
    step: &crate::build::cloudbuild::ContainerStep,
    workspace: &Path,
) -> Result<i32, BuildError> {
    let image = load_image(host.store, manifest).map_err(BuildError::Setup)?;
    let strings = |key: &str| -> Vec<String> {
        image
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut argv = match &step.entrypoint {
        Some(ep) => vec![ep.clone()],
        None => strings("Entrypoint"),
    };
    if step.args.is_empty() && step.entrypoint.is_none() {
        argv.extend(strings("Cmd"));
    } else {
        argv.extend(step.args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(BuildError::Setup(format!("{}: no entrypoint, no args", step.image)));
    }
    let mut env = image.env_list();
    for e in &step.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    let cwd =
        if step.dir.starts_with('/') { step.dir.clone() } else { clean(&format!("/workspace/{}", step.dir)) };
    let work = WorkDir::new(host.store).map_err(BuildError::Setup)?;
    let lower = layer_dirs(host.store, &image).map_err(BuildError::Setup)?;
    let job = ContainerJob {
        argv,
        env,
        cwd,
        user: image.get("User").and_then(Value::as_str).map(str::to_string),
        mounts: vec![crate::kubelet::spec::BindMount {
            source: workspace.to_path_buf(),
            destination: "/workspace".into(),
            read_only: false,
        }],
        network: true,
    };
    run_container(host, &work, lower, job, 0).map_err(|e| match e {
        BuildError::Step { message, .. } => BuildError::Setup(format!("{}: {message}", step.image)),
        BuildError::Interrupted { .. } => BuildError::Setup(format!("{}: interrupted", step.image)),
        other => other,
    })
}

/// What a build container runs.
pub struct ContainerJob {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]`, resolved in the container's `/etc/passwd`.
    pub user: Option<String>,
    /// Extra bind mounts.
    pub mounts: Vec<crate::kubelet::spec::BindMount>,
    /// On the node's pod network (when the host has one) rather than loopback only.
    pub network: bool,
}

/// Runs `job` in a container of rkube's runtime over the layer dirs `lower` (topmost first) with
/// the upper dir `work/upper`, default confinement and its own network namespace; returns its
/// exit code. Container, cgroup and network are gone when it returns.
fn run_container(
    host: &mut Host<'_>,
    work: &WorkDir,
    lower: Vec<PathBuf>,
    job: ContainerJob,
    line: usize,
) -> Result<i32, BuildError> {
    let hosts = work.path.join("hosts");
    let resolv = work.path.join("resolv.conf");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(|e| step_err(line, format!("writing hosts: {e}")))?;
    std::fs::write(&resolv, resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()))
        .map_err(|e| step_err(line, format!("writing resolv.conf: {e}")))?;
    let id = format!("rkube-build-{}-{}", std::process::id(), WORK_COUNTER.fetch_add(1, Ordering::Relaxed));
    let input = crate::kubelet::spec::SpecInput {
        container: "build",
        pod_name: "buildkitsandbox",
        argv: job.argv,
        env: job.env,
        cwd: job.cwd,
        image_user: job.user,
        netns: None,
        ipc: None,
        host: Default::default(),
        pid: None,
        mounts: vec![
            crate::kubelet::spec::BindMount {
                source: hosts,
                destination: "/etc/hosts".into(),
                read_only: true,
            },
            crate::kubelet::spec::BindMount {
                source: resolv,
                destination: "/etc/resolv.conf".into(),
                read_only: true,
            },
        ]
        .into_iter()
        .chain(job.mounts)
        .collect(),
        limits: crate::kubelet::resources::CgroupLimits {
            cpu_shares: 1024,
            cpu_quota_us: None,
            memory_bytes: None,
        },
        cgroups_path: format!("{BUILD_CGROUP_PARENT}/{id}"),
        security: None,
        pod_security: None,
        seccomp: crate::kubelet::security::Seccomp::RuntimeDefault,
        sysctls: Default::default(),
        userns_base: None,
        unmasked_proc: false,
    };
    let mut spec = crate::kubelet::spec::build(&input).map_err(|e| step_err(line, e))?;
    // Its own network namespace: on the node's pod network (outbound NAT) when there is one,
    // else loopback only; `--network=none` is always loopback only.
    let net = match (&host.network, job.network) {
        (Some(net), true) => {
            let info = net
                .setup(&id, "buildkitsandbox", &[])
                .map_err(|e| step_err(line, format!("RUN network: {e}")))?;
            Some((NetworkGuard { net, id: id.clone() }, info.netns_path))
        }
        _ => None,
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut netns = oci_spec::runtime::LinuxNamespaceBuilder::default();
    netns = netns.typ(oci_spec::runtime::LinuxNamespaceType::Network);
    if let Some((_, path)) = &net {
        netns = netns.path(path.clone());
    }
    namespaces.push(netns.build().map_err(|e| step_err(line, e))?);
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    let (upper, ovl_work, target, bundle) =
        (work.path.join("upper"), work.path.join("work"), work.path.join("rootfs"), work.path.join("bundle"));
    for d in [&upper, &ovl_work, &target, &bundle] {
        std::fs::create_dir_all(d).map_err(|e| step_err(line, format!("creating {}: {e}", d.display())))?;
    }
    let lower = if lower.is_empty() {
        let empty = work.path.join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| step_err(line, e))?;
        vec![empty]
    } else {
        lower
    };
    let req = CreateRequest {
        id: id.clone(),
        bundle,
        spec,
        rootfs: Some(RootfsSource::Overlay {
            lower: lower.clone(),
            upper: upper.clone(),
            work: ovl_work,
            target,
        }),
        log_path: None,
        pid_file: None,
        preserved_fds: Vec::new(),
    };
    let runtime = &host.runtime;
    let _ = host.out.flush();
    // The RUN's output goes to our stderr (stdout carries the result), its stdin is empty.
    let _stdio =
        StdioForRun::redirect().map_err(|e| step_err(line, format!("redirecting the RUN's stdio: {e}")))?;
    let container = ContainerGuard { runtime, id: id.clone() };
    runtime.create(&req).map_err(|e| step_err(line, format!("creating the RUN container: {e}")))?;
    runtime.start(&id).map_err(|e| step_err(line, format!("starting the RUN container: {e}")))?;
    // Waited for in a thread of its own (exactly, by reaping its monitor), so an interrupt can
    // kill it meanwhile.
    let (waited, interrupted) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let id = &id;
        scope.spawn(move || tx.send(runtime.wait(id, None)));
        let mut interrupted = false;
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(waited) => return (waited, interrupted),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if !interrupted && host.is_interrupted() {
                        interrupted = true;
                        let _ = runtime.kill(id, nix::sys::signal::Signal::SIGKILL, true);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return (Err(RuntimeError::Timeout(id.clone())), interrupted);
                }
            }
        }
    });
    if interrupted {
        return Err(BuildError::Interrupted { line });
    }
    let exit = waited.map_err(|e| step_err(line, format!("waiting for the RUN container: {e}")))?;
    drop(container);
    drop(net);
    drop(_stdio);
    Ok(exit.code)
}

/// A COPY/ADD source before the copy.
#[derive(Debug)]
enum CopySource {
    Context { pattern: String, resolved: Vec<Source> },
    Stage { image: ImageState, pattern: String },
    Inline { name: String, content: String },
}

/// ADD of a local archive: extracted into `dest` when the file is a (plain, gzip or zstd) tar.
fn add_extract(root: std::os::fd::BorrowedFd<'_>, src: &Source, dest: &Path) -> Result<bool, String> {
    let path = src.path();
    let file = File::open(&path).map_err(|e| format!("{}: {e}", src.name))?;
    let Ok((_, mut reader)) = crate::image::compression::decompress("", file) else { return Ok(false) };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match io::Read::read(&mut reader, &mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return Ok(false),
        }
    }
    if n < 512 || &head[257..262] != b"ustar" {
        return Ok(false);
    }
    let dir = crate::runtime::fsutil::mkdir_all_in_root(root, dest)
        .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let dir_path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)));
    let file = File::open(&path).map_err(|e| format!("{}: {e}", src.name))?;
    let (_, reader) =
        crate::image::compression::decompress("", file).map_err(|e| format!("{}: {e}", src.name))?;
    crate::image::unpack::unpack_tar(&dir_path, reader)
        .map_err(|e| format!("extracting {}: {e}", src.name))?;
    Ok(true)
}

/// The layer dirs of an image, topmost first (overlay order).
fn layer_dirs(store: &Store, image: &ImageState) -> Result<Vec<PathBuf>, String> {
    image
        .layers
        .iter()
        .rev()
        .map(|l| {
            store.layer_path(&l.diff_id).ok_or_else(|| format!("layer {} is not in the store", l.diff_id))
        })
        .collect()
}

/// A work directory in the store's `tmp/`, removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(store: &Store) -> Result<WorkDir, String> {
        let path = store.root().join("tmp").join(format!(
            "build-{}-{}",
            std::process::id(),
            WORK_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An overlay of an image's layers mounted in the builder's mount namespace; unmounted on drop.
struct Overlay {
    work: Option<WorkDir>,
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    fn mount(store: &Store, image: &ImageState, read_only: bool) -> Result<Overlay, String> {
        let work = WorkDir::new(store)?;
        let (upper, ovl_work, merged, empty) = (
            work.path.join("upper"),
            work.path.join("work"),
            work.path.join("merged"),
            work.path.join("empty"),
        );
        for d in [&upper, &ovl_work, &merged, &empty] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let mut lower = layer_dirs(store, image)?;
        if lower.is_empty() {
            lower.push(empty);
        }
        let data = format!(
            "{},redirect_dir=off,metacopy=off,index=off",
            crate::runtime::rootfs::overlay_data(&lower, &upper, &ovl_work, false)
        );
        let flags = if read_only { nix::mount::MsFlags::MS_RDONLY } else { nix::mount::MsFlags::empty() }
            | nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV;
        nix::mount::mount(Some("overlay"), &merged, Some("overlay"), flags, Some(data.as_str()))
            .map_err(|e| format!("mounting the layers: {e}"))?;
        Ok(Overlay { work: Some(work), merged, mounted: true })
    }

    fn merged(&self) -> &Path {
        &self.merged
    }

    fn unmount(mut self) -> Result<WorkDir, String> {
        nix::mount::umount2(&self.merged, nix::mount::MntFlags::empty())
            .map_err(|e| format!("unmounting {}: {e}", self.merged.display()))?;
        self.mounted = false;
        Ok(self.work.take().expect("present until unmounted"))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Points our stdout at stderr and stdin at `/dev/null` while a RUN container (which inherits
/// them) is created; restores both on drop.
struct StdioForRun {
    stdout: std::os::fd::OwnedFd,
    stdin: std::os::fd::OwnedFd,
}

impl StdioForRun {
    fn redirect() -> io::Result<StdioForRun> {
        let stdout = nix::unistd::dup(io::stdout())?;
        let stdin = nix::unistd::dup(io::stdin())?;
        let _ = io::stdout().flush();
        nix::unistd::dup2_stdout(io::stderr())?;
        let null = File::open("/dev/null")?;
        nix::unistd::dup2_stdin(&null)?;
        Ok(StdioForRun { stdout, stdin })
    }
}

impl Drop for StdioForRun {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2_stdout(&self.stdout);
        let _ = nix::unistd::dup2_stdin(&self.stdin);
    }
}

/// Tears a RUN's pod network down on drop.
struct NetworkGuard<'a> {
    net: &'a crate::network::PodNetwork,
    id: String,
}

impl Drop for NetworkGuard<'_> {
    fn drop(&mut self) {
        let _ = self.net.teardown(&self.id);
    }
}

/// Deletes a RUN container (and its cgroup and state) on drop.
struct ContainerGuard<'a> {
    runtime: &'a Runtime,
    id: String,
}

/// The cgroup parent of RUN containers; removed when the last one is gone.
const BUILD_CGROUP_PARENT: &str = "rkube-build";

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.delete(&self.id, true);
        // Fails while another build's container is in it; the last one removes it.
        for dir in crate::kubelet::sandbox::cgroup_dirs(&self.runtime.cgroup_root, BUILD_CGROUP_PARENT) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The host's resolv.conf for a RUN in its own network namespace: loopback nameservers (which
/// would be the container's own) removed, as BuildKit does.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && words.next().is_some_and(|ip| ip.starts_with("127.") || ip == "::1")
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn healthcheck_json(hc: &Healthcheck) -> Value {
    let mut v = json!({ "Test": hc.test });
    for (k, val) in [
        ("Interval", hc.interval),
        ("Timeout", hc.timeout),
        ("StartPeriod", hc.start_period),
        ("StartInterval", hc.start_interval),
        ("Retries", hc.retries),
    ] {
        if let Some(n) = val {
            v[k] = json!(n);
        }
    }
    v
}

fn valid_signal(s: &str) -> bool {
    if s.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)) {
        return true;
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse::<nix::sys::signal::Signal>().is_ok()
        || name.starts_with("SIGRTMIN")
        || name.starts_with("SIGRTMAX")
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_signals() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("term"));
        assert!(valid_signal("9"));
        assert!(!valid_signal("SIGBOGUS"));
    }

    #[test]
    fn resolv_conf_drops_loopback_nameservers() {
        let out = resolv_conf("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch x\n");
        assert_eq!(out, "nameserver 10.0.0.2\nsearch x\n");
    }

    #[test]
    fn image_state_env_history_layers() {
        let mut s = ImageState { config: json!({"config": {"Env": ["A=1"]}}), layers: vec![] };
        s.set_env("A", "2");
        s.set_env("B", "x=y");
        assert_eq!(s.env_list(), ["A=2", "B=x=y"]);
        s.push_history("t", "ENV A=2", true);
        let d = Digest::sha256_of(b"l");
        s.push_layer(LayerRef { media_type: "m".into(), digest: d.clone(), size: 1, diff_id: d.clone() });
        assert_eq!(s.config["rootfs"]["diff_ids"], json!([d.to_string()]));
        assert_eq!(s.config["history"][0]["empty_layer"], json!(true));
        assert_eq!(s.workdir(), "/");
        assert_eq!(s.shell(), ["/bin/sh", "-c"]);
    }
}
