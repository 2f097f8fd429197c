//! Fields of the OCI runtime spec this runtime does not implement: each one set in a spec is
//! refused with its path, so nothing in a spec is ever silently ignored. Pure: the host facts
//! it depends on (which LSMs are enabled) are passed in.

use oci_spec::runtime::Spec;

/// What the host offers that some fields depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostFeatures {
    /// AppArmor is enabled (`/sys/module/apparmor/parameters/enabled` is `Y`).
    pub apparmor: bool,
    /// SELinux is enabled (selinuxfs is mounted).
    pub selinux: bool,
}

impl HostFeatures {
    /// Reads the host's kernel interfaces (only called when a spec names an LSM field).
    pub fn detect() -> Self {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim().starts_with('Y'));
        let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
        HostFeatures { apparmor, selinux }
    }
}

/// The first field of `spec` that is set but not implemented: `(path, reason)`.
pub fn first_unsupported(spec: &Spec, host: impl FnOnce() -> HostFeatures) -> Option<(String, String)> {
    let mut found: Vec<(&str, &str)> = Vec::new();
    let not_supported = "is not supported by this runtime";
    if let Some(p) = spec.process() {
        if p.command_line().is_some() {
            found.push(("process.commandLine", "is for Windows only"));
        }
        if p.user().username().is_some() {
            found.push(("process.user.username", "is for Windows only"));
        }
    }
    if let Some(l) = spec.linux() {
        let named = [
            (l.intel_rdt().is_some(), "linux.intelRdt"),
            (l.mount_label().as_deref().is_some_and(|s| !s.is_empty()), "linux.mountLabel"),
        ];
        found.extend(named.into_iter().filter(|(set, _)| *set).map(|(_, path)| (path, not_supported)));
        if let Some(s) = l.seccomp()
            && s.flags().as_ref().is_some_and(|f| !f.is_empty())
        {
            found.push(("linux.seccomp.flags", not_supported));
        }
        if let Some(r) = l.resources() {
            let memory = r.memory().as_ref();
            let cpu = r.cpu().as_ref();
            let named = [
                (memory.is_some_and(|m| m.kernel().is_some()), "linux.resources.memory.kernel"),
                (memory.is_some_and(|m| m.kernel_tcp().is_some()), "linux.resources.memory.kernelTCP"),
                (memory.is_some_and(|m| m.use_hierarchy().is_some()), "linux.resources.memory.useHierarchy"),
                (
                    memory.is_some_and(|m| m.check_before_update().is_some()),
                    "linux.resources.memory.checkBeforeUpdate",
                ),
                (cpu.is_some_and(|c| c.burst().is_some()), "linux.resources.cpu.burst"),
                (cpu.is_some_and(|c| c.idle().is_some()), "linux.resources.cpu.idle"),
                (cpu.is_some_and(|c| c.realtime_runtime().is_some()), "linux.resources.cpu.realtimeRuntime"),
                (cpu.is_some_and(|c| c.realtime_period().is_some()), "linux.resources.cpu.realtimePeriod"),
                (r.network().is_some(), "linux.resources.network"),
                (r.rdma().as_ref().is_some_and(|m| !m.is_empty()), "linux.resources.rdma"),
                (r.unified().as_ref().is_some_and(|m| !m.is_empty()), "linux.resources.unified"),
            ];
            found.extend(named.into_iter().filter(|(set, _)| *set).map(|(_, path)| (path, not_supported)));
        }
    }
    if let Some((path, reason)) = found.first() {
        return Some((path.to_string(), reason.to_string()));
    }
    // The LSM fields depend on the host: only look at it when one is set.
    let apparmor =
        spec.process().as_ref().and_then(|p| p.apparmor_profile().clone()).filter(|s| !s.is_empty());
    let selinux = spec.process().as_ref().and_then(|p| p.selinux_label().clone()).filter(|s| !s.is_empty());
    if apparmor.is_some() || selinux.is_some() {
        let host = host();
        if apparmor.is_some() && !host.apparmor {
            return Some(("process.apparmorProfile".into(), "AppArmor is not enabled on this host".into()));
        }
        if selinux.is_some() && !host.selinux {
            return Some(("process.selinuxLabel".into(), "SELinux is not enabled on this host".into()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Spec {
        let mut value = serde_json::to_value(Spec::default()).unwrap();
        merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    #[test]
    fn the_default_spec_has_nothing_unsupported() {
        assert_eq!(first_unsupported(&Spec::default(), || panic!("host not needed")), None);
    }

    #[test]
    fn names_the_first_unsupported_field() {
        let none = HostFeatures::default;
        let cases = [
            (serde_json::json!({"linux": {"intelRdt": {"closID": "x"}}}), "linux.intelRdt"),
            (
                serde_json::json!({"linux": {"resources": {"memory": {"kernel": 1}}}}),
                "linux.resources.memory.kernel",
            ),
            (
                serde_json::json!({"linux": {"resources": {"cpu": {"realtimeRuntime": 5}}}}),
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                serde_json::json!({"linux": {"resources": {"unified": {"io.max": "x"}}}}),
                "linux.resources.unified",
            ),
            (
                serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}}}),
                "linux.seccomp.flags",
            ),
            (
                serde_json::json!({"process": {"apparmorProfile": "docker-default"}}),
                "process.apparmorProfile",
            ),
            (
                serde_json::json!({"process": {"selinuxLabel": "system_u:system_r:container_t:s0"}}),
                "process.selinuxLabel",
            ),
        ];
        for (extra, path) in cases {
            let (found, _) = first_unsupported(&spec(extra), none).expect(path);
            assert_eq!(found, path);
        }
        let enabled = || HostFeatures { apparmor: true, selinux: true };
        let lsm = spec(serde_json::json!({"process": {"apparmorProfile": "p", "selinuxLabel": "l"}}));
        assert_eq!(first_unsupported(&lsm, enabled), None);
    }
}
