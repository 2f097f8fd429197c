//! Deployment helpers: pod-template-hash, template equality ignoring the hash, annotations, fenceposts.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::master::client::memory::SAFE_ALPHABET;

/// Label on ReplicaSets and pods naming the template hash.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Deployment annotations never copied onto ReplicaSets.
pub const ANNOTATIONS_TO_SKIP: &[&str] = &[
    LAST_APPLIED,
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Drop nulls, empty objects and empty arrays recursively (`creationTimestamp: null`, `resources: {}`).
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(map) => {
            map.retain(|_, child| prune(child));
            !map.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            !items.is_empty()
        }
        _ => true,
    }
}

/// Canonical JSON of a template with the hash label removed and empty values pruned (sorted keys).
pub fn canonical_template(template: &PodTemplateSpec) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
    prune(&mut v);
    v
}

/// Templates equal ignoring `pod-template-hash` and empty-vs-missing fields (`EqualIgnoreHash`).
pub fn templates_equal(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// FNV-32a.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// `rand.SafeEncodeString`: each character of the decimal string mapped into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// The pod-template-hash: FNV-32a over the canonical template (+ collisionCount), safe-encoded.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&canonical_template(template)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// A ReplicaSet's revision annotation (0 if missing).
pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// Deployment annotations a ReplicaSet inherits.
pub fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !ANNOTATIONS_TO_SKIP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool, default_percent: i32) -> i32 {
    match value {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let percent: i32 = s.trim_end_matches('%').parse().unwrap_or(default_percent);
            let exact = f64::from(total) * f64::from(percent) / 100.0;
            (if round_up { exact.ceil() } else { exact.floor() }) as i32
        }
        None => {
            let exact = f64::from(total) * f64::from(default_percent) / 100.0;
            (if round_up { exact.ceil() } else { exact.floor() }) as i32
        }
    }
}

/// Desired replicas of a Deployment (default 1).
pub fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// Whether the strategy is Recreate.
pub fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down; both 0 → unavailable 1).
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    if is_recreate(d) {
        return (0, desired_replicas(d));
    }
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let replicas = desired_replicas(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, 25);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false, 25);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// Test fixture: an `app=nginx` pod template with one `nginx` container running `image`.
#[cfg(test)]
pub(crate) fn nginx_template(image: &str) -> PodTemplateSpec {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), "nginx".to_string())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "nginx".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::nginx_template as template;
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn hash_is_stable_safe_and_ignores_hash_label_and_empty_fields() {
        let a = template("nginx:1.10");
        let h = compute_hash(&a, None);
        assert_eq!(h, compute_hash(&a, None));
        assert!(h.len() >= 6 && h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_ne!(h, compute_hash(&template("nginx:1.11"), None));
        assert_ne!(h, compute_hash(&a, Some(1)));
        let mut with_hash = a.clone();
        with_hash
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), h.clone());
        with_hash.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements::default());
        assert!(templates_equal(&a, &with_hash));
        assert_eq!(compute_hash(&with_hash, None), h);
        assert!(!templates_equal(&a, &template("nginx:1.11")));
    }

    #[test]
    fn fnv_and_encoding_match_known_values() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    fn deployment(replicas: i32, surge: Option<IntOrString>, unavailable: Option<IntOrString>) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: surge,
                        max_unavailable: unavailable,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_follow_the_reference_table() {
        for (replicas, want) in [(1, (1, 0)), (3, (1, 0)), (4, (1, 1)), (10, (3, 2))] {
            assert_eq!(resolve_fenceposts(&deployment(replicas, None, None)), want, "replicas {replicas}");
        }
        let zero = deployment(3, Some(IntOrString::Int(0)), Some(IntOrString::String("0%".into())));
        assert_eq!(resolve_fenceposts(&zero), (0, 1));
    }
}
