//! A container's environment as the kubelet builds it: `envFrom` sources first (in order), then
//! `env` entries, each value `$(VAR)`-expanded against the variables defined before it; `valueFrom`
//! resolved from ConfigMaps, Secrets and the pod's own fields.

use super::expand::expand;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, EnvVarSource, ObjectFieldSelector, Secret};
use std::collections::{BTreeMap, HashMap};

/// Facts about the running pod that `fieldRef` can select.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub service_account: String,
    pub host_ip: String,
    pub pod_ip: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The ConfigMaps and Secrets visible to the pod, by name.
#[derive(Debug, Default)]
pub struct EnvSources<'a> {
    pub config_maps: HashMap<&'a str, &'a ConfigMap>,
    pub secrets: HashMap<&'a str, &'a Secret>,
}

/// Why an environment could not be built; `at` names the field, e.g. `env[1] (SECRET_ID)`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("container {container}: {at}: {kind} {name:?} not found")]
    SourceMissing { container: String, at: String, kind: &'static str, name: String },
    #[error("container {container}: {at}: key {key:?} not found in {kind} {name:?}")]
    KeyMissing { container: String, at: String, kind: &'static str, name: String, key: String },
    #[error("container {container}: {at}: {what}")]
    Unsupported { container: String, at: String, what: String },
}

/// Builds the environment of `container`, in definition order (later duplicates replace earlier).
pub fn container_env(
    container: &Container,
    facts: &PodFacts,
    sources: &EnvSources<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = OrderedEnv::default();
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let at = format!("envFrom[{i}]");
        if let Some(cm_ref) = &from.config_map_ref {
            match sources.config_maps.get(cm_ref.name.as_str()) {
                Some(cm) => {
                    for (k, v) in config_map_entries(cm) {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if cm_ref.optional == Some(true) => {}
                None => return Err(missing(container, &at, "configmap", &cm_ref.name)),
            }
        }
        if let Some(secret_ref) = &from.secret_ref {
            match sources.secrets.get(secret_ref.name.as_str()) {
                Some(secret) => {
                    for (k, v) in secret_entries(secret) {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if secret_ref.optional == Some(true) => {}
                None => return Err(missing(container, &at, "secret", &secret_ref.name)),
            }
        }
    }
    for (i, var) in container.env.iter().flatten().enumerate() {
        let at = format!("env[{i}] ({})", var.name);
        if let Some(value) = resolve_var(container, &at, var, facts, sources, &env)? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.into_vec())
}

/// Expands `$(VAR)` in a command or args list with the container's environment.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    words.iter().map(|w| expand(w, |name| map.get(name).map(|v| v.to_string()))).collect()
}

fn resolve_var(
    container: &Container,
    at: &str,
    var: &EnvVar,
    facts: &PodFacts,
    sources: &EnvSources<'_>,
    env: &OrderedEnv,
) -> Result<Option<String>, EnvError> {
    let Some(from) = &var.value_from else {
        let raw = var.value.as_deref().unwrap_or("");
        return Ok(Some(expand(raw, |name| env.get(name).map(str::to_string))));
    };
    value_from(container, at, from, facts, sources)
}

fn value_from(
    container: &Container,
    at: &str,
    from: &EnvVarSource,
    facts: &PodFacts,
    sources: &EnvSources<'_>,
) -> Result<Option<String>, EnvError> {
    if let Some(sel) = &from.config_map_key_ref {
        let optional = sel.optional == Some(true);
        let Some(cm) = sources.config_maps.get(sel.name.as_str()) else {
            return if optional { Ok(None) } else { Err(missing(container, at, "configmap", &sel.name)) };
        };
        return match config_map_entries(cm).find(|(k, _)| *k == sel.key) {
            Some((_, v)) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(key_missing(container, at, "configmap", &sel.name, &sel.key)),
        };
    }
    if let Some(sel) = &from.secret_key_ref {
        let optional = sel.optional == Some(true);
        let Some(secret) = sources.secrets.get(sel.name.as_str()) else {
            return if optional { Ok(None) } else { Err(missing(container, at, "secret", &sel.name)) };
        };
        return match secret_entries(secret).find(|(k, _)| *k == sel.key) {
            Some((_, v)) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(key_missing(container, at, "secret", &sel.name, &sel.key)),
        };
    }
    if let Some(sel) = &from.field_ref {
        return field_value(sel, facts).map(Some).ok_or_else(|| {
            unsupported(container, at, format!("fieldRef {:?} is not supported", sel.field_path))
        });
    }
    Err(unsupported(container, at, "valueFrom has no supported source".into()))
}

/// The value `fieldRef` selects, for the paths the kubelet supports in env.
fn field_value(sel: &ObjectFieldSelector, facts: &PodFacts) -> Option<String> {
    let path = sel.field_path.as_str();
    let subscript =
        |prefix: &str| path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']").map(str::to_string);
    Some(match path {
        "metadata.name" => facts.name.clone(),
        "metadata.namespace" => facts.namespace.clone(),
        "metadata.uid" => facts.uid.clone(),
        "spec.nodeName" => facts.node_name.clone(),
        "spec.serviceAccountName" => facts.service_account.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                facts.labels.get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                facts.annotations.get(&key).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

fn config_map_entries(cm: &ConfigMap) -> impl Iterator<Item = (&str, String)> {
    let text = cm.data.iter().flatten().map(|(k, v)| (k.as_str(), v.clone()));
    let binary = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(&v.0).into_owned()));
    text.chain(binary)
}

/// A Secret's entries; `stringData` (write-only in the API, honoured in local manifests) wins over `data`.
fn secret_entries(secret: &Secret) -> impl Iterator<Item = (&str, String)> {
    let strings = secret.string_data.iter().flatten().map(|(k, v)| (k.as_str(), v.clone()));
    let data = secret
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| !secret.string_data.as_ref().is_some_and(|s| s.contains_key(*k)))
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(&v.0).into_owned()));
    strings.chain(data)
}

fn missing(container: &Container, at: &str, kind: &'static str, name: &str) -> EnvError {
    EnvError::SourceMissing { container: container.name.clone(), at: at.into(), kind, name: name.into() }
}

fn key_missing(container: &Container, at: &str, kind: &'static str, name: &str, key: &str) -> EnvError {
    EnvError::KeyMissing {
        container: container.name.clone(),
        at: at.into(),
        kind,
        name: name.into(),
        key: key.into(),
    }
}

fn unsupported(container: &Container, at: &str, what: String) -> EnvError {
    EnvError::Unsupported { container: container.name.clone(), at: at.into(), what }
}

/// Name → value, keeping first-definition order like the kubelet's env list.
#[derive(Default)]
struct OrderedEnv {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        if self.values.insert(name.clone(), value).is_none() {
            self.order.push(name);
        }
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order.into_iter().map(|k| (k.clone(), self.values.remove(&k).unwrap_or_default())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn seed_deployment_env_from_configmap_and_secret() {
        let cm: ConfigMap = parse("metadata: {name: projectid}\ndata: {project.id: hello-docker}");
        let secret: Secret =
            parse("metadata: {name: apikey}\ntype: Opaque\ndata: {id: YXNh, key: YUJjRDEyMw==}");
        let container: Container = parse(
            r#"
name: webserver-container
env:
- {name: PROJECT_ID, valueFrom: {configMapKeyRef: {name: projectid, key: project.id}}}
- {name: SECRET_ID, valueFrom: {secretKeyRef: {name: apikey, key: id}}}
- {name: SECRET_KEY, valueFrom: {secretKeyRef: {name: apikey, key: key}}}
- {name: GREETING, value: "project $(PROJECT_ID) on $(NODE) $$(PROJECT_ID)"}
- {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
"#,
        );
        let mut sources = EnvSources::default();
        sources.config_maps.insert("projectid", &cm);
        sources.secrets.insert("apikey", &secret);
        let facts = PodFacts { name: "web-1".into(), ..Default::default() };
        let env = container_env(&container, &facts, &sources).unwrap();
        assert_eq!(
            env,
            [
                ("PROJECT_ID".to_string(), "hello-docker".to_string()),
                ("SECRET_ID".into(), "asa".into()),
                ("SECRET_KEY".into(), "aBcD123".into()),
                ("GREETING".into(), "project hello-docker on $(NODE) $(PROJECT_ID)".into()),
                ("POD".into(), "web-1".into()),
            ]
        );
        assert_eq!(expand_all(&["echo $(SECRET_ID)".into()], &env), ["echo asa"]);
    }

    #[test]
    fn env_from_with_prefix_is_overridden_by_env() {
        let cm: ConfigMap = parse("metadata: {name: c}\ndata: {A: '1', B: '2'}");
        let container: Container = parse(
            "name: x\nenvFrom: [{prefix: P_, configMapRef: {name: c}}]\nenv: [{name: P_A, value: own}]",
        );
        let mut sources = EnvSources::default();
        sources.config_maps.insert("c", &cm);
        let env = container_env(&container, &PodFacts::default(), &sources).unwrap();
        assert_eq!(env, [("P_A".to_string(), "own".to_string()), ("P_B".into(), "2".into())]);
    }

    #[test]
    fn missing_sources_name_the_field() {
        let container: Container = parse(
            "name: web\nenv: [{name: A, value: x}, {name: K, valueFrom: {configMapKeyRef: {name: cfg, key: k}}}]",
        );
        let err = container_env(&container, &PodFacts::default(), &EnvSources::default()).unwrap_err();
        assert_eq!(err.to_string(), r#"container web: env[1] (K): configmap "cfg" not found"#);

        let cm: ConfigMap = parse("metadata: {name: cfg}\ndata: {other: v}");
        let mut sources = EnvSources::default();
        sources.config_maps.insert("cfg", &cm);
        let err = container_env(&container, &PodFacts::default(), &sources).unwrap_err();
        assert_eq!(err.to_string(), r#"container web: env[1] (K): key "k" not found in configmap "cfg""#);

        let optional: Container = parse(
            "name: web\nenv: [{name: K, valueFrom: {secretKeyRef: {name: s, key: k, optional: true}}}]",
        );
        assert_eq!(container_env(&optional, &PodFacts::default(), &sources).unwrap(), []);
    }

    #[test]
    fn field_refs() {
        let facts = PodFacts {
            pod_ip: "10.244.0.5".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let container: Container = parse(
            r#"
name: c
env:
- {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
- {name: BAD, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}
"#,
        );
        let err = container_env(&container, &facts, &EnvSources::default()).unwrap_err();
        assert!(err.to_string().contains("env[2] (BAD): fieldRef \"spec.bogus\""), "{err}");
    }
}
