//! The pull pipeline: resolve the reference (mirrors first), fetch the manifest (resolving an index to the
//! wanted platform), fetch the config, then download layers in parallel (bounded), each streamed straight
//! into [`Store::unpack_layer`] on a blocking thread so hashing, inflating and unpacking overlap the download.
//! A layer that fails mid-stream is retried from the start; the tag is recorded only when all layers are in.

use crate::image::config::Endpoint;
use crate::image::digest::Digest;
use crate::image::manifest::{Descriptor, ImageConfig, ImageManifest, Manifest, ManifestError};
use crate::image::platform::{self, Platform};
use crate::image::reference::Reference;
use crate::image::registry::client::{Repo, error_chain};
use crate::image::registry::{RegistryClient, RegistryError};
use crate::image::store::{Store, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{self, Read};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// Layers downloaded at once by default.
pub const DEFAULT_CONCURRENT_LAYERS: usize = 6;

/// Why a pull failed; each names the image and the step.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pulling {image}: {source}")]
    Registry { image: String, source: Box<RegistryError> },
    #[error("pulling {image}: {source}")]
    Manifest { image: String, source: ManifestError },
    #[error("pulling {image}: no manifest for platform {platform} (available: {available})")]
    NoPlatform { image: String, platform: Platform, available: String },
    #[error("pulling {image}: image config {config}: {detail}")]
    Config { image: String, config: Digest, detail: String },
    #[error("pulling {image}: layer {layer}: {source}")]
    Layer { image: String, layer: Digest, source: Box<LayerError> },
    #[error("pulling {image}: {source}")]
    Store { image: String, source: Box<StoreError> },
}

/// Why one layer could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("unpack task failed: {0}")]
    Task(String),
}

impl LayerError {
    /// Worth another attempt: connection/stream trouble, not a digest or format problem.
    fn is_transient(&self) -> bool {
        match self {
            LayerError::Registry(RegistryError::Connect { .. }) => true,
            LayerError::Registry(RegistryError::Status { status, .. }) => status.is_server_error(),
            LayerError::Store(StoreError::Stream { .. }) => true,
            _ => false,
        }
    }
}

/// Progress of a pull, for bars or log lines.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest is known: its digest and the layers (digest, compressed size).
    Resolved { manifest: Digest, endpoint: String, layers: Vec<(Digest, u64)> },
    /// A layer is already in the store.
    LayerCached { layer: Digest },
    /// Bytes of a layer received so far.
    LayerProgress { layer: Digest, received: u64 },
    /// A layer attempt failed and will be retried.
    LayerRetry { layer: Digest, attempt: u32, error: String },
    /// A layer is downloaded, verified and unpacked.
    LayerDone { layer: Digest },
}

/// Receives [`PullEvent`]s.
pub type ProgressFn = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// Pull settings.
#[derive(Clone)]
pub struct PullOptions {
    pub platform: Platform,
    pub concurrent_layers: usize,
    pub progress: Option<ProgressFn>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            concurrent_layers: DEFAULT_CONCURRENT_LAYERS,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions").field("platform", &self.platform).finish_non_exhaustive()
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The name the image is tagged under in the store.
    pub name: String,
    /// The platform manifest's digest (what the tag points at).
    pub manifest: Digest,
    /// The index digest, when the reference named an index.
    pub index: Option<Digest>,
    /// The endpoint that served it.
    pub endpoint: String,
}

