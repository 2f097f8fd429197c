//! Loading `rkubelet run` manifests: multi-document YAML holding Pods and the ConfigMaps and Secrets
//! they use. Each document is decoded strictly; errors name the document, the object and the field.

use crate::api::strict::{DecodeError, decode_strict};
use crate::api::{defaults, validation};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde::Deserialize;
use serde_json::Value;

/// The objects of one manifest file.
#[derive(Debug, Default)]
pub struct Manifest {
    pub pods: Vec<Pod>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    /// ServiceAccount tokens a joined node requested for projected volumes (never in files:
    /// `rkubelet run` pods have no ServiceAccount).
    pub service_account_tokens: Vec<TokenRequest>,
}

/// Why a manifest was refused. `doc` counts from 1, as editors show YAML documents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("document {doc}: invalid YAML: {message}")]
    Yaml { doc: usize, message: String },
    #[error("document {doc}: {what}")]
    Unsupported { doc: usize, what: String },
    #[error("document {doc} ({kind} {name:?}): {error}")]
    Decode { doc: usize, kind: String, name: String, error: DecodeError },
    #[error("document {doc} ({kind} {name:?}): {message}")]
    Invalid { doc: usize, kind: String, name: String, message: String },
    #[error("no Pod in the manifest")]
    NoPod,
}

/// Parses every document of `text`; empty documents are skipped.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let mut docs: Vec<(usize, Value)> = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value =
            Value::deserialize(document).map_err(|e| ManifestError::Yaml { doc, message: e.to_string() })?;
        if !value.is_null() {
            docs.push((doc, value));
        }
    }
    collect(docs, false)
}

/// The objects a node fetched from the API server for one of its pods, checked exactly like a
/// manifest file (`rkubelet run`): validation, the node's field table, defaults.
pub fn from_objects(objects: impl IntoIterator<Item = Value>) -> Result<Manifest, ManifestError> {
    collect(objects.into_iter().enumerate().map(|(i, v)| (i + 1, v)), true)
}

fn collect(
    docs: impl IntoIterator<Item = (usize, Value)>,
    from_api: bool,
) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    for (doc, value) in docs {
        let is_token = value.get("kind").and_then(Value::as_str) == Some("TokenRequest")
            && value.get("apiVersion").and_then(Value::as_str) == Some("authentication.k8s.io/v1");
        if from_api && is_token {
            let name =
                value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let token = serde_json::from_value(value).map_err(|e| ManifestError::Invalid {
                doc,
                kind: "TokenRequest".into(),
                name,
                message: e.to_string(),
            })?;
            manifest.service_account_tokens.push(token);
            continue;
        }
        add(&mut manifest, doc, value)?;
    }
    if manifest.pods.is_empty() {
        return Err(ManifestError::NoPod);
    }
    Ok(manifest)
}

/// Checks and decodes document `doc` into `manifest`.
fn add(manifest: &mut Manifest, doc: usize, mut value: Value) -> Result<(), ManifestError> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let decode_err = |error| ManifestError::Decode { doc, kind: kind.clone(), name: name.clone(), error };
    if api_version == "v1" && matches!(kind.as_str(), "Pod" | "ConfigMap" | "Secret") {
        check(&kind, &mut value).map_err(|message| ManifestError::Invalid {
            doc,
            kind: kind.clone(),
            name: name.clone(),
            message,
        })?;
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => manifest.pods.push(decode_strict(&value).map_err(decode_err)?),
        ("v1", "ConfigMap") => manifest.config_maps.push(decode_strict(&value).map_err(decode_err)?),
        ("v1", "Secret") => manifest.secrets.push(decode_strict(&value).map_err(decode_err)?),
        ("", _) | (_, "") => {
            return Err(ManifestError::Unsupported { doc, what: "apiVersion and kind are required".into() });
        }
        _ => {
            return Err(ManifestError::Unsupported {
                doc,
                what: format!(
                    "{kind} ({api_version}) is not supported here: only v1 Pod, ConfigMap and Secret"
                ),
            });
        }
    }
    Ok(())
}

/// Validates `value` as the API server would and applies its defaults; the first failure wins,
/// so the user sees one line.
fn check(kind: &str, value: &mut Value) -> Result<(), String> {
    let errors = [validation::metadata(kind, value), validation::spec(kind, value)].concat();
    if let Some(first) = errors.first() {
        return Err(first.message.clone());
    }
    if kind == "Pod" {
        super::fields::check_pod(value)?;
    }
    defaults::apply(kind, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: projectid}
data: {project.id: hello-docker}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: nginx
    image: nginx:1.10
    env:
    - {name: PROJECT_ID, valueFrom: {configMapKeyRef: {name: projectid, key: project.id}}}
"#;

    #[test]
    fn loads_pods_and_config() {
        let m = parse(POD).unwrap();
        assert_eq!(m.pods.len(), 1);
        let spec = m.pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "defaults applied");
        assert_eq!(m.config_maps[0].metadata.name.as_deref(), Some("projectid"));
    }

    #[test]
    fn errors_name_document_object_and_field() {
        let bad = POD.replace("image: nginx:1.10", "image: nginx:1.10\n    imagePullPolicyy: Always");
        assert_eq!(
            parse(&bad).unwrap_err().to_string(),
            r#"document 2 (Pod "web"): unknown field "spec.containers[0].imagePullPolicyy""#
        );
        let wrong_type = POD.replace("containers:", "containers: 3\n  initContainers:");
        assert!(
            parse(&wrong_type)
                .unwrap_err()
                .to_string()
                .starts_with(r#"document 2 (Pod "web"): spec.containers: "#)
        );
        assert_eq!(
            parse("apiVersion: apps/v1\nkind: Deployment\n").unwrap_err().to_string(),
            "document 1: Deployment (apps/v1) is not supported here: only v1 Pod, ConfigMap and Secret"
        );
        assert_eq!(parse("---\n").unwrap_err(), ManifestError::NoPod);
        assert_eq!(
            parse(&POD.replace("name: web", "name: Web_1")).unwrap_err().to_string(),
            r#"document 2 (Pod "Web_1"): metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
        );
        let no_image = POD.replace("    image: nginx:1.10\n", "");
        assert!(
            parse(&no_image).unwrap_err().to_string().contains("spec.containers[0].image: Required value")
        );
        assert!(matches!(parse("a: [").unwrap_err(), ManifestError::Yaml { doc: 1, .. }));
    }
}

#[cfg(test)]
mod demo_tests {
    #[test]
    fn demo_pod_manifest_loads() {
        let m = super::parse(include_str!("../../hack/demo/pod.yaml")).unwrap();
        assert_eq!(m.pods[0].spec.as_ref().unwrap().containers.len(), 2);
        assert_eq!((m.config_maps.len(), m.secrets.len()), (1, 1));
    }
}
