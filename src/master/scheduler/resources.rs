//! Resource quantities and pod requests in the scheduler's integer units (millicores, bytes, counts).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::quantity;

/// CPU a container without a CPU request counts as when scoring ("non-zero requests"), in millicores.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring, in bytes (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;
/// Pods a node accepts when its allocatable does not say.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// A set of resource amounts: cpu in millicores, memory and ephemeral storage in bytes, others as integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (e.g. `example.com/gpu`), by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Add another set of amounts.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtract another set of amounts.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Component-wise maximum.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Read a `ResourceList` (e.g. node allocatable or container requests).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        // Unparsable amounts are skipped (admission rejects them; node status is trusted as is).
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::cpu_millis(&q.0).unwrap_or(r.milli_cpu),
                "memory" => r.memory = quantity::bytes(&q.0).unwrap_or(r.memory),
                "ephemeral-storage" => {
                    r.ephemeral_storage = quantity::bytes(&q.0).unwrap_or(r.ephemeral_storage)
                }
                "pods" => {}
                other => {
                    if let Ok(n) = quantity::units(&q.0) {
                        r.scalar.insert(other.to_string(), n);
                    }
                }
            }
        }
        r
    }
}

/// A container's requests, with limits standing in for missing requests (API defaulting).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else { return Resources::default() };
    let mut list = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        list.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Resources::from_list(&list)
}

/// What a pod asks of a node: max(Σ containers, max init container) + overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::default() };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    for c in spec.init_containers.iter().flatten() {
        sum.max_with(&container_requests(c));
    }
    if let Some(overhead) = &spec.overhead {
        sum.add(&Resources::from_list(overhead));
    }
    sum
}

/// (cpu millicores, memory bytes) for scoring, where containers without requests count as 100m / 200Mi.
pub fn pod_nonzero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = &pod.spec else { return (0, 0) };
    let mut cpu = 0;
    let mut mem = 0;
    for c in &spec.containers {
        let r = container_requests(c);
        let has = |name: &str| {
            c.resources.as_ref().is_some_and(|res| {
                res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                    || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
            })
        };
        cpu += if has("cpu") { r.milli_cpu } else { DEFAULT_MILLI_CPU_REQUEST };
        mem += if has("memory") { r.memory } else { DEFAULT_MEMORY_REQUEST };
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |kv: &[(&str, &str)]| {
            (!kv.is_empty())
                .then(|| kv.iter().map(|(k, v)| (k.to_string(), q(v))).collect::<BTreeMap<_, _>>())
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_take_max_of_init_and_sum_and_limits_as_default() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    container(&[("cpu", "250m")], &[("memory", "64Mi")]),
                    container(&[("cpu", "250m")], &[]),
                ],
                init_containers: Some(vec![container(&[("cpu", "1")], &[])]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 64 * 1024 * 1024);
        assert_eq!(pod_nonzero_requests(&pod), (500, 64 * 1024 * 1024 + DEFAULT_MEMORY_REQUEST));
    }
}