/// Pulls `reference` into `store`. See the module docs for the pipeline.
pub async fn pull(
    client: Arc<RegistryClient>,
    store: Arc<Store>,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Pulled, PullError> {
    let image = reference.to_string();
    let emit = |e: PullEvent| {
        if let Some(p) = &opts.progress {
            p(e)
        }
    };
    let store_err = |source| PullError::Store { image: image.clone(), source: Box::new(source) };
    let _lease = store.lease().map_err(store_err)?;

    let (repo, top) = resolve(&client, reference)
        .await
        .map_err(|source| PullError::Registry { image: image.clone(), source: Box::new(source) })?;
    let (manifest_digest, manifest_body, index) = match parse(&image, &top)? {
        Manifest::Image(_) => (top.digest.clone(), top.body.clone(), None),
        Manifest::Index(idx) => {
            let chosen =
                platform::select(&idx.manifests, &opts.platform).ok_or_else(|| PullError::NoPlatform {
                    image: image.clone(),
                    platform: opts.platform.clone(),
                    available: available_platforms(&idx.manifests),
                })?;
            let m = client
                .get_manifest(&repo, &chosen.digest.to_string())
                .await
                .map_err(|source| PullError::Registry { image: image.clone(), source: Box::new(source) })?;
            (m.digest.clone(), m.body, Some(top.digest.clone()))
        }
    };
    let manifest: ImageManifest = match Manifest::parse(None, &manifest_body) {
        Ok(Manifest::Image(m)) => *m,
        Ok(Manifest::Index(_)) => {
            return Err(PullError::Manifest {
                image,
                source: ManifestError::UnsupportedMediaType("nested index".into()),
            });
        }
        Err(source) => return Err(PullError::Manifest { image, source }),
    };
    for layer in &manifest.layers {
        crate::image::manifest::layer_compression(&layer.media_type)
            .map_err(|source| PullError::Manifest { image: image.clone(), source })?;
    }

    let config_err = |detail: String| PullError::Config {
        image: image.clone(),
        config: manifest.config.digest.clone(),
        detail,
    };
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        Bytes::from(store.read_blob(&manifest.config.digest).map_err(store_err)?)
    } else {
        client
            .get_blob_bytes(&repo, &manifest.config.digest)
            .await
            .map_err(|source| PullError::Registry { image: image.clone(), source: Box::new(source) })?
    };
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| config_err(e.to_string()))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(config_err(format!(
            "lists {} diffIDs for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    store.write_blob(&manifest.config.digest, &config_bytes).map_err(store_err)?;

    emit(PullEvent::Resolved {
        manifest: manifest_digest.clone(),
        endpoint: repo.endpoint.host.clone(),
        layers: manifest.layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
    });
    fetch_layers(&client, &store, &repo, &manifest.layers, &config.rootfs.diff_ids, opts).await.map_err(
        |failed| {
            let (layer, source) = *failed;
            PullError::Layer { image: image.clone(), layer, source: Box::new(source) }
        },
    )?;

    store.write_blob(&manifest_digest, &manifest_body).map_err(store_err)?;
    let name = tag_name(reference, &manifest_digest);
    store.set_tag(&name, &manifest_digest).map_err(store_err)?;
    Ok(Pulled { name, manifest: manifest_digest, index, endpoint: repo.endpoint.host.clone() })
}

/// The store name for a pulled reference: `registry/repo:tag`, or `registry/repo@digest` without a tag.
pub fn tag_name(reference: &Reference, manifest: &Digest) -> String {
    match reference.tag() {
        Some(t) => format!("{}:{t}", reference.name()),
        None => format!("{}@{}", reference.name(), reference.digest().unwrap_or(manifest)),
    }
}

fn parse(image: &str, m: &crate::image::registry::client::FetchedManifest) -> Result<Manifest, PullError> {
    Manifest::parse(m.content_type.as_deref(), &m.body)
        .map_err(|source| PullError::Manifest { image: image.into(), source })
}

fn available_platforms(manifests: &[Descriptor]) -> String {
    let names: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::to_string)
        .collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// Tries each endpoint (mirrors first) until one serves the manifest; returns the first error otherwise.
async fn resolve(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<(Repo, crate::image::registry::client::FetchedManifest), RegistryError> {
    let endpoints: Vec<Endpoint> = client.config().endpoints(reference.registry(), reference.api_host());
    let mut first_err = None;
    for endpoint in endpoints {
        let repo = Repo { endpoint: endpoint.clone(), name: reference.repository().to_string() };
        let attempt = async {
            client.ping(&endpoint).await?;
            client.get_manifest(&repo, &reference.manifest_reference()).await
        };
        match attempt.await {
            Ok(m) => return Ok((repo, m)),
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.host, error = %e, "endpoint failed");
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.expect("there is always at least the registry itself"))
}

/// Downloads and unpacks the layers not yet in the store, `opts.concurrent_layers` at a time.
async fn fetch_layers(
    client: &Arc<RegistryClient>,
    store: &Arc<Store>,
    repo: &Repo,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    opts: &PullOptions,
) -> Result<(), Box<(Digest, LayerError)>> {
    let limit = Arc::new(Semaphore::new(opts.concurrent_layers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (desc, diff_id) in layers.iter().zip(diff_ids) {
        if store.layer_path(diff_id).is_some() && store.has_blob(&desc.digest) {
            if let Some(p) = &opts.progress {
                p(PullEvent::LayerCached { layer: desc.digest.clone() });
            }
            continue;
        }
        let (client, store, repo, desc, diff_id, limit) =
            (client.clone(), store.clone(), repo.clone(), desc.clone(), diff_id.clone(), limit.clone());
        let progress = opts.progress.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore is never closed");
            let r =
                fetch_layer_with_retries(&client, &store, &repo, &desc, &diff_id, progress.as_ref()).await;
            r.map_err(|e| Box::new((desc.digest.clone(), e)))
        });
    }
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        let r = joined
            .unwrap_or_else(|e| Err(Box::new((Digest::sha256_of(b""), LayerError::Task(e.to_string())))));
        if let Err(e) = r {
            if first_err.is_none() {
                tasks.abort_all();
            }
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn fetch_layer_with_retries(
    client: &RegistryClient,
    store: &Arc<Store>,
    repo: &Repo,
    desc: &Descriptor,
    diff_id: &Digest,
    progress: Option<&ProgressFn>,
) -> Result<(), LayerError> {
    let retry = client.retry_policy();
    let mut attempt = 0;
    loop {
        match fetch_layer(client, store, repo, desc, diff_id, progress).await {
            Ok(()) => {
                if let Some(p) = progress {
                    p(PullEvent::LayerDone { layer: desc.digest.clone() });
                }
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt + 1 < retry.attempts => {
                if let Some(p) = progress {
                    p(PullEvent::LayerRetry {
                        layer: desc.digest.clone(),
                        attempt: attempt + 1,
                        error: e.to_string(),
                    });
                }
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: stream the blob through a channel into `unpack_layer` running on a blocking thread.
async fn fetch_layer(
    client: &RegistryClient,
    store: &Arc<Store>,
    repo: &Repo,
    desc: &Descriptor,
    diff_id: &Digest,
    progress: Option<&ProgressFn>,
) -> Result<(), LayerError> {
    let resp = client.get_blob(repo, &desc.digest).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(32);
    let unpack = {
        let (store, blob, diff_id, media) =
            (store.clone(), desc.digest.clone(), diff_id.clone(), desc.media_type.clone());
        tokio::task::spawn_blocking(move || {
            store.unpack_layer(&blob, &diff_id, &media, ChannelReader { rx, current: Bytes::new() })
        })
    };
    let url = resp.url().to_string();
    let mut stream = resp.bytes_stream();
    let mut received = 0u64;
    let mut broken = None;
    while let Some(chunk) = stream.next().await {
        let item = match chunk {
            Ok(c) => {
                received += c.len() as u64;
                if let Some(p) = progress {
                    p(PullEvent::LayerProgress { layer: desc.digest.clone(), received });
                }
                Ok(c)
            }
            Err(e) => {
                let detail = format!("download broke after {received} bytes: {}", error_chain(&e));
                broken = Some(detail.clone());
                Err(io::Error::other(detail))
            }
        };
        if tx.send(item).await.is_err() || broken.is_some() {
            break; // the unpacker stopped (its error is reported below) or the stream broke
        }
    }
    drop(tx);
    let unpacked = unpack.await.map_err(|e| LayerError::Task(e.to_string()))?;
    match (unpacked, broken) {
        (Ok(_), _) => Ok(()),
        // The store saw a short stream; report (and retry) the download failure itself.
        (Err(_), Some(detail)) => Err(LayerError::Registry(RegistryError::Connect { url, detail })),
        (Err(e), None) => Err(e.into()),
    }
}

/// Adapts the chunk channel to `Read` for the blocking unpacker.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names() {
        let d: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        let r = Reference::parse("nginx:1.10").unwrap();
        assert_eq!(tag_name(&r, &d), "docker.io/library/nginx:1.10");
        let r = Reference::parse(&format!("gcr.io/p/a@{d}")).unwrap();
        assert_eq!(tag_name(&r, &d), format!("gcr.io/p/a@{d}"));
    }

    #[test]
    fn channel_reader_reassembles_chunks_and_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hel"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"lo"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let mut r = ChannelReader { rx, current: Bytes::new() };
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"hello");
        assert_eq!(err.to_string(), "cut");
    }
}
