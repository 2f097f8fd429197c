//! Manifest, index and image-config documents in both Docker schema2 and OCI flavours.
//! Docker schema1 is recognised only to be refused with a clear message.

use crate::image::digest::Digest;
use crate::image::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `Accept` header for manifest requests, most preferred first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why a manifest or config document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Docker schema1 manifests ({0}) are not supported; re-push the image with a current client")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported manifest schemaVersion {0}")]
    SchemaVersion(u32),
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
}

/// A content descriptor (`mediaType`, `digest`, `size`, optional platform).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A multi-platform index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(ImageIndex),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses a manifest body, using the `Content-Type` when the body has no `mediaType`.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
        let probe: Probe = serde_json::from_slice(body)?;
        let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| !c.is_empty());
        let media = probe.media_type.clone().or_else(|| header.map(str::to_string));
        if probe.schema_version == 1
            || matches!(media.as_deref(), Some(DOCKER_SCHEMA1) | Some(DOCKER_SCHEMA1_SIGNED))
        {
            return Err(ManifestError::Schema1(media.unwrap_or_else(|| "schemaVersion 1".into())));
        }
        if probe.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(probe.schema_version));
        }
        match media.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_LIST) => Ok(Manifest::Index(serde_json::from_slice(body)?)),
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => {
                Ok(Manifest::Image(Box::new(serde_json::from_slice(body)?)))
            }
            None | Some("application/json") | Some("application/octet-stream")
                if probe.manifests.is_some() =>
            {
                Ok(Manifest::Index(serde_json::from_slice(body)?))
            }
            None | Some("application/json") | Some("application/octet-stream") => {
                Ok(Manifest::Image(Box::new(serde_json::from_slice(body)?)))
            }
            Some(other) => Err(ManifestError::UnsupportedMediaType(other.into())),
        }
    }
}

impl ImageManifest {
    /// The media type to send on push (`mediaType` field, else OCI).
    pub fn media_type_or_default(&self) -> &str {
        self.media_type.as_deref().unwrap_or(OCI_MANIFEST)
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer media type; unknown types are refused.
pub fn layer_compression(media_type: &str) -> Result<LayerCompression, ManifestError> {
    match media_type {
        OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Ok(LayerCompression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => Ok(LayerCompression::Gzip),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Ok(LayerCompression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(LayerCompression::Zstd),
        other => Err(ManifestError::UnsupportedLayer(other.into())),
    }
}

/// The parts of an image config we read: platform and `rootfs.diff_ids`. The full JSON stays in the store.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_docker_and_oci_manifests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{D}","size":3}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(None, body.as_bytes()).unwrap() else { panic!("not image") };
        assert_eq!(m.layers[0].size, 3);
        // OCI manifest without mediaType: content type decides.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":2}},"layers":[]}}"#
        );
        assert!(matches!(Manifest::parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap(), Manifest::Image(_)));
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(matches!(Manifest::parse(None, idx.as_bytes()).unwrap(), Manifest::Index(_)));
    }

    #[test]
    fn refuses_schema1_and_unknown() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = Manifest::parse(Some(DOCKER_SCHEMA1_SIGNED), s1).unwrap_err();
        assert!(e.to_string().contains("schema1"), "{e}");
        let e = Manifest::parse(Some("text/html"), br#"{"schemaVersion":2}"#).unwrap_err();
        assert!(matches!(e, ManifestError::UnsupportedMediaType(_)));
        assert!(Manifest::parse(None, b"<html>").is_err());
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(layer_compression(OCI_LAYER_ZSTD).unwrap(), LayerCompression::Zstd);
        assert_eq!(layer_compression(DOCKER_LAYER_GZIP).unwrap(), LayerCompression::Gzip);
        assert_eq!(layer_compression(OCI_LAYER_TAR).unwrap(), LayerCompression::None);
        assert!(layer_compression("application/vnd.in-toto+json").is_err());
    }
}
