//! Reading images back: the digests a manifest or index references, diffIDs, layer dirs, config.

use super::{Store, StoreError};
use crate::image::digest::Digest;
use serde::Deserialize;
use std::path::PathBuf;

/// A descriptor as manifests list them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: u64,
}

/// The parts of an image manifest (or index) the store follows.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestRefs {
    /// Present in an image manifest.
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Present in an index / manifest list.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ConfigRootfs {
    rootfs: RootfsDiffIds,
}

#[derive(Debug, Deserialize)]
struct RootfsDiffIds {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

impl Store {
    /// Parses a manifest or index blob for the digests it references.
    pub fn manifest_refs(&self, manifest: &Digest) -> Result<ManifestRefs, StoreError> {
        let bytes = self.read_blob(manifest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: manifest.clone(),
            what: "manifest",
            source,
        })
    }

    /// The diffIDs listed in an image config blob.
    pub fn config_diff_ids(&self, config: &Digest) -> Result<Vec<Digest>, StoreError> {
        let bytes = self.read_blob(config)?;
        let parsed: ConfigRootfs = serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: config.clone(),
            what: "image config",
            source,
        })?;
        Ok(parsed.rootfs.diff_ids)
    }

    /// The image's config, parsed.
    pub fn image_config(&self, manifest: &Digest) -> Result<oci_spec::image::ImageConfiguration, StoreError> {
        let config = self.config_descriptor(manifest)?;
        let bytes = self.read_blob(&config.digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: config.digest.clone(),
            what: "image config",
            source,
        })
    }

    fn config_descriptor(&self, manifest: &Digest) -> Result<Descriptor, StoreError> {
        let refs = self.manifest_refs(manifest)?;
        refs.config.ok_or_else(|| StoreError::BadJson {
            digest: manifest.clone(),
            what: "image manifest",
            source: serde::de::Error::custom(
                "no config descriptor (an index? resolve it to a platform first)",
            ),
        })
    }

    /// The image's unpacked layer directories, lowest first, ready to be overlay lower dirs.
    pub fn image_layers(&self, manifest: &Digest) -> Result<Vec<PathBuf>, StoreError> {
        let refs = self.manifest_refs(manifest)?;
        let config = self.config_descriptor(manifest)?;
        let diff_ids = self.config_diff_ids(&config.digest)?;
        if diff_ids.len() != refs.layers.len() {
            return Err(StoreError::LayerCountMismatch {
                manifest: manifest.clone(),
                layers: refs.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        diff_ids
            .iter()
            .map(|d| {
                self.layer_path(d).ok_or_else(|| StoreError::LayerMissing {
                    manifest: manifest.clone(),
                    diff_id: d.clone(),
                })
            })
            .collect()
    }
}
