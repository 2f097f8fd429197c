//! Pushing an image from the store: every blob the registry lacks (layers, then config), then the manifest
//! under the target tag, so `image tag` + `image push` to a token-auth (GCR-style) registry works.

use crate::image::config::Endpoint;
use crate::image::digest::Digest;
use crate::image::manifest::{Manifest, ManifestError};
use crate::image::reference::Reference;
use crate::image::registry::client::Repo;
use crate::image::registry::{RegistryClient, RegistryError};
use crate::image::store::{Store, StoreError};
use bytes::Bytes;

/// Why a push failed; each names the image and the step.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushing {image}: no local image {local:?}")]
    NoSuchImage { image: String, local: String },
    #[error("pushing {image}: {source}")]
    Store { image: String, source: StoreError },
    #[error("pushing {image}: {source}")]
    Manifest { image: String, source: ManifestError },
    #[error("pushing {image}: {source}")]
    Registry { image: String, source: RegistryError },
}

/// Progress of a push.
#[derive(Debug, Clone)]
pub enum PushEvent {
    /// A blob the registry already has.
    BlobExists { digest: Digest },
    /// A blob uploaded.
    BlobPushed { digest: Digest, size: u64 },
}

/// Pushes the local image tagged `local` (a store tag name) to `target`; returns the manifest digest.
pub async fn push(
    client: &RegistryClient,
    store: &Store,
    local: &str,
    target: &Reference,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
) -> Result<Digest, PushError> {
    let image = target.to_string();
    let store_err = |source| PushError::Store { image: image.clone(), source };
    let reg_err = |source| PushError::Registry { image: image.clone(), source };
    let digest = store
        .tag(local)
        .map_err(store_err)?
        .ok_or_else(|| PushError::NoSuchImage { image: image.clone(), local: local.into() })?;
    let body = store.read_blob(&digest).map_err(store_err)?;
    let manifest = match Manifest::parse(None, &body) {
        Ok(Manifest::Image(m)) => *m,
        Ok(Manifest::Index(_)) => {
            let source =
                ManifestError::UnsupportedMediaType("an index (push its platform image instead)".into());
            return Err(PushError::Manifest { image, source });
        }
        Err(source) => return Err(PushError::Manifest { image, source }),
    };
    let endpoint: Endpoint = client
        .config()
        .endpoints(target.registry(), target.api_host())
        .pop()
        .expect("endpoints always end with the registry itself");
    let repo = Repo { endpoint, name: target.repository().to_string() };
    client.ping(&repo.endpoint).await.map_err(reg_err)?;
    for desc in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
        if client.blob_exists(&repo, &desc.digest).await.map_err(reg_err)? {
            progress(PushEvent::BlobExists { digest: desc.digest.clone() });
            continue;
        }
        let data = Bytes::from(store.read_blob(&desc.digest).map_err(store_err)?);
        let size = data.len() as u64;
        client.upload_blob(&repo, &desc.digest, data).await.map_err(reg_err)?;
        progress(PushEvent::BlobPushed { digest: desc.digest.clone(), size });
    }
    let reference = target.tag().map_or_else(|| digest.to_string(), str::to_string);
    client
        .put_manifest(&repo, &reference, manifest.media_type_or_default(), Bytes::from(body))
        .await
        .map_err(reg_err)?;
    Ok(digest)
}
