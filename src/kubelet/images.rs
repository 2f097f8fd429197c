//! Images for a pod: find each container's image in the store, pulling it when the pull policy
//! says so (with the pod's imagePullSecrets, then docker's config), and read what the container
//! needs from it (layers, entrypoint/cmd, env, workingDir, user).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::command::ImageDefaults;
use crate::image::config::RegistriesConfig;
use crate::image::credentials::{DockerConfig, Keyring};
use crate::image::digest::Digest;
use crate::image::pull::{self, PullOptions};
use crate::image::reference::Reference;
use crate::image::registry::RegistryClient;
use crate::image::store::Store;

/// Why an image is not available, naming it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image:?}: {message}")]
    Reference { image: String, message: String },
    #[error("image {image:?} is not on this node and imagePullPolicy is Never")]
    NotPresent { image: String },
    #[error("{0}")]
    Pull(String),
    #[error("image {image:?}: {message}")]
    Store { image: String, message: String },
}

/// What a container takes from its image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub manifest: String,
    /// Overlay lower dirs, topmost first.
    pub layers: Vec<PathBuf>,
    pub defaults: ImageDefaults,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// The store's tag name of a reference (`docker.io/library/nginx:1.10`).
pub fn local_name(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (None, Some(d)) => format!("{}@{d}", reference.name()),
        (tag, _) => format!("{}:{}", reference.name(), tag.unwrap_or("latest")),
    }
}

/// Resolves images of a pod, pulling as needed.
pub struct ImageResolver<'a> {
    pub store: &'a Store,
    pub registries_config: &'a Path,
    pub pull_secrets: Vec<&'a Secret>,
}

impl std::fmt::Debug for ImageResolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageResolver").finish_non_exhaustive()
    }
}

impl ImageResolver<'_> {
    /// Makes `image` present according to `policy` (`Always`, `IfNotPresent`, `Never`) and reads it.
    #[tracing::instrument(level = "debug", name = "image", skip(self, policy))]
    pub fn ensure(&self, image: &str, policy: &str) -> Result<ImageInfo, ImageError> {
        let reference = Reference::parse(image)
            .map_err(|e| ImageError::Reference { image: image.into(), message: e.to_string() })?;
        let name = local_name(&reference);
        let present = self.store.tags().ok().and_then(|t| t.get(&name).cloned());
        let manifest = match (present, policy) {
            (Some(d), "IfNotPresent" | "Never") => d,
            (None, "Never") => return Err(ImageError::NotPresent { image: image.into() }),
            _ => self.pull(&reference)?,
        };
        self.read(image, &manifest)
    }

    fn pull(&self, reference: &Reference) -> Result<Digest, ImageError> {
        let config =
            RegistriesConfig::load(self.registries_config).map_err(|e| ImageError::Pull(e.to_string()))?;
        let mut keyring = Keyring::default();
        for secret in &self.pull_secrets {
            let kind = secret.type_.as_deref().unwrap_or_default();
            let key = if kind == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            if let Some(data) = secret.data.as_ref().and_then(|d| d.get(key)) {
                keyring.add_secret(kind, &data.0).map_err(|e| ImageError::Pull(e.to_string()))?;
            }
        }
        let docker = DockerConfig::load_default().unwrap_or_default();
        let repository = reference.repository().to_string();
        let lookup = Arc::new(move |host: &str| {
            keyring
                .lookup(host, &repository)
                .into_iter()
                .next()
                .or_else(|| docker.lookup(host).ok().flatten())
        });
        let client = Arc::new(RegistryClient::new(config, lookup));
        let store = Arc::new(Store::open(self.store.root()).map_err(|e| ImageError::Pull(e.to_string()))?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ImageError::Pull(format!("pulling {reference}: {e}")))?;
        let pulled = rt
            .block_on(pull::pull(client, store, reference, &PullOptions::default()))
            .map_err(|e| ImageError::Pull(e.to_string()))?;
        Ok(pulled.manifest)
    }

    fn read(&self, image: &str, manifest: &Digest) -> Result<ImageInfo, ImageError> {
        let err = |e: crate::image::store::StoreError| ImageError::Store {
            image: image.into(),
            message: e.to_string(),
        };
        let mut layers = self.store.image_layers(manifest).map_err(err)?;
        layers.reverse();
        let config = self.store.image_config(manifest).map_err(err)?;
        let c = config.config().clone().unwrap_or_default();
        Ok(ImageInfo {
            manifest: manifest.to_string(),
            layers,
            defaults: ImageDefaults {
                entrypoint: c.entrypoint().clone().unwrap_or_default(),
                cmd: c.cmd().clone().unwrap_or_default(),
            },
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        })
    }
}
