//! Container `resources` → cgroup settings, with the kubelet's conversions (cpu shares from
//! requests, CFS quota from limits, memory limit in bytes). Pure.

use crate::api::quantity;
use k8s_openapi::api::core::v1::ResourceRequirements;

/// The CFS period the kubelet uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MIN_QUOTA_US: u64 = 1_000;

/// cgroup settings for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    /// cgroup v1 `cpu.shares` (v2 weight: [`CgroupLimits::cpu_weight`]).
    pub cpu_shares: u64,
    /// CFS quota per [`CPU_PERIOD_US`], when a cpu limit is set.
    pub cpu_quota_us: Option<u64>,
    /// Memory limit in bytes, when set.
    pub memory_bytes: Option<u64>,
}

impl CgroupLimits {
    /// cgroup v2 `cpu.weight` for these shares (the kubelet's conversion).
    pub fn cpu_weight(&self) -> u64 {
        1 + ((self.cpu_shares.clamp(MIN_SHARES, MAX_SHARES) - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
    }
}

/// Why `resources` could not be converted; `field` like `resources.limits.memory`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ResourceError {
    pub field: String,
    pub message: String,
}

/// Converts a container's `resources`. A cpu request defaults to the cpu limit, as the API server does.
pub fn cgroup_limits(resources: Option<&ResourceRequirements>) -> Result<CgroupLimits, ResourceError> {
    let get = |map: &str, name: &str| -> Option<String> {
        let list = match map {
            "requests" => resources?.requests.as_ref(),
            _ => resources?.limits.as_ref(),
        }?;
        list.get(name).map(|q| q.0.clone())
    };
    let parse = |map: &str, name: &str, f: fn(&str) -> Result<i64, quantity::QuantityError>| {
        get(map, name)
            .map(|q| {
                let value = f(&q).map_err(|e| ResourceError {
                    field: format!("resources.{map}.{name}"),
                    message: e.to_string(),
                })?;
                u64::try_from(value).map_err(|_| ResourceError {
                    field: format!("resources.{map}.{name}"),
                    message: format!("must be non-negative, got {q:?}"),
                })
            })
            .transpose()
    };
    let cpu_limit = parse("limits", "cpu", quantity::cpu_millis)?;
    let cpu_request = parse("requests", "cpu", quantity::cpu_millis)?.or(cpu_limit);
    let memory = parse("limits", "memory", quantity::bytes)?;
    parse("requests", "memory", quantity::bytes)?;
    Ok(CgroupLimits {
        cpu_shares: cpu_request.map_or(MIN_SHARES, |m| (m * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)),
        cpu_quota_us: cpu_limit.map(|m| (m * CPU_PERIOD_US / 1000).max(MIN_QUOTA_US)),
        memory_bytes: memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> ResourceRequirements {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn converts_like_the_kubelet() {
        assert_eq!(cgroup_limits(None).unwrap(), CgroupLimits { cpu_shares: 2, ..Default::default() });
        let r = resources("{requests: {cpu: 250m, memory: 64Mi}, limits: {cpu: '1', memory: 128Mi}}");
        assert_eq!(
            cgroup_limits(Some(&r)).unwrap(),
            CgroupLimits { cpu_shares: 256, cpu_quota_us: Some(100_000), memory_bytes: Some(128 << 20) }
        );
        let limit_only = resources("{limits: {cpu: 500m}}");
        let l = cgroup_limits(Some(&limit_only)).unwrap();
        assert_eq!((l.cpu_shares, l.cpu_quota_us), (512, Some(50_000)));
        assert_eq!(CgroupLimits { cpu_shares: 2, ..Default::default() }.cpu_weight(), 1);
        assert_eq!(CgroupLimits { cpu_shares: 1024, ..Default::default() }.cpu_weight(), 39);
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let r = resources("{limits: {memory: lots}}");
        assert!(cgroup_limits(Some(&r)).unwrap_err().to_string().starts_with("resources.limits.memory: "));
        let r = resources("{requests: {cpu: '-1'}}");
        assert!(cgroup_limits(Some(&r)).unwrap_err().to_string().contains("non-negative"));
    }
}
