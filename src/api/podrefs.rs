//! Which ConfigMaps and Secrets a Pod references: volumes (projected sources included), env
//! `valueFrom`, `envFrom` and `imagePullSecrets`. A node fetches exactly these for its pods, and
//! the node authorizer lets a node read exactly these.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

/// Names referenced by a pod, each with whether every reference to it is optional.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeMap<String, bool>,
    pub secrets: BTreeMap<String, bool>,
}

fn note(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
    if name.is_empty() {
        return;
    }
    let optional = optional.unwrap_or(false);
    map.entry(name.to_string()).and_modify(|o| *o &= optional).or_insert(optional);
}

/// Every ConfigMap and Secret `pod` references.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let Some(spec) = pod.spec.as_ref() else { return r };
    for s in spec.image_pull_secrets.iter().flatten() {
        note(&mut r.secrets, &s.name, None);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            note(&mut r.config_maps, &cm.name, cm.optional);
        }
        if let Some(s) = &v.secret {
            note(&mut r.secrets, s.secret_name.as_deref().unwrap_or_default(), s.optional);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                note(&mut r.config_maps, &cm.name, cm.optional);
            }
            if let Some(s) = &source.secret {
                note(&mut r.secrets, &s.name, s.optional);
            }
        }
    }
    let containers = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    for c in containers {
        container_refs(&mut r, c);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        ephemeral_refs(&mut r, c);
    }
    r
}

fn container_refs(r: &mut References, c: &Container) {
    env_refs(r, c.env.as_deref(), c.env_from.as_deref());
}

fn ephemeral_refs(r: &mut References, c: &EphemeralContainer) {
    env_refs(r, c.env.as_deref(), c.env_from.as_deref());
}

fn env_refs(
    r: &mut References,
    env: Option<&[k8s_openapi::api::core::v1::EnvVar]>,
    env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
) {
    for e in env.into_iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(k) = &from.config_map_key_ref {
            note(&mut r.config_maps, &k.name, k.optional);
        }
        if let Some(k) = &from.secret_key_ref {
            note(&mut r.secrets, &k.name, k.optional);
        }
    }
    for e in env_from.into_iter().flatten() {
        if let Some(cm) = &e.config_map_ref {
            note(&mut r.config_maps, &cm.name, cm.optional);
        }
        if let Some(s) = &e.secret_ref {
            note(&mut r.secrets, &s.name, s.optional);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_kind_of_reference() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "secret": {"secretName": "s-vol", "optional": true}},
                    {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k", "optional": true}}},
                    {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-vol", "key": "k"}}},
                    {"name": "Z", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]}]
            }
        }))
        .unwrap();
        let r = references(&pod);
        let names = |m: &BTreeMap<String, bool>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&r.config_maps), ["cm-env", "cm-proj", "cm-vol"]);
        assert_eq!(names(&r.secrets), ["pull", "s-init", "s-proj", "s-vol"]);
        assert!(r.config_maps["cm-env"], "only optional references");
        assert!(!r.secrets["s-vol"], "one required reference makes it required");
    }
}
